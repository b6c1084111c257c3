"""The schedule store contract (:class:`etrans.app.schedule_ports.ScheduleStore`): the same
:class:`~etrans.adapters.sql.schedules_repo.SqlSchedules` on PostgreSQL (``etrans serve``) and
on the ``etrans dev`` SQLite file, with the email store that saved the scheduled emails and the
outbox store whose relay releases them.

Cancel and move change only the user's own email, only while it is ``scheduled`` and its
outbox row still waits; otherwise they answer its status unchanged (``changed`` False), and
None for an id that is not the user's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from etrans.adapters.sql.schedules_repo import SqlSchedules
from etrans.adapters.sql.usend import EmailOutbox
from tests.contract.usend_backends import fresh_user, new_email

OUTBOX = EmailOutbox.__table__


def _scheduled(user: int, at: datetime) -> Any:
    return new_email(user, status="scheduled", scheduled_at=at)


def _waiting(usend: Any, message_id: str) -> list[Any]:
    """(due_at, published_at) of the email's outbox rows."""
    with usend.db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(OUTBOX.c.due_at, OUTBOX.c.published_at)
            .where(OUTBOX.c.message_id == message_id))]


async def test_a_scheduled_email_is_saved_with_its_time_and_a_waiting_outbox_row(
        usend: Any) -> None:
    user, at = fresh_user(), datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    email = _scheduled(user, at)
    await usend.repo.save([email, new_email(user)])
    row = await usend.repo.get(user, email.message_id)
    assert (row["status"], row["scheduled_at"]) == ("scheduled", at)
    assert _waiting(usend, email.message_id) == [(at, None)]


async def test_cancel_deletes_the_waiting_row_and_the_email_is_cancelled(usend: Any) -> None:
    user, at = fresh_user(), datetime.now(UTC) + timedelta(hours=1)
    email = _scheduled(user, at)
    await usend.repo.save([email])
    schedules = SqlSchedules(usend.db)
    change = await schedules.cancel(user, email.message_id)
    assert change is not None
    assert (change.status, change.changed) == ("cancelled", True)
    assert _waiting(usend, email.message_id) == []
    assert (await usend.repo.get(user, email.message_id))["status"] == "cancelled"
    again = await schedules.cancel(user, email.message_id)
    assert again is not None
    assert (again.status, again.changed) == ("cancelled", False)
    moved = await schedules.move(user, email.message_id, at + timedelta(hours=1))
    assert moved is not None
    assert (moved.status, moved.scheduled_at, moved.changed) == ("cancelled", at, False)


async def test_move_changes_the_time_of_the_email_and_of_its_waiting_row(usend: Any) -> None:
    user, at = fresh_user(), datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    email = _scheduled(user, at)
    await usend.repo.save([email])
    later = at + timedelta(days=1, microseconds=7)
    change = await SqlSchedules(usend.db).move(user, email.message_id, later)
    assert change is not None
    assert (change.status, change.scheduled_at, change.changed) == ("scheduled", later, True)
    assert _waiting(usend, email.message_id) == [(later, None)]
    assert (await usend.repo.get(user, email.message_id))["scheduled_at"] == later


async def test_only_the_users_own_email_and_only_while_it_is_scheduled(usend: Any) -> None:
    user, other = fresh_user(), fresh_user()
    scheduled = _scheduled(user, datetime.now(UTC) + timedelta(hours=1))
    queued = new_email(user)
    await usend.repo.save([scheduled, queued])
    schedules = SqlSchedules(usend.db)
    assert await schedules.cancel(other, scheduled.message_id) is None
    assert await schedules.move(other, scheduled.message_id, datetime.now(UTC)) is None
    assert await schedules.cancel(user, "msg_nothing@a.example") is None
    change = await schedules.cancel(user, queued.message_id)
    assert change is not None
    assert (change.status, change.changed) == ("queued", False)
    assert (await usend.repo.get(user, scheduled.message_id))["status"] == "scheduled"


async def test_an_email_the_relay_released_can_no_longer_be_cancelled(usend: Any) -> None:
    from etrans.adapters.sql.outbox_store import PgOutboxStore
    from etrans.dev.sqlite_outbox import SqliteOutboxStore

    user = fresh_user()
    email = _scheduled(user, datetime.now(UTC) - timedelta(seconds=1))  # due already
    await usend.repo.save([email])
    store: Any = (PgOutboxStore.of(usend.db) if usend.name == "postgres"
                  else SqliteOutboxStore(usend.db))
    try:
        # (On the shared PostgreSQL database, a relay of another test may release it first.)
        await store.release_due(1_000_000)
    finally:
        await store.aclose()
    change = await SqlSchedules(usend.db).cancel(user, email.message_id)
    assert change is not None
    assert (change.status, change.changed) == ("queued", False)
    assert _waiting(usend, email.message_id)[0][0] is None
