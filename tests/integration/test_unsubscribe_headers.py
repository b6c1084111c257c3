"""One-click unsubscribe (``List-Unsubscribe``, ``List-Unsubscribe-Post``) from POST /emails to
the SMTP server.

The API (in-process, real PostgreSQL and Redis) accepts the forms of RFC 2369 + RFC 8058 that
Gmail and Yahoo ask bulk senders for and refuses the rest with a 400 naming the header (in a
batch: an error for that item).  The record the API queued (the outbox row's payload, the bytes
the relay publishes) is handed to the real sendmail task (Redis credentials and delivery marks,
Kafka producer, the SMTP pool) and delivered to aiosmtpd: the headers arrive unchanged, folded
between URIs, never as RFC 2047 encoded words.  The worker's own refusal of a bad record is in
``test_sendmail_untrusted.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from etrans.adapters.sql.usend import EmailOutbox
from tests.harness.address_fields import field_value, header_block
from tests.harness.smtp import SmtpTestServer
from tests.integration.sending_api import SendingApi, email
from tests.integration.sendmail_support import CredentialFixture
from tests.integration.test_api_emails import api
from tests.integration.test_sendmail import Worker, credentials, make_worker

FIXTURES = (api, credentials, make_worker)  # shared with test_api_emails and test_sendmail

OUTBOX = EmailOutbox.__table__
ONE_CLICK = "List-Unsubscribe=One-Click"
LONG_HTTPS = ("<https://news.example.com/unsubscribe/"
              "eyJ1IjoiNDIiLCJsIjoid2Vla2x5IiwidCI6IjE3MzM0NDQ0NDQifQ?list=weekly&sig=9f86d081>")
MAILTO = "<mailto:unsubscribe@news.example.com?subject=unsubscribe>"


def _payload(api: SendingApi, message_id: str) -> bytes:
    with api.usend.engine.connect() as conn:
        row = conn.execute(select(OUTBOX).where(OUTBOX.c.message_id == message_id)).one()
    return bytes(row.payload)


async def test_accepted_headers_reach_the_smtp_server_unchanged_and_folded(
    api: SendingApi, smtp_server: SmtpTestServer, make_worker: Callable[..., Worker],
    credentials: CredentialFixture,
) -> None:
    user, _, domain = api.sender()
    headers = {"list-unsubscribe": f"{LONG_HTTPS},{MAILTO}", "List-Unsubscribe-Post": ONE_CLICK,
               "X-Campaign": "weekly"}
    status, sent = await api.call("POST", "/emails", api.bearer(user),
                                  json=email(domain, headers=headers))
    assert status == 200, sent
    record = _payload(api, sent["id"])
    assert json.loads(record)["payload"]["headers"] == headers  # queued as given

    # The worker logs in with credentials it can decrypt (the test's key) for the API's user.
    credentials.add("unsubscribe-user", "pw", user_id=str(user))
    worker = make_worker(smtp_server)
    await worker.task(worker.message(record))

    [received] = smtp_server.received
    head = header_block(received.data).decode("ascii")
    # Canonical names; folded at the space between the two URIs; no encoded word.
    assert f"\r\nList-Unsubscribe: {LONG_HTTPS},\r\n {MAILTO}\r\n" in head + "\r\n"
    assert f"\r\nList-Unsubscribe-Post: {ONE_CLICK}\r\n" in head + "\r\n"
    assert "=?" not in head
    assert all(len(line) <= 998 for line in head.split("\r\n"))
    assert field_value(header_block(received.data), "List-Unsubscribe") == (
        f"{LONG_HTTPS}, {MAILTO}")
    assert received.parsed()["X-Campaign"] == "weekly"


async def test_accepted_forms(api: SendingApi) -> None:
    user, _, domain = api.sender()
    for headers in (
        {"List-Unsubscribe": "<https://example.com/u/1>"},
        {"List-Unsubscribe": "<mailto:unsub@example.com>"},
        {"LIST-UNSUBSCRIBE": f"{MAILTO}, <https://example.com/u?id=1,2>",
         "list-unsubscribe-post": ONE_CLICK},
    ):
        status, sent = await api.call("POST", "/emails", api.bearer(user),
                                      json=email(domain, headers=headers))
        assert status == 200, (headers, sent)
        assert json.loads(_payload(api, sent["id"]))["payload"]["headers"] == headers


REFUSED = {
    "plain http": ({"List-Unsubscribe": "<http://example.com/u>"}, "List-Unsubscribe"),
    "javascript": ({"list-unsubscribe": "<javascript:alert(1)>"}, "List-Unsubscribe"),
    "data": ({"List-Unsubscribe": "<data:text/html,hi>"}, "List-Unsubscribe"),
    "relative": ({"List-Unsubscribe": "</unsubscribe?u=1>"}, "List-Unsubscribe"),
    "no brackets": ({"List-Unsubscribe": "https://example.com/u"}, "List-Unsubscribe"),
    "bad mailto": ({"List-Unsubscribe": "<mailto:not-an-address>"}, "List-Unsubscribe"),
    "URI too long": ({"List-Unsubscribe": f"<https://example.com/{'a' * 950}>"},
                     "List-Unsubscribe"),
    "one-click without https": ({"List-Unsubscribe": MAILTO, "List-Unsubscribe-Post": ONE_CLICK},
                                "List-Unsubscribe-Post"),
    "one-click alone": ({"List-Unsubscribe-Post": ONE_CLICK}, "List-Unsubscribe-Post"),
    "one-click wrong value": ({"List-Unsubscribe": LONG_HTTPS, "List-Unsubscribe-Post": "yes"},
                              "List-Unsubscribe-Post"),
    "twice": ({"List-Unsubscribe": LONG_HTTPS, "list-unsubscribe": MAILTO},
              "List-Unsubscribe"),
    "line break": ({"List-Unsubscribe": f"{LONG_HTTPS},\r\n {MAILTO}"}, "List-Unsubscribe"),
}


async def test_refused_forms_are_400_naming_the_header(api: SendingApi) -> None:
    user, _, domain = api.sender()
    for name, (headers, named) in REFUSED.items():
        status, answer = await api.call("POST", "/emails", api.bearer(user),
                                        json=email(domain, headers=headers))
        assert status == 400, (name, status, answer)
        detail = answer["detail"]
        if isinstance(detail, str):  # a rule of the email: the message starts with the header
            assert detail.startswith(f"{named} header"), (name, detail)
        else:  # a schema error (a line break): the item's location ends with the header
            assert [item["loc"][-1] for item in detail] == [named], (name, detail)


async def test_batch_refuses_only_the_item_with_a_bad_header(api: SendingApi) -> None:
    user, _, domain = api.sender()
    items = [email(domain, headers={"List-Unsubscribe": LONG_HTTPS,
                                    "List-Unsubscribe-Post": ONE_CLICK}),
             email(domain, headers={"List-Unsubscribe": "<http://example.com/u>"}),
             email(domain, headers={"List-Unsubscribe-Post": ONE_CLICK})]
    status, answer = await api.call("POST", "/emails/batch", api.bearer(user),
                                    json={"emails": items})
    assert status == 200, answer
    assert len(answer["data"]) == 1
    errors: list[dict[str, Any]] = answer["errors"]
    assert [e["index"] for e in errors] == [1, 2]
    assert errors[0]["error"].startswith("List-Unsubscribe header: "), errors
    assert errors[1]["error"].startswith("List-Unsubscribe-Post header "), errors


async def test_the_openapi_document_describes_the_headers(api: SendingApi) -> None:
    status, document = await api.call("GET", "/openapi.json")
    assert status == 200
    request = document["components"]["schemas"]["SendEmailRequest"]
    [described] = [schema for schema in request["properties"]["headers"]["anyOf"]
                   if schema.get("type") == "object"]
    assert "List-Unsubscribe" in described["description"]
    assert ONE_CLICK in described["description"]
