"""The port of the schedule use cases (:mod:`etrans.app.schedules`): cancel or move a scheduled
email, atomically with respect to the outbox relay that releases it when due."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from etrans.app.records import ScheduleChange
    from etrans.app.scheduled_release import DueEmail, Release


class ScheduleStore(Protocol):
    """Within ``user_id``'s emails (another user's id is None, as an unknown one).  A change
    happens only while the email is ``scheduled`` and its outbox row still waits: once the relay
    has released it (or it was cancelled), the answer is the status it has, ``changed`` False.
    A database that does not answer is UpstreamUnavailable."""

    async def cancel(self, user_id: int, message_id: str) -> ScheduleChange | None:
        """Status ``cancelled``; the outbox row is deleted: never published."""

    async def move(self, user_id: int, message_id: str, at: datetime
                   ) -> ScheduleChange | None:
        """``scheduled_at`` and the outbox row's ``due_at`` become ``at``."""


class DueEmailScreen(Protocol):
    """What the outbox store asks when it releases scheduled emails
    (:class:`etrans.app.scheduled_release.ReleaseScreen`), within the transaction that holds
    their rows: which have recipients newly suppressed.  Raises when it cannot tell (the store
    rolls back: the rows stay due)."""

    async def screen(self, due: Sequence[DueEmail]) -> Sequence[Release]: ...
