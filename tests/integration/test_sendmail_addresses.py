"""What the API validated is exactly what the SMTP server receives (RCPT TO and the headers).

A property test over tricky display names (commas, semicolons, quotes, parentheses, brackets,
unicode, embedded addresses, address literals): each example is validated by the API's request
schema, turned into the Kafka record by the API's own code (``sendmail_message``, serialised as
``etrans serve`` does), handed to the real sendmail task (Redis credentials and delivery marks,
Kafka producer, the Trio SMTP pool) and delivered to aiosmtpd.  RCPT TO must equal the addresses
the API validated, in order, and the To/Cc/From display names must read back (through the
standard library's RFC 5322 + RFC 2047 readers) as the names the API validated.

Hypothesis runs in a worker thread and calls back into Trio for each example, so the worker and
the SMTP server are set up once for all examples.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etrans.api.emails import SEND_EMAIL
from etrans.api.schema import SchemaError
from etrans.domain.addresses import AddressError, parse_address
from etrans.domain.emails import check_email, sendmail_message
from tests.harness.address_fields import field_value, header_block, read_addresses
from tests.harness.smtp import SmtpTestServer
from tests.integration.sendmail_support import CredentialFixture
from tests.integration.test_sendmail import Worker, credentials, make_worker

FIXTURES = (credentials, make_worker)  # the sendmail task's fixtures, shared with test_sendmail

_FRAGMENTS = st.sampled_from([
    ",", ";", ":", '"', "'", "(", ")", "[", "]", "{", "}", "\\", "@", ".", " ", "  ", "=?",
    "Smith, John", "Doe; Jane", "O'Brien (work)", "[Support]", "a@evil.test",
    "eve@evil.test, mallory@evil.test", "postmaster@[127.0.0.1]", "[IPv6:::1]",
    "=?utf-8?b?ZXZpbA==?=", "Nguyễn Văn Ánh", "日本語", "Zoë", "\u200b", "👍",
])
_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs"),
                              blacklist_characters="<>\u2028\u2029"), max_size=8)
display_names = st.lists(st.one_of(_FRAGMENTS, _TEXT), max_size=6).map("".join)


def quoted(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@st.composite
def address_text(draw: st.DrawFn, email: str) -> str:
    """``email`` as a client might write it: bare, ``name <email>`` or ``"name" <email>``."""
    form = draw(st.sampled_from(["bare", "named", "quoted"]))
    if form == "bare":
        return email
    name = draw(display_names)
    return f"{name} <{email}>" if form == "named" else f"{quoted(name)} <{email}>"


@st.composite
def send_requests(draw: st.DrawFn) -> dict[str, Any]:
    emails = iter(f"r{i}-{uuid.uuid4().hex[:6]}@example.org" for i in range(10))
    to = [draw(address_text(next(emails))) for _ in range(draw(st.integers(1, 3)))]
    cc = [draw(address_text(next(emails))) for _ in range(draw(st.integers(0, 2)))]
    bcc = [draw(address_text(next(emails))) for _ in range(draw(st.integers(0, 2)))]
    return {"from": draw(address_text("sender@example.com")), "to": to, "cc": cc, "bcc": bcc,
            "subject": "addresses", "text": "hello"}


@dataclass
class Tally:
    delivered: int = 0
    refused_by_the_api: int = 0


async def test_rcpt_to_and_display_names_are_what_the_api_validated(
    smtp_server: SmtpTestServer, make_worker: Callable[..., Worker],
    credentials: CredentialFixture,
) -> None:
    worker = make_worker(smtp_server)
    user_id = credentials.add("addr-user", "pw")
    tally = Tally()

    async def deliver(body: dict[str, Any]) -> None:
        try:
            validated = SEND_EMAIL.validate(body)
        except SchemaError:
            # Refused by the API: then the parser refuses one of the addresses too.
            texts = [body["from"], *body["to"], *body["cc"], *body["bcc"]]
            refused = []
            for text in texts:
                try:
                    parse_address(text)
                except AddressError:
                    refused.append(text)
            assert refused, body
            tally.refused_by_the_api += 1
            return
        check_email(validated)
        message_id = f"msg_{uuid.uuid4().hex}@example.com"
        record = sendmail_message(validated, message_id=message_id, user_id=int(user_id))
        value = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
        before = len(smtp_server.received)
        await worker.task(worker.message(value))

        assert len(smtp_server.received) == before + 1, (body, record)
        received = smtp_server.received[-1]
        to, cc, bcc = ([parse_address(t) for t in validated.get(k) or []]
                       for k in ("to", "cc", "bcc"))
        sender = parse_address(validated["from"])
        assert received.mail_from == sender.email
        assert received.rcpt_tos == [a.email for a in (*to, *cc, *bcc)], (body, record)
        head = header_block(received.data)
        assert read_addresses(field_value(head, "From") or "") == [(sender.name or "",
                                                                    sender.email)]
        assert read_addresses(field_value(head, "To") or "") == [(a.name or "", a.email)
                                                                 for a in to], head
        if cc:
            assert read_addresses(field_value(head, "Cc") or "") == [(a.name or "", a.email)
                                                                     for a in cc], head
        assert field_value(head, "Bcc") is None
        assert all(a.email.encode() not in received.data for a in bcc)
        tally.delivered += 1

    @settings(max_examples=50, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(send_requests())
    def each_request(body: dict[str, Any]) -> None:
        trio.from_thread.run(deliver, body)

    await trio.to_thread.run_sync(each_request)
    # The strategy mostly produces addresses the API accepts: the property was really checked.
    assert tally.delivered >= 25, tally


async def test_addresses_that_misled_the_old_worker(
    smtp_server: SmtpTestServer, make_worker: Callable[..., Worker],
    credentials: CredentialFixture,
) -> None:
    """The two cases of the issue: an unquoted comma (was dropped as poison: stuck Queued) and
    an address as display name (was validated as bob, delivered to the display name)."""
    worker = make_worker(smtp_server)
    user_id = credentials.add("addr-user-2", "pw")
    validated = SEND_EMAIL.validate({
        "from": "Acme <news@example.com>",
        "to": ["Smith, John <john@example.org>", "a@evil.test <bob@example.org>"],
        "subject": "s", "text": "t"})
    record = sendmail_message(validated, message_id=f"msg_{uuid.uuid4().hex}@example.com",
                              user_id=int(user_id))
    await worker.task(worker.message(record))
    [received] = smtp_server.received
    assert received.rcpt_tos == ["john@example.org", "bob@example.org"]
    head = header_block(received.data)
    assert read_addresses(field_value(head, "To") or "") == [
        ("Smith, John", "john@example.org"), ("a@evil.test", "bob@example.org")]
    assert b"evil.test>" not in received.data
