"""The delivery-log store of ``etrans dev`` on SQLite (``logs.sqlite3``): MongoDB's stand-in.

:class:`SqliteLogStore` is both sides of the collection:

- fetchlog's :class:`~etrans.app.ports.LogDocumentWriter`: idempotent inserts (unique
  ``event_id``; an event stored before is counted as a duplicate, as MongoDB's error 11000 is);
- GET /logs's :class:`~etrans.app.ports.LogReader`: the filters of
  :func:`etrans.adapters.mongo_logs.mongo_filter` (the user's domains, ``timestamp`` strictly
  between ``after`` and ``before``, actions, sender, recipient, message_id, message ids included
  or excluded), the same groups for the stats and the same sorts.

Documents keep the fields of ``docs/wire-formats.md``; ``timestamp`` is stored as integer
microseconds since the epoch (exact ordering and comparison) and returned as an aware UTC datetime.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from etrans.app.records import LogGroup
from etrans.domain.delivery_log import DOCUMENT_FIELDS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from etrans.app.records import LogFilter

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TEXT_FIELDS = tuple(name for name in DOCUMENT_FIELDS if name != "timestamp")
_READ_FIELDS = ("event", "timestamp", "action", "response", "sender", "recipient", "from_domain",
                "to_domain", "message_id")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL,
    {", ".join(f"{name} TEXT NOT NULL DEFAULT ''" for name in _TEXT_FIELDS)});
CREATE UNIQUE INDEX IF NOT EXISTS uniq_event_id ON logs (event_id);
CREATE INDEX IF NOT EXISTS idx_from_domain_timestamp ON logs (from_domain, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_message_id ON logs (message_id);
CREATE INDEX IF NOT EXISTS idx_event_timestamp ON logs (event, timestamp DESC);
"""
INDEXES = ["idx_from_domain_timestamp", "idx_message_id", "idx_event_timestamp", "uniq_event_id"]


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class InsertResult:
    inserted: int
    duplicates: int


class SqliteLogStore:
    name = "logs"

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()
        self.limiter = trio.CapacityLimiter(4)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(partial(fn, *args), limiter=self.limiter)

    # -- LogDocumentWriter -----------------------------------------------------------------------

    def _ensure_indexes(self) -> list[str]:
        with self._lock:
            self._db.executescript(_SCHEMA)
        return list(INDEXES)

    async def ensure_indexes(self) -> list[str]:
        return await self._run(self._ensure_indexes)

    def _insert(self, documents: Sequence[Mapping[str, Any]]) -> InsertResult:
        columns = ("timestamp", *_TEXT_FIELDS)
        rows = [(_micros(doc["timestamp"]), *(str(doc.get(name) or "") for name in _TEXT_FIELDS))
                for doc in documents]
        statement = (f"INSERT OR IGNORE INTO logs ({', '.join(columns)})"
                     f" VALUES ({', '.join('?' for _ in columns)})")
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN")
            try:
                self._db.executemany(statement, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            inserted = self._db.total_changes - before
        return InsertResult(inserted, len(rows) - inserted)

    async def insert(self, documents: Sequence[Mapping[str, Any]]) -> InsertResult:
        if not documents:
            return InsertResult(0, 0)
        return await self._run(self._insert, list(documents))

    # -- LogReader -------------------------------------------------------------------------------

    @staticmethod
    def _where(query: LogFilter, include_ids: Sequence[str] | None = None,
               exclude_ids: Sequence[str] | None = None) -> tuple[str, list[Any]]:
        clauses = [f"from_domain IN ({', '.join('?' for _ in query.domains)})"]
        params: list[Any] = list(query.domains)
        if query.after is not None:
            clauses.append("timestamp > ?")
            params.append(_micros(query.after))
        if query.before is not None:
            clauses.append("timestamp < ?")
            params.append(_micros(query.before))
        if query.actions:
            clauses.append(f"action IN ({', '.join('?' for _ in query.actions)})")
            params += list(query.actions)
        for name in ("sender", "recipient", "message_id"):
            value = getattr(query, name)
            if value is not None:
                clauses.append(f"{name} = ?")
                params.append(value)
        if include_ids is not None:
            clauses.append(f"message_id IN ({', '.join('?' for _ in include_ids)})")
            params += list(include_ids)
        if exclude_ids is not None:
            clauses.append(f"message_id NOT IN ({', '.join('?' for _ in exclude_ids)})")
            params += list(exclude_ids)
        return " AND ".join(clauses), params

    def _groups(self, query: LogFilter) -> list[LogGroup]:
        where, params = self._where(query)
        with self._lock:
            rows = self._db.execute(
                f"SELECT message_id, action, event, COUNT(*) FROM logs WHERE {where}"
                " GROUP BY message_id, action, event", params).fetchall()
        return [LogGroup(message_id=m, action=a, event=e, count=int(n)) for m, a, e, n in rows]

    async def groups(self, query: LogFilter) -> list[LogGroup]:
        if not query.domains:
            return []
        return await self._run(self._groups, query)

    def _page(self, query: LogFilter, include_ids: Sequence[str] | None,
              exclude_ids: Sequence[str] | None, skip: int, limit: int) -> list[dict[str, Any]]:
        from etrans.app.logs import SORTABLE

        where, params = self._where(query, include_ids, exclude_ids)
        order = [f"{name} {'DESC' if direction < 0 else 'ASC'}"
                 for name, direction in query.sorts if name in SORTABLE]
        order.append("id ASC")
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_READ_FIELDS)} FROM logs WHERE {where}"
                f" ORDER BY {', '.join(order)} LIMIT ? OFFSET ?", [*params, limit, skip]).fetchall()
        documents = []
        for row in rows:
            document = dict(zip(_READ_FIELDS, row, strict=True))
            document["timestamp"] = _EPOCH + timedelta(microseconds=document["timestamp"])
            documents.append(document)
        return documents

    async def page(self, query: LogFilter, *, include_ids: Sequence[str] | None,
                   exclude_ids: Sequence[str] | None, skip: int,
                   limit: int) -> list[dict[str, Any]]:
        if not query.domains:
            return []
        return await self._run(self._page, query, include_ids, exclude_ids, skip, limit)

    async def check(self) -> None:
        await self._run(self._ensure_indexes)

    def close(self) -> None:
        with self._lock:
            self._db.close()
