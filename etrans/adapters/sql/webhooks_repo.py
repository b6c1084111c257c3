"""Webhook endpoints in the USEND DB (``webhooks``, ``webhook_deliveries``): port
:class:`etrans.app.webhook_ports.WebhookStore` of the API's use cases.

Portable SQLAlchemy Core, so the same class runs on PostgreSQL and on ``etrans dev``'s SQLite
file (``tests/contract/test_webhook_store_contract.py`` holds both to one contract).  The cap on
endpoints per user is checked and the row inserted in one transaction that first takes a lock
per user (PostgreSQL: ``pg_advisory_xact_lock``; SQLite's ``BEGIN IMMEDIATE`` already
serialises writers), so concurrent creations cannot exceed it.  Every statement is within the
user's rows.  The blocking work runs in ``Database.run``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import OperationalError

from etrans.adapters.sql.usend_webhooks import Webhook as WebhookRow
from etrans.adapters.sql.usend_webhooks import WebhookDelivery
from etrans.app.webhook_records import DeliveryAttempt, Webhook
from etrans.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection

    from etrans.adapters.sql import Database
    from etrans.app.webhook_records import WebhookChanges

P = ParamSpec("P")
T = TypeVar("T")
_W = WebhookRow.__table__
_D = WebhookDelivery.__table__
# pg_advisory_xact_lock(classid, objid): this class id names "creating a user's webhooks".
_LOCK_CLASS = 0x7768_6B73  # "whks"


def _webhook(row: Any) -> Webhook:
    return Webhook(id=int(row.id), user_id=int(row.user_id), url=row.url,
                   description=row.description,
                   event_types=tuple(str(t) for t in row.event_types or ()),
                   enabled=bool(row.enabled), disabled_reason=row.disabled_reason,
                   failing_since=row.failing_since, created_at=row.created_at,
                   updated_at=row.updated_at)


def _attempt(row: Any) -> DeliveryAttempt:
    return DeliveryAttempt(event_id=row.event_id, event_type=row.event_type,
                           attempt=int(row.attempt), status_code=row.status_code,
                           error=row.error, latency_ms=row.latency_ms,
                           attempted_at=row.attempted_at)


def _columns() -> list[Any]:
    return [c for c in _W.c if c.name != "secret_sealed"]


class SqlWebhooks:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await self.db.run(fn, *args, **kwargs)
        except OperationalError as exc:
            raise UpstreamUnavailable("USEND DB unavailable", retry_after_seconds=5) from exc

    async def create(self, user_id: int, *, url: str, description: str | None,
                     event_types: tuple[str, ...], secret_sealed: str,
                     max_per_user: int) -> Webhook | None:
        row = {"user_id": user_id, "url": url, "description": description,
               "event_types": list(event_types), "secret_sealed": secret_sealed}
        return await self._run(self._create, row, max_per_user)

    async def page(self, user_id: int, *, page: int, per_page: int
                   ) -> tuple[list[Webhook], int]:
        return await self._run(self._page, user_id, page, per_page)

    async def get(self, user_id: int, webhook_id: int) -> Webhook | None:
        return await self._run(self._get, user_id, webhook_id)

    async def update(self, user_id: int, webhook_id: int, changes: WebhookChanges
                     ) -> Webhook | None:
        return await self._run(self._update, user_id, webhook_id, changes)

    async def delete(self, user_id: int, webhook_id: int) -> bool:
        return await self._run(self._delete, user_id, webhook_id)

    async def deliveries(self, user_id: int, webhook_id: int, *, page: int, per_page: int
                         ) -> tuple[list[DeliveryAttempt], int] | None:
        return await self._run(self._deliveries, user_id, webhook_id, page, per_page)

    # -- blocking ------------------------------------------------------------------------------

    def _create(self, row: dict[str, Any], max_per_user: int) -> Webhook | None:
        user_id = row["user_id"]
        with self.db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:class_id, :object_id)"),
                             {"class_id": _LOCK_CLASS, "object_id": user_id % 2**31})
            count = conn.scalar(select(func.count()).select_from(_W)
                                .where(_W.c.user_id == user_id)) or 0
            if count >= max_per_user:
                return None
            return _webhook(conn.execute(insert(_W).returning(*_columns()), row).one())

    def _page(self, user_id: int, page: int, per_page: int) -> tuple[list[Webhook], int]:
        where = _W.c.user_id == user_id
        with self.db.engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(_W).where(where)) or 0
            rows = conn.execute(select(*_columns()).where(where)
                                .order_by(_W.c.created_at.desc(), _W.c.id.desc())
                                .offset((page - 1) * per_page).limit(per_page)).all()
        return [_webhook(r) for r in rows], total

    def _get(self, user_id: int, webhook_id: int) -> Webhook | None:
        with self.db.engine.connect() as conn:
            return self._read(conn, user_id, webhook_id)

    @staticmethod
    def _read(conn: Connection, user_id: int, webhook_id: int) -> Webhook | None:
        row = conn.execute(select(*_columns()).where(_W.c.id == webhook_id,
                                                     _W.c.user_id == user_id)).first()
        return _webhook(row) if row is not None else None

    def _update(self, user_id: int, webhook_id: int, changes: WebhookChanges
                ) -> Webhook | None:
        values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
        if changes.url is not None:
            values["url"] = changes.url
        if changes.event_types is not None:
            values["event_types"] = list(changes.event_types)
        if changes.description is not None:
            values["description"] = changes.description
        if changes.enabled is not None:
            values["enabled"] = changes.enabled
            if changes.enabled:
                values.update(failing_since=None, disabled_reason=None)
        with self.db.engine.begin() as conn:
            found = conn.execute(update(_W).where(_W.c.id == webhook_id, _W.c.user_id == user_id)
                                 .values(values).returning(*_columns())).first()
        return _webhook(found) if found is not None else None

    def _delete(self, user_id: int, webhook_id: int) -> bool:
        with self.db.engine.begin() as conn:
            gone = conn.execute(delete(_W).where(_W.c.id == webhook_id, _W.c.user_id == user_id)
                                .returning(_W.c.id)).first()
        return gone is not None

    def _deliveries(self, user_id: int, webhook_id: int, page: int, per_page: int
                    ) -> tuple[list[DeliveryAttempt], int] | None:
        with self.db.engine.connect() as conn:
            if self._read(conn, user_id, webhook_id) is None:
                return None
            where = _D.c.webhook_id == webhook_id
            total = conn.scalar(select(func.count()).select_from(_D).where(where)) or 0
            rows = conn.execute(select(_D).where(where)
                                .order_by(_D.c.attempted_at.desc(), _D.c.id.desc())
                                .offset((page - 1) * per_page).limit(per_page)).all()
        return [_attempt(r) for r in rows], total
