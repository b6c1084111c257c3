"""SQL and MongoDB query injection through every filter an ordinary user controls.

The threats of docs/security.md "already handled" rows: user-supplied values reach PostgreSQL only
as bound parameters and MongoDB only as literal values (never as operators, regexes or field
names), so a hostile value matches nothing of another tenant and changes no schema.  Real
PostgreSQL and MongoDB-wire servers, the API wired as ``etrans serve`` wires it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import text

from tests.integration.sending_api import SendingApi, email, open_sending_api

SQL_PAYLOADS = ["x' OR '1'='1", "1; DROP TABLE email_messages; --", "' UNION SELECT * FROM "
                "api_keys --", "%", "_", "\\"]
MONGO_PAYLOADS = ['{"$ne": null}', '{"$gt": ""}', ".*", "^", "$where", "this.sender != ''",
                  '{"$regex": ".*"}']


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db) as built:
        yield built


def _doc(domain: str, message_id: str, minute: int) -> dict[str, Any]:
    return {
        "event": "Sender", "timestamp": datetime(2026, 3, 10, 4, minute, tzinfo=UTC),
        "action": "delivered", "sender": f"hello@{domain}", "recipient": "victim@example.org",
        "response": "250 2.0.0 OK", "from_domain": domain, "message_id": message_id,
        "to_domain": "example.org", "event_id": f"evt-{message_id}-{minute}",
    }


async def test_hostile_filters_match_nothing_of_another_tenant(api: SendingApi) -> None:
    victim, _, victim_domain = api.sender(verified_at=datetime(2026, 3, 1, tzinfo=UTC))
    status, sent = await api.call("POST", "/emails", api.bearer(victim),
                                  json=email(victim_domain))
    assert status == 200, sent
    api.mongo.collection.insert_many([_doc(victim_domain, sent["id"], 1),
                                      _doc(victim_domain, f"smtp@{victim_domain}", 2)])
    attacker, _, _ = api.sender()
    h = api.bearer(attacker)

    for payload in [*SQL_PAYLOADS, *MONGO_PAYLOADS]:
        value = quote(payload, safe="")
        for field in ("sender", "recipient", "message_id", "action", "source", "sorts"):
            status, page = await api.call("GET", f"/logs?{field}={value}", h)
            assert status in (200, 400), (field, payload, status, page)
            if status == 200:
                assert page["total"] == 0, (field, payload, page)
                assert page["logs"] == [], (field, payload, page)
        for field in ("status", "created_at_from", "created_at_to"):
            status, page = await api.call("GET", f"/emails?{field}={value}", h)
            assert status in (200, 400), (field, payload, status, page)
            if status == 200:
                assert page["total"] == 0, (field, payload, page)
        status, page = await api.call("GET", f"/emails/{value}", h)
        assert status in (400, 404), (payload, status, page)

    # The victim's own view is unchanged and the tables are still there.
    status, page = await api.call("GET", "/emails", api.bearer(victim))
    assert status == 200, page
    assert page["total"] == 1, page
    with api.usend.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM email_messages")).scalar_one() >= 1
        assert conn.execute(text("SELECT count(*) FROM api_keys")).scalar_one() >= 0


async def test_mongo_operators_in_the_victims_own_filters_are_literals(api: SendingApi) -> None:
    """A value that MongoDB would read as an operator or a regex matches only itself."""
    # verified before its events: GET /logs shows a domain's events from its verification on
    user, _, domain = api.sender(verified_at=datetime(2026, 3, 1, tzinfo=UTC))
    h = api.bearer(user)
    api.mongo.collection.insert_many([_doc(domain, f"m{i}@{domain}", i) for i in range(1, 4)])
    status, page = await api.call("GET", "/logs", h)
    assert status == 200, page
    assert page["total"] == 3, page
    for payload in MONGO_PAYLOADS:
        for field in ("sender", "recipient", "message_id"):
            status, page = await api.call("GET", f"/logs?{field}={quote(payload, safe='')}", h)
            assert status in (200, 400), (field, payload, page)
            if status == 200:
                assert page["total"] == 0, (field, payload, page)
