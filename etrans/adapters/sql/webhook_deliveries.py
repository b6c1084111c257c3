"""What ``etrans webhooks`` writes to the USEND DB: port
:class:`etrans.app.webhook_delivery_ports.WebhookDeliveryStore`.

One class for PostgreSQL and ``etrans dev``'s SQLite file: SQLAlchemy Core statements on the
models of :mod:`etrans.adapters.sql.usend_webhooks`, the upsert of the dialect in use.  Each
call is one transaction.  Claiming due retries locks the rows with ``FOR UPDATE SKIP LOCKED``
on PostgreSQL (a second ``etrans webhooks`` process skips them instead of waiting) and moves
their ``due_at`` by the lease before committing, so the HTTP attempts happen outside any
transaction and a process that dies holding a claim only delays it by the lease.  SQLite has no
row locks (the compiler drops the clause); its ``BEGIN IMMEDIATE`` serialises claimers.

Successful attempts - nearly all of them - are written by group commit
(:class:`~etrans.adapters.sql.group_commit.GroupCommit`): the attempts that finish while a
write is in flight share the next transaction (one multi-row INSERT, one UPDATE, one DELETE).

A webhook deleted while an attempt was under way: its rows are gone (``ON DELETE CASCADE``) and
writing the attempt breaks the foreign key - the attempt is then dropped, not retried.
"""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import and_, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from etrans.adapters._net.trio_pq import TrioPqConnection
from etrans.adapters.sql.group_commit import GroupCommit
from etrans.adapters.sql.usend_webhooks import Webhook, WebhookDelivery, WebhookRetry
from etrans.app.webhook_delivery_ports import PendingRetry
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    from sqlalchemy.engine import Connection

    from etrans.adapters.sql import Database
    from etrans.app.webhook_delivery_ports import DeliveryAttempt

# PostgreSQL: a group of successful attempts in one statement, sent from the Trio thread
# (:class:`~etrans.adapters._net.trio_pq.TrioPqConnection`: no worker thread, no BEGIN/COMMIT
# round trips; autocommit, the statement is atomic by itself).  Measured with bench/webhooks.py:
# BEGIN + three statements + COMMIT from a worker thread made the write ~45 % of an event's cost.
# The commit does not wait for the WAL flush (synchronous_commit off, this transaction only):
# what it writes is the attempts' log and the clearing of failures, which a crash of PostgreSQL
# itself may lose for its last moments (a retry row kept by mistake repeats a delivered event,
# with its webhook-id); a crash of etrans loses nothing: the statement is committed before the
# offset.  Prepared once per connection (parsing and planning this WITH was most of its cost).
_DELIVERED_PG = b"""
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true) AS value),
v AS (
    SELECT * FROM json_to_recordset($1::json)
        AS v(webhook_id bigint, event_id text, event_type text, attempt int, status_code int,
             error text, latency_ms int, attempted_at timestamptz)),
ins AS (
    INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, attempt, status_code,
                                    error, latency_ms, attempted_at)
    SELECT webhook_id, event_id, event_type, attempt, status_code, error, latency_ms,
           attempted_at FROM v),
healthy AS (
    UPDATE webhooks SET failing_since = NULL
    WHERE id IN (SELECT webhook_id FROM v) AND failing_since IS NOT NULL)
DELETE FROM webhook_retries AS r USING v
WHERE r.webhook_id = v.webhook_id AND r.event_id = v.event_id
  AND (SELECT value FROM relaxed) = 'off'
"""

_WEBHOOKS = Webhook.__table__
_DELIVERIES = WebhookDelivery.__table__
_RETRIES = WebhookRetry.__table__


def _attempt_row(attempt: DeliveryAttempt) -> dict[str, Any]:
    return {"webhook_id": attempt.webhook_id, "event_id": attempt.event_id,
            "event_type": attempt.event_type, "attempt": attempt.attempt,
            "status_code": attempt.status_code, "error": attempt.error,
            "latency_ms": attempt.latency_ms, "attempted_at": attempt.attempted_at}


def _retry_row(retry: PendingRetry) -> dict[str, Any]:
    return {"webhook_id": retry.webhook_id, "event_id": retry.event_id, "event": retry.event,
            "attempt": retry.attempt, "due_at": retry.due_at, "last_error": retry.last_error}


def _retry_key(webhook_id: int, event_id: str) -> Any:
    r = _RETRIES.c
    return and_(r.webhook_id == webhook_id, r.event_id == event_id)


class SqlWebhookDeliveryStore:
    name = "usend_db"

    def __init__(self, database: Database) -> None:
        self.database = database
        dialect = database.engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._connection = (TrioPqConnection.from_sqlalchemy_url(
            database.engine.url, application_name="etrans-webhooks")
            if dialect == "postgresql" else None)
        # A deleted webhook's attempt breaks the foreign key: the round is halved down to it.
        self._delivered = GroupCommit(self._write_delivered,
                                      split_on=(IntegrityError, psycopg.IntegrityError),
                                      max_items=200)

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.aclose()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self.database.run(self._transaction, fn, *args)
        except IntegrityError:
            return None  # the webhook was deleted meanwhile: nothing to record
        except SQLAlchemyError as exc:
            raise RetryLater(f"USEND DB webhook write failed: {exc.__class__.__name__}") from exc

    def _transaction(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self.database.engine.begin() as conn:
            return fn(conn, *args)

    def _upsert_retry(self, conn: Connection, retry: PendingRetry) -> None:
        statement = self._insert(_RETRIES).values(_retry_row(retry))
        statement = statement.on_conflict_do_update(
            index_elements=[_RETRIES.c.webhook_id, _RETRIES.c.event_id],
            set_={"event": statement.excluded.event, "attempt": statement.excluded.attempt,
                  "due_at": statement.excluded.due_at,
                  "last_error": statement.excluded.last_error})
        conn.execute(statement)

    async def record_delivered(self, attempt: DeliveryAttempt) -> None:
        try:
            await self._delivered.write([attempt])
        except (IntegrityError, psycopg.IntegrityError):
            return  # the webhook was deleted meanwhile
        except (SQLAlchemyError, psycopg.Error) as exc:
            raise RetryLater(f"USEND DB webhook write failed: {exc.__class__.__name__}") from exc

    async def _write_delivered(self, attempts: list[DeliveryAttempt]) -> None:
        if self._connection is None:
            await self.database.run(self._transaction, self._delivered_many, attempts)
            return
        rows = json.dumps([{**_attempt_row(a), "attempted_at": a.attempted_at.isoformat()}
                           for a in attempts])
        await self._connection.execute(_DELIVERED_PG, [rows], prepared=b"webhook_delivered")

    def _delivered_many(self, conn: Connection, attempts: list[DeliveryAttempt]) -> None:
        conn.execute(insert(_DELIVERIES).values([_attempt_row(a) for a in attempts]))
        w, r = _WEBHOOKS.c, _RETRIES.c
        conn.execute(update(_WEBHOOKS).where(w.id.in_(sorted({a.webhook_id for a in attempts})),
                                             w.failing_since.is_not(None))
                     .values(failing_since=None))
        # Also after a first attempt: an event postponed while its endpoint was busy has a row.
        conn.execute(delete(_RETRIES).where(tuple_(r.webhook_id, r.event_id).in_(
            [(a.webhook_id, a.event_id) for a in attempts])))

    async def record_failed(self, attempt: DeliveryAttempt,
                            retry: PendingRetry | None) -> datetime | None:
        result: datetime | None = await self._run(self._failed, attempt, retry)
        return result

    def _failed(self, conn: Connection, attempt: DeliveryAttempt,
                retry: PendingRetry | None) -> datetime | None:
        conn.execute(insert(_DELIVERIES), _attempt_row(attempt))
        if retry is not None:
            self._upsert_retry(conn, retry)
        else:
            conn.execute(delete(_RETRIES).where(_retry_key(attempt.webhook_id,
                                                           attempt.event_id)))
        w = _WEBHOOKS.c
        conn.execute(update(_WEBHOOKS).where(w.id == attempt.webhook_id,
                                             w.failing_since.is_(None))
                     .values(failing_since=attempt.attempted_at))
        since: datetime | None = conn.execute(
            select(w.failing_since).where(w.id == attempt.webhook_id, w.enabled.is_(True))
        ).scalar_one_or_none()
        return since

    async def postpone(self, retry: PendingRetry) -> None:
        await self._run(self._upsert_retry, retry)

    async def claim_due(self, now: datetime, limit: int,
                        lease_seconds: float) -> Sequence[PendingRetry]:
        claimed: Sequence[PendingRetry] | None = await self._run(self._claim, now, limit,
                                                                 lease_seconds)
        return claimed or []

    def _claim(self, conn: Connection, now: datetime, limit: int,
               lease_seconds: float) -> list[PendingRetry]:
        r = _RETRIES.c
        rows = conn.execute(
            select(r.webhook_id, r.event_id, r.event, r.attempt, r.due_at, r.last_error)
            .where(r.due_at <= now).order_by(r.due_at).limit(limit)
            .with_for_update(skip_locked=True)).all()
        if not rows:
            return []
        leased = now + timedelta(seconds=lease_seconds)
        for row in rows:
            conn.execute(update(_RETRIES).where(_retry_key(row.webhook_id, row.event_id))
                         .values(due_at=leased))
        return [PendingRetry(int(row.webhook_id), row.event_id, bytes(row.event),
                             int(row.attempt), row.due_at, row.last_error) for row in rows]

    async def drop_retry(self, webhook_id: int, event_id: str) -> None:
        await self._run(self._drop, webhook_id, event_id)

    def _drop(self, conn: Connection, webhook_id: int, event_id: str) -> None:
        conn.execute(delete(_RETRIES).where(_retry_key(webhook_id, event_id)))

    async def disable(self, webhook_id: int, reason: str) -> bool:
        return bool(await self._run(self._disable, webhook_id, reason))

    def _disable(self, conn: Connection, webhook_id: int, reason: str) -> bool:
        w = _WEBHOOKS.c
        changed = conn.execute(update(_WEBHOOKS).where(w.id == webhook_id, w.enabled.is_(True))
                               .values(enabled=False, disabled_reason=reason)).rowcount
        if not changed:
            return False
        conn.execute(delete(_RETRIES).where(_RETRIES.c.webhook_id == webhook_id))
        return True

    async def retry_backlog(self, now: datetime) -> tuple[int, float]:
        return await self.database.run(self._retry_backlog, now)

    def _retry_backlog(self, now: datetime) -> tuple[int, float]:
        # count(*): an index-only scan of ix_webhook_retries_due_at; min: one index lookup.
        r = _RETRIES.c
        with self.database.engine.connect() as conn:
            waiting, earliest = conn.execute(select(func.count(), func.min(r.due_at))).one()
        if earliest is None:
            return 0, 0.0
        if earliest.tzinfo is None:  # SQLite keeps naive UTC
            earliest = earliest.replace(tzinfo=UTC)
        return int(waiting), max(0.0, (now - earliest).total_seconds())

    async def check(self) -> None:
        await self.database.check()
