"""Use cases of scheduled sending: when to send (``scheduled_at`` of POST /emails and
/emails/batch), and cancelling or moving a scheduled email (DELETE and PATCH
/emails/{id}/schedule).

A scheduled email is accepted as any other (its rules, quota reserved when it is accepted,
``docs/api.md``) and stored with the status ``scheduled``; its outbox record waits until the
relay releases it at ``scheduled_at`` (:mod:`etrans.adapters.sql.outbox`).  Cancelling gives
no quota back: quota counts accepted emails, in the window they were accepted in.  Both
changes succeed only while the email is still ``scheduled`` (the store decides, atomically with
the relay): otherwise 409 with the status it has, and 404 for an id that is not the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from etrans.domain.schedule import ScheduleError, parse_scheduled_at, timing_problem
from etrans.domain.status import RAW_QUEUED, RAW_SCHEDULED, RAW_SUPPRESSED, display_label
from etrans.errors import Conflict, InvalidInput, NotFound

if TYPE_CHECKING:
    from collections.abc import Callable

    from etrans.app.bus import MessageBus
    from etrans.app.records import ScheduleChange
    from etrans.app.schedule_ports import ScheduleStore


@dataclass(frozen=True)
class CancelSchedule:
    user_id: int
    message_id: str


@dataclass(frozen=True)
class MoveSchedule:
    user_id: int
    message_id: str
    scheduled_at: str  # RFC 3339 with an offset (checked by the request schema)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ScheduleDeps:
    store: ScheduleStore
    clock: Callable[[], datetime] = field(default=_utcnow)


def scheduled_time(email: dict[str, Any], now: datetime) -> datetime | None:
    """When the email is to be sent (None: at once); InvalidInput (400) when ``scheduled_at``
    is malformed, in the past or more than 30 days ahead of ``now``."""
    text = email.get("scheduled_at")
    if not text:
        return None
    return _checked(text, now)


def stored_status(kafka_value: bytes, scheduled_at: datetime | None) -> str:
    """The raw status an accepted email is stored with: suppressed (nothing to send), else
    scheduled (its outbox record waits) or queued."""
    return RAW_SUPPRESSED if not kafka_value else RAW_SCHEDULED if scheduled_at else RAW_QUEUED


def _checked(text: str, now: datetime) -> datetime:
    try:
        moment = parse_scheduled_at(text)
    except ScheduleError as exc:
        raise InvalidInput(f"scheduled_at: {exc}") from None
    problem = timing_problem(moment, now)
    if problem is not None:
        raise InvalidInput(problem)
    return moment


async def cancel_schedule(deps: ScheduleDeps, cmd: CancelSchedule) -> ScheduleChange:
    return _done(await deps.store.cancel(cmd.user_id, cmd.message_id), cmd.message_id,
                 "cancelled")


async def move_schedule(deps: ScheduleDeps, cmd: MoveSchedule) -> ScheduleChange:
    at = _checked(cmd.scheduled_at, deps.clock())
    return _done(await deps.store.move(cmd.user_id, cmd.message_id, at), cmd.message_id,
                 "moved")


def _done(change: ScheduleChange | None, message_id: str, verb: str) -> ScheduleChange:
    if change is None:
        raise NotFound("Email not found")
    if not change.changed:
        raise Conflict(f"Email {message_id} is not scheduled (status "
                       f"{display_label(change.status)}): only a Scheduled email can be {verb}")
    return change


def register(bus: MessageBus, deps: ScheduleDeps) -> None:
    bus.register(CancelSchedule, partial(cancel_schedule, deps))
    bus.register(MoveSchedule, partial(move_schedule, deps))
