"""Scheduled sending through the real API (every route of ``etrans serve``) on PostgreSQL and
Redis: ``scheduled_at`` on POST /emails and /emails/batch (RFC 3339 with an offset, in the
future, at most 30 days ahead: else a 400 naming the rule), the email stored ``scheduled`` with
a waiting outbox record and shown by GET /emails/{id}; DELETE and PATCH /emails/{id}/schedule
(only while scheduled: else 409; full_access; another user's id is 404; in /openapi.json);
quota counted when the email is accepted, also for one cancelled later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select

from etrans.adapters.sql.usend import EmailOutbox
from tests.integration.sending_api import SendingApi, email, open_sending_api

OUTBOX = EmailOutbox.__table__


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db, all_routes=True) as api:
        yield api


def _at(delta: timedelta, *, offset_hours: int = 0) -> tuple[str, str]:
    """(the RFC 3339 text with that offset, the same moment in the API's UTC whole seconds)."""
    moment = (datetime.now(UTC) + delta).replace(microsecond=0)
    zone = moment.astimezone(timezone(timedelta(hours=offset_hours)))
    return zone.isoformat(), moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _waiting(api: SendingApi, message_id: str) -> list[Any]:
    with api.usend.engine.connect() as conn:
        return [r.due_at for r in conn.execute(
            select(OUTBOX.c.due_at).where(OUTBOX.c.message_id == message_id,
                                          OUTBOX.c.published_at.is_(None)))]


async def test_a_scheduled_email_is_stored_scheduled_and_shown_with_its_time(
        api: SendingApi) -> None:
    user, _, domain = api.sender()
    auth = api.bearer(user)
    given, shown = _at(timedelta(hours=2), offset_hours=5)
    status, sent = await api.call("POST", "/emails", auth, json=email(domain, scheduled_at=given))
    assert status == 200, sent
    assert (sent["status"], sent["scheduled_at"]) == ("scheduled", shown)
    assert [d.strftime("%Y-%m-%dT%H:%M:%SZ") for d in _waiting(api, sent["id"])] == [shown]
    status, got = await api.call("GET", f"/emails/{sent['id']}", auth)
    assert (got["status"], got["scheduled_at"]) == ("Scheduled", shown)
    status, listed = await api.call("GET", "/emails?status=scheduled", auth)
    assert [e["id"] for e in listed["data"]] == [sent["id"]]
    status, now = await api.call("POST", "/emails", auth, json=email(domain))
    assert (now["status"], "scheduled_at" in now) == ("queued", False)  # the spec's answer
    assert _waiting(api, now["id"]) == [None]


@pytest.mark.parametrize(("value", "says"), [
    ("2026-12-24T09:00:00", "the offset is required"),
    ("2026-12-24 09:00", "invalid RFC 3339 date-time"),
    ("tomorrow", "invalid RFC 3339 date-time"),
    ("2026-02-30T09:00:00Z", "invalid date-time"),
    ("PAST", "is in the past"),
    ("FAR", "more than 30 days ahead"),
])
async def test_a_bad_scheduled_at_is_a_400_naming_the_rule(api: SendingApi, value: str,
                                                          says: str) -> None:
    user, _, domain = api.sender()
    if value == "PAST":
        value = _at(timedelta(seconds=-5))[0]
    elif value == "FAR":
        value = _at(timedelta(days=30, minutes=1))[0]
    status, body = await api.call("POST", "/emails", api.bearer(user),
                                  json=email(domain, scheduled_at=value))
    assert status == 400, body
    assert says in str(body["detail"]), body
    status, batch = await api.call("POST", "/emails/batch", api.bearer(user), json={"emails": [
        email(domain), email(domain, scheduled_at=value)]})
    assert status == 200, batch
    assert [e["index"] for e in batch["errors"]] == [1]
    assert says in batch["errors"][0]["error"]


async def test_a_batch_schedules_each_email_on_its_own(api: SendingApi) -> None:
    user, _, domain = api.sender()
    one, one_shown = _at(timedelta(minutes=10))
    two, two_shown = _at(timedelta(days=29), offset_hours=-7)
    status, batch = await api.call("POST", "/emails/batch", api.bearer(user), json={"emails": [
        email(domain, scheduled_at=one), email(domain), email(domain, scheduled_at=two)]})
    assert status == 200, batch
    assert [(e["status"], e.get("scheduled_at")) for e in batch["data"]] == [
        ("scheduled", one_shown), ("queued", None), ("scheduled", two_shown)]


async def test_cancel_and_move_only_while_scheduled(api: SendingApi) -> None:
    user, _, domain = api.sender()
    auth = api.bearer(user)
    given, _ = _at(timedelta(hours=1))
    _, sent = await api.call("POST", "/emails", auth, json=email(domain, scheduled_at=given))
    path = f"/emails/{sent['id']}/schedule"
    later, later_shown = _at(timedelta(days=3), offset_hours=2)
    status, moved = await api.call("PATCH", path, auth, json={"scheduled_at": later})
    assert status == 200, moved
    assert moved == {"id": sent["id"], "status": "Scheduled", "scheduled_at": later_shown}
    assert [d.strftime("%Y-%m-%dT%H:%M:%SZ") for d in _waiting(api, sent["id"])] == [later_shown]
    status, body = await api.call("PATCH", path, auth,
                                  json={"scheduled_at": _at(timedelta(days=31))[0]})
    assert (status, "more than 30 days ahead" in body["detail"]) == (400, True)
    status, body = await api.call("PATCH", path, auth, json={"scheduled_at": "soon"})
    assert status == 400, body
    status, cancelled = await api.call("DELETE", path, auth)
    assert status == 200, cancelled
    assert cancelled == {"id": sent["id"], "status": "Cancelled", "scheduled_at": later_shown}
    assert _waiting(api, sent["id"]) == []
    status, got = await api.call("GET", f"/emails/{sent['id']}", auth)
    assert got["status"] == "Cancelled"
    for method, body in (("DELETE", None), ("PATCH", {"scheduled_at": later})):
        status, answer = await api.call(method, path, auth, json=body)
        assert status == 409, answer
        assert answer["detail"].startswith(f"Email {sent['id']} is not scheduled "
                                           "(status Cancelled)")
    _, queued = await api.call("POST", "/emails", auth, json=email(domain))
    status, answer = await api.call("DELETE", f"/emails/{queued['id']}/schedule", auth)
    assert (status, "(status Queued)" in answer["detail"]) == (409, True)


async def test_full_access_changes_a_schedule_and_another_users_id_is_404(
        api: SendingApi) -> None:
    user, _, domain = api.sender()
    given, _ = _at(timedelta(hours=1))
    _, sent = await api.call("POST", "/emails", api.bearer(user),
                             json=email(domain, scheduled_at=given))
    path = f"/emails/{sent['id']}/schedule"
    for level in ("read_only", "sending_access"):
        key = {"X-API-KEY": api.api_key(user, level)[0]}
        assert (await api.call("DELETE", path, key))[0] == 403
        assert (await api.call("PATCH", path, key, json={"scheduled_at": given}))[0] == 403
    intruder, _, _ = api.sender()
    for method, body in (("DELETE", None), ("PATCH", {"scheduled_at": given})):
        status, answer = await api.call(method, path, api.bearer(intruder), json=body)
        assert (status, answer["detail"]) == (404, "Email not found")
    assert _waiting(api, sent["id"]) != []
    full = {"X-API-KEY": api.api_key(user, "full_access")[0]}
    assert (await api.call("DELETE", path, full))[0] == 200
    status, doc = await api.call("GET", "/openapi.json")
    operations = doc["paths"]["/emails/{message_id}/schedule"]
    assert {m: op["x-permission"] for m, op in operations.items()} == {
        "delete": "full_access", "patch": "full_access"}


async def test_quota_is_counted_when_a_scheduled_email_is_accepted(api: SendingApi) -> None:
    user, _, domain = api.sender(daily=2, hourly=100)
    auth = api.bearer(user)
    given, _ = _at(timedelta(days=2))
    _, first = await api.call("POST", "/emails", auth, json=email(domain, scheduled_at=given))
    assert (await api.call("DELETE", f"/emails/{first['id']}/schedule", auth))[0] == 200
    assert (await api.call("POST", "/emails", auth,
                           json=email(domain, scheduled_at=given)))[0] == 200
    status, refused = await api.call("POST", "/emails", auth, json=email(domain))
    assert (status, refused["detail"]) == (
        400, "Daily sending quota exceeded: the limit is 2 emails per day")
