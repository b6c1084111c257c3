"""Who sent a message through the API (port ``MessageOwners``): ``email_messages`` by message id.

fetchlog records the answer on every delivery-log document (``user_id``, ``source``), so that
GET /logs never sends message ids anywhere.  One query per batch of events (chunks of
:data:`CHUNK` ids, far below PostgreSQL's 65,535 bind parameters and SQLite's 32,766), and an LRU
memory of the last :data:`REMEMBERED` answers - a message has several events (queued, deferred,
delivered...) that usually arrive within minutes.  An unknown id is remembered too: the API
commits an email's row before it publishes the email, so a delivery event can never precede it.
The same query reads each message's ``traceparent`` (the API request's), which
:meth:`MessageOwnerLookup.traceparents` answers from that memory: the SMTP server's events carry
no trace context of their own (docs/operations.md, "Tracing").
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from sqlalchemy import select

from etrans.adapters.sql.usend import EmailMessage
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.adapters.sql import Database

CHUNK = 5_000
REMEMBERED = 200_000
_EMAILS = EmailMessage.__table__


class MessageOwnerLookup:
    name = "usend_db"

    def __init__(self, database: Database, *, remembered: int = REMEMBERED) -> None:
        self.database = database
        self._remembered = remembered
        self._known: OrderedDict[str, int | None] = OrderedDict()
        self._traces: dict[str, str] = {}  # message id -> traceparent, for ids in _known
        self.queries = 0  # statistics: USEND queries made

    def _lookup(self, ids: list[str]) -> dict[str, tuple[int, str | None]]:
        from sqlalchemy.exc import SQLAlchemyError

        found: dict[str, tuple[int, str | None]] = {}
        try:
            with self.database.engine.connect() as conn:
                for start in range(0, len(ids), CHUNK):
                    query = select(_EMAILS.c.message_id, _EMAILS.c.user_id,
                                   _EMAILS.c.traceparent).where(
                        _EMAILS.c.message_id.in_(ids[start:start + CHUNK]))
                    found.update((m, (int(u), t)) for m, u, t in conn.execute(query))
                    self.queries += 1
        except SQLAlchemyError as exc:
            raise RetryLater(f"USEND DB message lookup failed: {exc.__class__.__name__}") from exc
        return found

    async def owners(self, message_ids: Sequence[str]) -> dict[str, int]:
        wanted = {m for m in message_ids if m}
        missing = sorted(m for m in wanted if m not in self._known)
        if missing:
            found = await self.database.run(self._lookup, missing)
            for message_id in missing:
                owner, traceparent = found.get(message_id, (None, None))
                self._known[message_id] = owner
                if traceparent is not None:
                    self._traces[message_id] = traceparent
        answer: dict[str, int] = {}
        for message_id in wanted:
            owner = self._known.get(message_id)
            self._known.move_to_end(message_id)
            if owner is not None:
                answer[message_id] = owner
        while len(self._known) > self._remembered:
            self._traces.pop(self._known.popitem(last=False)[0], None)
        return answer

    def traceparents(self, message_ids: Sequence[str]) -> dict[str, str]:
        """The ``traceparent`` of each of ``message_ids`` that :meth:`owners` has looked up and
        that has one (no query)."""
        traces = self._traces
        return {m: traces[m] for m in message_ids if m in traces}
