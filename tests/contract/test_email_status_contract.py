"""EmailStatusStore (:mod:`etrans.app.ports`): PostgreSQL (``EmailStatusUpdater``, one
``UPDATE ... FROM unnest``) and the ``etrans dev`` SQLite file (``SqliteEmailStatusUpdater``, one
UPDATE per change) advance ``email_messages.status`` alike.

What fetchlog relies on: a status only moves forward (queued < sent < deferred < delivered =
bounced < failed, equal ranks keep what was stored first), whatever order and batches the events
come in, concurrent batches included; the answer is the number of rows changed; ``sent_at`` is
the first event's time, ``delivered_at`` the delivery's; message ids that are no email (SMTP mail)
change nothing.  Each recipient's outcome (``record_outcomes``, ``email_recipient_outcomes``)
follows the same rules per recipient and is written for API emails only.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from etrans.domain.delivery_log import RecipientOutcome, StatusChange
from tests.contract.usend_backends import fresh_user, new_email

AT = datetime(2026, 3, 10, 15, 0, 0, 250000, tzinfo=UTC)


async def _emails(usend: Any, count: int) -> tuple[int, list[str]]:
    user = fresh_user()
    emails = [new_email(user) for _ in range(count)]
    await usend.repo.save(emails)
    return user, [e.message_id for e in emails]


async def _status(usend: Any, user: int, message_id: str) -> dict[str, Any]:
    row = await usend.repo.get(user, message_id)
    assert row is not None
    return {name: row[name] for name in ("status", "last_event", "response", "sent_at",
                                         "delivered_at")}


async def test_a_status_only_moves_forward(usend: Any) -> None:
    user, [m1] = await _emails(usend, 1)
    apply = usend.statuses.apply
    assert await apply([StatusChange(m1, "sent", AT, "Sender", "250 queued")]) == 1
    assert await apply([StatusChange(m1, "deferred", AT + timedelta(seconds=1), "Deferred",
                                     "451 try later")]) == 1
    delivered_at = AT + timedelta(seconds=2)
    assert await apply([StatusChange(m1, "delivered", delivered_at, "Sender", "250 ok")]) == 1
    assert await apply([StatusChange(m1, "deferred", AT, "Deferred", "451")]) == 0
    assert await apply([StatusChange(m1, "bounced", AT, "Reject", "550")]) == 0  # equal rank
    assert await apply([StatusChange(m1, "delivered", AT, "Sender", "250 again")]) == 0
    assert await _status(usend, user, m1) == {
        "status": "delivered", "last_event": "Sender", "response": "250 ok", "sent_at": AT,
        "delivered_at": delivered_at}


async def test_a_batch_changes_the_rows_that_are_behind(usend: Any) -> None:
    user, ids = await _emails(usend, 3)
    assert await usend.statuses.apply([]) == 0
    assert await usend.statuses.apply([StatusChange(ids[0], "deferred", AT)]) == 1
    changed = await usend.statuses.apply([
        StatusChange(ids[2], "bounced", AT, "Reject", "550 no such user"),
        StatusChange(ids[0], "sent", AT, "Sender"),  # behind what is stored: unchanged
        StatusChange("msg_smtp_only@a.example", "delivered", AT),  # no such email
        StatusChange(ids[1], "sent", AT, "E" * 40),
    ])
    assert changed == 2
    assert [(await _status(usend, user, m))["status"] for m in ids] == [
        "deferred", "sent", "bounced"]
    second = await _status(usend, user, ids[1])
    assert second["last_event"] == "E" * 32  # cut to the column
    assert second["delivered_at"] is None
    third = await _status(usend, user, ids[2])
    assert (third["delivered_at"], third["response"]) == (None, "550 no such user")


async def test_concurrent_batches_in_any_order_end_at_the_highest_status(usend: Any) -> None:
    user, ids = await _emails(usend, 8)
    ladder = ["sent", "deferred", "delivered"]
    batches = []
    shuffled = random.Random(14)
    for step in range(3):
        for _ in range(3):
            batch = [StatusChange(m, ladder[(step + n) % 3], AT + timedelta(seconds=step), "E")
                     for n, m in enumerate(ids)]
            shuffled.shuffle(batch)
            batches.append(batch)
    shuffled.shuffle(batches)
    async with trio.open_nursery() as nursery:
        for batch in batches:
            nursery.start_soon(usend.statuses.apply, batch)
    assert {(await _status(usend, user, m))["status"] for m in ids} == {"delivered"}


# -- email_recipient_outcomes ---------------------------------------------------------------------

async def _recipients(usend: Any, user: int, message_id: str) -> dict[str, tuple[Any, ...]]:
    row = await usend.repo.get(user, message_id)
    assert row is not None
    return {r["recipient"]: (r["outcome"], r["bounce_class"], r["response"], r["event_at"])
            for r in row["recipients"]}


async def test_recipient_outcomes_only_move_forward(usend: Any) -> None:
    user, [m1] = await _emails(usend, 1)
    record = usend.statuses.record_outcomes
    assert await _recipients(usend, user, m1) == {}
    assert await record([]) == 0
    assert await record([RecipientOutcome(m1, "a@x.org", "sent", AT, None, "250 queued"),
                         RecipientOutcome(m1, "b@x.org", "deferred", AT, None, "451 later"),
                         RecipientOutcome("smtp-only@mx", "a@x.org", "sent", AT)]) == 2
    later = AT + timedelta(seconds=5)
    assert await record([RecipientOutcome(m1, "b@x.org", "bounced", later, "hard",
                                          "550 5.1.1 no such user"),
                         RecipientOutcome(m1, "a@x.org", "sent", later, None, "250 again")]) == 1
    # Late or equal-rank events change nothing: bounced and delivered are both final.
    assert await record([RecipientOutcome(m1, "b@x.org", "delivered", later, None, "250")]) == 0
    assert await record([RecipientOutcome(m1, "b@x.org", "deferred", AT, None, "451")]) == 0
    assert await _recipients(usend, user, m1) == {
        "a@x.org": ("sent", None, "250 queued", AT),
        "b@x.org": ("bounced", "hard", "550 5.1.1 no such user", later)}


async def test_concurrent_outcome_batches_end_at_the_highest_outcome(usend: Any) -> None:
    user, [m1] = await _emails(usend, 1)
    ladder = ["sent", "deferred", "bounced"]
    recipients = [f"r{n}@x.org" for n in range(6)]
    batches = [[RecipientOutcome(m1, r, ladder[(step + n) % 3], AT + timedelta(seconds=step),
                                 "soft" if ladder[(step + n) % 3] == "bounced" else None)
                for n, r in enumerate(recipients)] for step in range(3) for _ in range(2)]
    random.Random(15).shuffle(batches)
    async with trio.open_nursery() as nursery:
        for batch in batches:
            nursery.start_soon(usend.statuses.record_outcomes, batch)
    stored = await _recipients(usend, user, m1)
    assert {outcome for outcome, *_ in stored.values()} == {"bounced"}
    assert {bounce_class for _, bounce_class, *_ in stored.values()} == {"soft"}
