"""The outbox store's release of scheduled emails with the suppression list checked again
(:mod:`etrans.app.scheduled_release`), on PostgreSQL (``etrans serve``) and SQLite (``etrans
dev``): recipients suppressed while the email waited are left out of its send request, with
their outcomes and ``email.suppressed`` events; an email with no recipient left becomes
``suppressed`` and its send request is deleted; a screen that fails rolls everything back.

Each backend's own suppression list (:func:`etrans.bootstrap.stores.suppression_store`) is the
lookup, as ``etrans dev`` wires it on SQLite.  Same fixture as test_outbox_store_contract.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import insert, select

from etrans.adapters.sql.usend import EmailRecipientOutcome
from etrans.app.records import Suppression
from etrans.app.scheduled_release import ReleaseScreen
from etrans.bootstrap.stores import release_domains, suppression_store
from etrans.domain.emails import sendmail_message
from etrans.domain.events import EventType, decode_event
from etrans.errors import RetryLater
from tests.contract.test_outbox_store_contract import (
    EMAILS,
    Backend,
    _publish_all,
    backend,
    pg_outbox_url,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.app.ports import SendingDomains, SuppressionLookup

__all__ = ["backend", "pg_outbox_url"]  # the fixtures, shared

OUTCOMES = EmailRecipientOutcome.__table__
USER, OTHER = 7, 8


def screened(b: Backend, lookup: SuppressionLookup | None = None, *,
             domains: SendingDomains | None = None) -> Any:
    """A store of ``b``'s database built as bootstrap builds it: with the release screen."""
    screen = ReleaseScreen(lookup or suppression_store(b.db), events_topic="events",
                           domains=domains)
    if b.name == "postgres":
        from etrans.adapters.sql.outbox_store import PgOutboxStore

        return PgOutboxStore.of(b.db, screen)
    from etrans.dev.sqlite_outbox import SqliteOutboxStore

    return SqliteOutboxStore(b.db, screen)


def schedule(b: Backend, message_id: str, *, user: int = USER, to: Sequence[str],
             cc: Sequence[str] = (), left_out: Sequence[str] = ()) -> int:
    """A scheduled email, due, as POST /emails stores it; ``left_out``: recipients already
    suppressed when it was accepted (outcomes, and not in its send request)."""
    now = datetime.now(UTC)
    request = {"from": "S <s@example.test>", "subject": "Hi", "html": "<p>x</p>",
               "to": [a for a in to if a not in left_out],
               "cc": [a for a in cc if a not in left_out]}
    payload = json.dumps(sendmail_message(request, message_id=message_id, user_id=user),
                         ensure_ascii=False, separators=(",", ":")).encode()
    with b.db.engine.begin() as conn:
        conn.execute(insert(EMAILS).values(
            message_id=message_id, user_id=user, from_address="S <s@example.test>",
            to_addresses=list(to), cc_addresses=list(cc), subject="Hi", html="<p>x</p>",
            status="scheduled", created_at=now, scheduled_at=now))
        for address in left_out:
            conn.execute(insert(OUTCOMES).values(
                message_id=message_id, recipient=address.lower(), outcome="suppressed",
                response="manual", event_at=now, updated_at=now))
    [row_id] = b.add({"payload": payload, "message_id": message_id, "key": message_id,
                      "due_at": now - timedelta(seconds=1), "traceparent": f"tp-{message_id}"})
    return row_id


async def suppress(b: Backend, user: int, *entries: tuple[str, str]) -> None:
    await suppression_store(b.db).add([Suppression(user, address, reason)
                                       for address, reason in entries])


def outcomes(b: Backend, message_id: str) -> list[tuple[str, str, str]]:
    with b.db.engine.connect() as conn:
        return [(r.recipient, r.outcome, r.response) for r in conn.execute(
            select(OUTCOMES).where(OUTCOMES.c.message_id == message_id)
            .order_by(OUTCOMES.c.recipient))]


def request_of(b: Backend, row_id: int) -> dict[str, Any]:
    return json.loads(bytes(b.rows()[row_id].payload))["payload"]  # type: ignore[no-any-return]


async def test_recipients_suppressed_while_it_waited_are_left_out_at_release(
        backend: Backend) -> None:
    partly = schedule(backend, "m-partly", to=["Ann <ann@example.org>", "Gone <GONE@example.org>"],
                      cc=["cy@example.org"])
    every = schedule(backend, "m-every", to=["gone@example.org"], cc=["old@example.org"],
                     left_out=["old@example.org"])
    theirs = schedule(backend, "m-theirs", user=OTHER, to=["gone@example.org"])
    untouched = schedule(backend, "m-untouched", to=["ann@example.org"])
    await suppress(backend, USER, ("gone@example.org", "hard_bounce"),
                   ("old@example.org", "manual"))
    store = screened(backend)
    try:
        assert await store.release_due(10) == 4
        assert await store.release_due(10) == 0
    finally:
        await store.aclose()

    rows = backend.rows()
    # Released without the suppressed recipient (each field keeps its role), and reported.
    assert backend.email("m-partly").status == "queued"
    assert rows[partly].due_at is None
    assert (request_of(backend, partly)["recipients"], request_of(backend, partly)["cc"]) == (
        ["Ann <ann@example.org>"], ["cy@example.org"])
    assert request_of(backend, partly)["message_id"] == "m-partly"
    assert outcomes(backend, "m-partly") == [("gone@example.org", "suppressed", "hard_bounce")]
    # No recipient left: suppressed, its send request gone; the earlier outcome stays.
    assert backend.email("m-every").status == "suppressed"
    assert every not in rows
    assert outcomes(backend, "m-every") == [("gone@example.org", "suppressed", "hard_bounce"),
                                            ("old@example.org", "suppressed", "manual")]
    # Another user's list does not apply; an email with nobody listed is released as it was.
    assert backend.email("m-theirs").status == "queued"
    assert request_of(backend, theirs)["recipients"] == ["gone@example.org"]
    assert outcomes(backend, "m-theirs") == []
    assert backend.email("m-untouched").status == "queued"
    assert rows[untouched].due_at is None
    # One email.suppressed event per newly suppressed recipient, pending at once, in the
    # email's trace.
    events = [(r, decode_event(bytes(r.payload))) for i, r in rows.items()
              if i not in (partly, theirs, untouched)]
    assert sorted((r.topic, e.type, e.message_id, e.data["recipient"], e.data["reason"],
                   r.due_at, r.traceparent) for r, e in events) == [
        ("events", EventType.SUPPRESSED, "m-every", "gone@example.org", "hard_bounce", None,
         "tp-m-every"),
        ("events", EventType.SUPPRESSED, "m-partly", "gone@example.org", "hard_bounce", None,
         "tp-m-partly")]
    taken: list[int] = []

    def choose(pending: Sequence[tuple[int, int]]) -> list[int]:
        taken.extend(row_id for row_id, _ in pending)
        return []

    await backend.store.relay_pass(10, choose, _publish_all)
    assert sorted(taken) == sorted(rows)  # everything left is pending; m-every's row is gone


async def test_a_screen_that_fails_releases_nothing(backend: Backend) -> None:
    row_id = schedule(backend, "m-1", to=["ann@example.org", "gone@example.org"])
    await suppress(backend, USER, ("gone@example.org", "hard_bounce"))

    class Down:
        async def suppressed(self, user_id: int, addresses: Sequence[str]) -> dict[str, Any]:
            raise RetryLater("suppression lookup failed: OperationalError")

    store = screened(backend, Down())
    try:
        with pytest.raises(RetryLater):
            await store.release_due(10)
    finally:
        await store.aclose()
    assert backend.rows()[row_id].due_at is not None  # still waiting, nothing half-done
    assert backend.email("m-1").status == "scheduled"
    assert outcomes(backend, "m-1") == []
    assert list(backend.rows()) == [row_id]
    store = screened(backend)
    try:
        assert await store.release_due(10) == 1  # then, with the list answering, once
    finally:
        await store.aclose()
    assert request_of(backend, row_id)["recipients"] == ["ann@example.org"]



async def test_an_email_whose_sending_domain_is_gone_fails_at_release(backend: Backend) -> None:
    """Its domain (example.test) is not in the local billing tables: deleted while it waited."""
    row_id = schedule(backend, "m-1", to=["ann@example.org"])
    store = screened(backend, domains=release_domains(None, backend.db))
    try:
        assert await store.release_due(10) == 1
        assert await store.release_due(10) == 0
    finally:
        await store.aclose()
    email = backend.email("m-1")
    response = ("etrans: not sent: the sending domain example.test was deleted while the email "
                "was scheduled")
    assert (email.status, email.last_event, email.response) == ("failed", "outbox", response)
    rows = backend.rows()
    assert rows[row_id].failed_at is not None  # never published, never retried
    assert (rows[row_id].due_at, rows[row_id].published_at) == (None, None)
    [event] = [decode_event(bytes(r.payload)) for i, r in rows.items() if i != row_id]
    assert (event.type, event.message_id, event.user_id, event.data["response"]) == (
        EventType.FAILED, "m-1", USER, f"554 5.3.4 {response}")
    taken: list[int] = []

    def choose(pending: Sequence[tuple[int, int]]) -> list[int]:
        taken.extend(row_id for row_id, _ in pending)
        return []

    await backend.store.relay_pass(10, choose, _publish_all)
    assert taken == [i for i in rows if i != row_id]  # only its email.failed event
