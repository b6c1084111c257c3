"""sendmail's view of the domains' tracking flags: port
:class:`etrans.app.ports.TrackingFlagsSource`.

The flags are the ``domain_tracking_settings`` row (USEND DB, written by PATCH /domains/{id}) of
the user's live domain of that name.  The domain's id is read where the billing mode keeps the
domains: ``local_domain`` of the same USEND DB (one join), or the Billing DB's ``domain``
(``domains_db`` given: BILLING_V4_URI set).  Answers are kept ``cache_seconds`` (default 60 s,
like the DKIM keys of :mod:`etrans.adapters.sql.dkim_key_source`), so a change takes effect
within that; the database unreachable: the expired answer is used if there is one, else
:class:`etrans.errors.RetryLater` (the email waits, as for any outage).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import column, select, table
from sqlalchemy.exc import SQLAlchemyError

from etrans.adapters.sql import usend as own
from etrans.errors import RetryLater
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.adapters.sql import Database

log = get_logger(__name__)

DEFAULT_CACHE_SECONDS = 60.0
_MAX_CACHED = 10_000
_billing_domain = table("domain", column("id"), column("user_id"), column("name"),
                        column("deleted_at"))

_Entry = tuple[float, tuple[bool, bool]]


class SqlTrackingFlags:
    def __init__(self, usend_db: Database, domains_db: Database | None = None, *,
                 cache_seconds: float = DEFAULT_CACHE_SECONDS) -> None:
        self._usend = usend_db
        self._domains = domains_db
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, str], _Entry] = {}

    async def tracking_flags(self, user_id: str, domain: str) -> tuple[bool, bool]:
        domain = domain.lower()
        now = time.monotonic()
        hit = self._cache.get((user_id, domain))
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            flags = await self._load(user_id, domain)
        except RetryLater:
            if hit is None:
                raise
            log.warning("tracking flags unavailable, using the expired cached answer",
                        domain=domain)
            return hit[1]
        if self.cache_seconds > 0:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[(user_id, domain)] = (now + self.cache_seconds, flags)
        return flags

    async def _load(self, user_id: str, domain: str) -> tuple[bool, bool]:
        if not user_id.isdigit():
            return False, False
        try:
            if self._domains is None:
                return await self._usend.run(self._local_flags, int(user_id), domain)
            ids = await self._domains.run(self._billing_ids, int(user_id), domain)
            if not ids:
                return False, False
            return await self._usend.run(self._flags_of, int(user_id), ids)
        except SQLAlchemyError as exc:
            raise RetryLater(f"database unavailable reading tracking flags: "
                             f"{exc.__class__.__name__}") from exc

    # -- blocking ------------------------------------------------------------------------------

    def _local_flags(self, user_id: int, domain: str) -> tuple[bool, bool]:
        d: Any = own.LocalDomain.__table__
        t: Any = own.DomainTrackingSettings.__table__
        query = (select(t.c.click_tracking, t.c.open_tracking)
                 .select_from(d.join(t, t.c.domain_id == d.c.id))
                 .where(d.c.user_id == user_id, d.c.name == domain, d.c.deleted_at.is_(None),
                        t.c.user_id == user_id)
                 .order_by(d.c.id.desc()).limit(1))
        with self._usend.engine.connect() as conn:
            row = conn.execute(query).first()
        return (False, False) if row is None else (bool(row[0]), bool(row[1]))

    def _billing_ids(self, user_id: int, domain: str) -> list[int]:
        d = _billing_domain
        assert self._domains is not None
        query = (select(d.c.id).where(d.c.user_id == user_id, d.c.name == domain,
                                      d.c.deleted_at.is_(None))
                 .order_by(d.c.id.desc()).limit(1))
        with self._domains.engine.connect() as conn:
            return [int(value) for value in conn.execute(query).scalars()]

    def _flags_of(self, user_id: int, ids: list[int]) -> tuple[bool, bool]:
        t: Any = own.DomainTrackingSettings.__table__
        query = (select(t.c.click_tracking, t.c.open_tracking)
                 .where(t.c.domain_id.in_(ids), t.c.user_id == user_id).limit(1))
        with self._usend.engine.connect() as conn:
            row = conn.execute(query).first()
        return (False, False) if row is None else (bool(row[0]), bool(row[1]))

    def statistics(self) -> dict[str, int]:
        return {"cached": len(self._cache)}
