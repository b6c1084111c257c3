"""Each user's suppression list (``suppressions`` in the USEND DB) on PostgreSQL: the
:class:`~etrans.app.ports.SuppressionStore` of the API (send path, /suppressions) and fetchlog.

- :meth:`PgSuppressionStore.suppressed` is the send path's one lookup: ``WHERE user_id = :u AND
  address = ANY(:a)``, an index scan of the primary key whatever the number of recipients.
- :meth:`PgSuppressionStore.add_hard_bounces` is one ``INSERT ... SELECT FROM unnest(...) JOIN
  email_messages`` per fetchlog batch: the user comes from the email, so outcomes of mail that is
  no API email (SMTP-submitted) match no row and add nothing; ``ON CONFLICT DO NOTHING`` keeps
  the entry that was there first, so a replayed batch changes nothing.  Outcomes that are not
  hard bounces are left out before the statement; a batch without any costs no round trip.
- Listing and removing are plain SQLAlchemy Core, shared with the ``etrans dev`` stand-in
  (:class:`etrans.dev.sqlite_suppressions.SqliteSuppressionStore`), which overrides the three
  statements written in PostgreSQL's dialect.

Every failure of the database is :class:`~etrans.errors.RetryLater`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from etrans.adapters.sql.usend import Suppression as SuppressionRow
from etrans.app.records import Suppression, SuppressionPage
from etrans.domain.bounces import BounceClass
from etrans.domain.delivery_log import BOUNCED
from etrans.domain.suppressions import MAX_ADDRESS_LENGTH, SuppressionReason, normalise_address
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy.engine import Connection

    from etrans.adapters.sql import Database
    from etrans.app.records import SuppressionFilter
    from etrans.domain.delivery_log import RecipientOutcome

TABLE = SuppressionRow.__table__
COLUMNS = (TABLE.c.user_id, TABLE.c.address, TABLE.c.reason, TABLE.c.message_id,
           TABLE.c.response, TABLE.c.created_at)

_SUPPRESSED = text("""
SELECT user_id, address, reason, message_id, response, created_at FROM suppressions
WHERE user_id = :user_id AND address = ANY(CAST(:addresses AS text[]))
""")

_ADD = text("""
INSERT INTO suppressions (user_id, address, reason, message_id, response, created_at)
SELECT v.user_id, v.address, v.reason, v.message_id, v.response, COALESCE(v.created_at, now())
FROM unnest(CAST(:user_ids AS bigint[]), CAST(:addresses AS text[]), CAST(:reasons AS text[]),
            CAST(:message_ids AS text[]), CAST(:responses AS text[]),
            CAST(:created_ats AS timestamptz[]))
     AS v(user_id, address, reason, message_id, response, created_at)
ON CONFLICT (user_id, address) DO NOTHING
""")

_ADD_HARD_BOUNCES = text(f"""
INSERT INTO suppressions (user_id, address, reason, message_id, response, created_at)
SELECT m.user_id, v.recipient, '{SuppressionReason.HARD_BOUNCE}', v.message_id, v.response, now()
FROM unnest(CAST(:message_ids AS text[]), CAST(:recipients AS text[]),
            CAST(:responses AS text[]), CAST(:ats AS timestamptz[]))
     AS v(message_id, recipient, response, at)
JOIN email_messages AS m ON m.message_id = v.message_id
ORDER BY m.user_id, v.recipient, v.at, v.message_id
ON CONFLICT (user_id, address) DO NOTHING
""")


def hard_bounces(outcomes: Sequence[RecipientOutcome]) -> list[RecipientOutcome]:
    """The outcomes that list their recipient: bounced with the ``hard`` class, an address that
    fits the column; recipients normalised, sorted (a stable lock order for concurrent batches)."""
    from dataclasses import replace

    chosen = [replace(o, recipient=normalise_address(o.recipient)) for o in outcomes
              if o.outcome == BOUNCED and o.bounce_class == BounceClass.HARD]
    chosen = [o for o in chosen if 0 < len(o.recipient) <= MAX_ADDRESS_LENGTH]
    return sorted(chosen, key=lambda o: (o.recipient, o.at, o.message_id))


def to_record(row: Any) -> Suppression:
    return Suppression(user_id=row.user_id, address=row.address, reason=row.reason,
                       message_id=row.message_id, response=row.response,
                       created_at=row.created_at)


class PgSuppressionStore:
    """The suppression list in the USEND DB (PostgreSQL)."""

    name = "usend_db"

    def __init__(self, database: Database) -> None:
        self.database = database

    async def _run(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self.database.run(fn, *args)
        except SQLAlchemyError as exc:
            raise RetryLater(f"USEND DB suppressions ({what}) failed: "
                             f"{exc.__class__.__name__}") from exc

    # -- the send path ----------------------------------------------------------------------------

    async def suppressed(self, user_id: int, addresses: Sequence[str]) -> dict[str, Suppression]:
        wanted = sorted({a for a in addresses if a})
        if not wanted:
            return {}
        rows = await self._run("lookup", self._suppressed, user_id, wanted)
        return {row.address: row for row in rows}

    def _suppressed(self, user_id: int, addresses: list[str]) -> list[Suppression]:
        with self.database.engine.connect() as conn:
            result = conn.execute(_SUPPRESSED, {"user_id": user_id, "addresses": addresses})
            return [to_record(row) for row in result]

    # -- writing ----------------------------------------------------------------------------------

    async def add(self, entries: Sequence[Suppression]) -> int:
        if not entries:
            return 0
        ordered = sorted(entries, key=lambda e: (e.user_id, e.address))
        return int(await self._run("add", self._add, ordered))

    def _add(self, entries: Sequence[Suppression]) -> int:
        params = {
            "user_ids": [e.user_id for e in entries], "addresses": [e.address for e in entries],
            "reasons": [e.reason for e in entries],
            "message_ids": [e.message_id for e in entries],
            "responses": [e.response for e in entries],
            "created_ats": [e.created_at for e in entries],
        }
        with self.database.engine.begin() as conn:
            return int(conn.execute(_ADD, params).rowcount or 0)

    async def add_hard_bounces(self, outcomes: Sequence[RecipientOutcome]) -> int:
        chosen = hard_bounces(outcomes)
        if not chosen:
            return 0
        return int(await self._run("hard bounces", self._add_hard_bounces, chosen))

    def _add_hard_bounces(self, outcomes: Sequence[RecipientOutcome]) -> int:
        params = {
            "message_ids": [o.message_id for o in outcomes],
            "recipients": [o.recipient for o in outcomes],
            "responses": [o.response for o in outcomes],
            "ats": [o.at for o in outcomes],
        }
        with self.database.engine.begin() as conn:
            return int(conn.execute(_ADD_HARD_BOUNCES, params).rowcount or 0)

    async def remove(self, user_id: int, address: str) -> bool:
        return bool(await self._run("remove", self._remove, user_id, address))

    def _remove(self, user_id: int, address: str) -> bool:
        statement = delete(TABLE).where(TABLE.c.user_id == user_id, TABLE.c.address == address)
        with self.database.engine.begin() as conn:
            return bool(conn.execute(statement).rowcount)

    # -- reading ----------------------------------------------------------------------------------

    async def list(self, query: SuppressionFilter) -> SuppressionPage:
        result: SuppressionPage = await self._run("list", self._list, query)
        return result

    def _list(self, query: SuppressionFilter) -> SuppressionPage:
        with self.database.engine.connect() as conn:
            return list_page(conn, query)

    async def check(self) -> None:
        await self.database.check()


def list_page(conn: Connection, query: SuppressionFilter) -> SuppressionPage:
    """One page of the user's entries, newest first (then by address), and the filtered total."""
    conditions = [TABLE.c.user_id == query.user_id]
    if query.reason is not None:
        conditions.append(TABLE.c.reason == query.reason)
    if query.address:
        conditions.append(TABLE.c.address.contains(query.address, autoescape=True))
    if query.created_from is not None:
        conditions.append(TABLE.c.created_at >= query.created_from)
    if query.created_to is not None:
        conditions.append(TABLE.c.created_at <= query.created_to)
    where = and_(*conditions)
    page = (select(*COLUMNS).where(where)
            .order_by(TABLE.c.created_at.desc(), TABLE.c.address)
            .offset((query.page - 1) * query.per_page).limit(query.per_page))
    total = int(conn.execute(select(func.count()).select_from(TABLE).where(where)).scalar_one())
    # Past the last row the page is empty: not asked for (PostgreSQL reads every row it skips).
    beyond = (query.page - 1) * query.per_page >= total
    rows = [] if beyond else [to_record(row) for row in conn.execute(page)]
    return SuppressionPage(rows=rows, total=total)


__all__ = ["PgSuppressionStore", "hard_bounces", "list_page"]
