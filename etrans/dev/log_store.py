"""The delivery-log store of ``etrans dev`` on SQLite (``logs.sqlite3``): MongoDB's stand-in.

:class:`SqliteLogStore` is both sides of the collection:

- fetchlog's :class:`~etrans.app.ports.LogDocumentWriter` and
  :class:`~etrans.app.ports.LogLabels`: idempotent inserts (unique ``event_id``; an event stored
  before is counted as a duplicate, as MongoDB's error 11000 is) and the backfill of ``source`` /
  ``user_id``;
- GET /logs's :class:`~etrans.app.ports.LogReader`: the filters of
  :func:`etrans.adapters.mongo.log_reader.mongo_filter` (the user's own messages or verified domains
  from their verification on, ``timestamp`` strictly between ``after`` and ``before``, actions,
  sender, recipient, message_id, source), the same counts for the stats and the same sorts.

Documents keep the fields of ``docs/wire-formats.md``; ``timestamp`` is stored as integer
microseconds since the epoch, cut to MongoDB's millisecond (exact ordering and comparison), and
returned as an aware UTC datetime;
``source``, ``user_id`` and ``bounce_class`` are NULL where MongoDB's document has no such field.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from etrans.app.records import LogGroup
from etrans.domain.delivery_log import DOCUMENT_FIELDS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    from etrans.app.records import LogFilter

T = TypeVar("T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TEXT_FIELDS = tuple(name for name in DOCUMENT_FIELDS if name != "timestamp")
_READ_FIELDS = ("event", "timestamp", "action", "response", "sender", "recipient", "from_domain",
                "to_domain", "message_id", "source")

_TABLE = f"""
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL,
    {", ".join(f"{name} TEXT NOT NULL DEFAULT ''" for name in _TEXT_FIELDS)},
    source TEXT, user_id INTEGER, bounce_class TEXT);
"""
# Added after the first release: a logs.sqlite3 of an older etrans dev gets them at start.
_LATER_COLUMNS = {"source": "TEXT", "user_id": "INTEGER", "bounce_class": "TEXT"}
_INDEXES = """
CREATE TABLE IF NOT EXISTS log_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS uniq_event_id ON logs (event_id);
CREATE INDEX IF NOT EXISTS idx_from_domain_timestamp ON logs (from_domain, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_user_id_timestamp ON logs (user_id, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_message_id ON logs (message_id);
CREATE INDEX IF NOT EXISTS idx_event_timestamp ON logs (event, timestamp DESC);
"""
INDEXES = ["idx_from_domain_timestamp", "idx_user_id_timestamp", "idx_message_id",
           "idx_event_timestamp", "uniq_event_id"]


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch, cut to the millisecond as BSON dates are (stored times and
    query bounds alike), so that comparisons give MongoDB's answers."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1) * 1000


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

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(partial(fn, *args), limiter=self.limiter)

    # -- LogDocumentWriter -----------------------------------------------------------------------

    def _ensure_indexes(self) -> list[str]:
        with self._lock:
            self._db.executescript(_TABLE)
            present = {row[1] for row in self._db.execute("PRAGMA table_info(logs)")}
            for name, kind in _LATER_COLUMNS.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE logs ADD COLUMN {name} {kind}")
            self._db.executescript(_INDEXES)
        return list(INDEXES)

    async def ensure_indexes(self) -> list[str]:
        return await self._run(self._ensure_indexes)

    def _insert(self, documents: Sequence[Mapping[str, Any]]) -> InsertResult:
        columns = ("timestamp", *_TEXT_FIELDS, "source", "user_id", "bounce_class")
        rows = [(_micros(doc["timestamp"]), *(str(doc.get(name) or "") for name in _TEXT_FIELDS),
                 doc.get("source"), doc.get("user_id"), doc.get("bounce_class"))
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

    # -- LogLabels ------------------------------------------------------------------------------

    def _unlabelled(self, after: int | None, limit: int) -> tuple[list[str], int | None]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, message_id FROM logs WHERE source IS NULL AND id > ?"
                " ORDER BY id LIMIT ?", (after or 0, limit)).fetchall()
        position = rows[-1][0] if len(rows) == limit else None
        return [m for _, m in rows], position

    async def unlabelled(self, after: Any, limit: int) -> tuple[list[str], Any]:
        return await self._run(self._unlabelled, after, limit)

    def _label(self, message_ids: Sequence[str], source: str, user_id: int | None) -> int:
        with self._lock:
            before = self._db.total_changes
            for start in range(0, len(message_ids), 500):
                chunk = list(message_ids[start:start + 500])
                self._db.execute(
                    f"UPDATE logs SET source = ?, user_id = ? WHERE source IS NULL"
                    f" AND message_id IN ({', '.join('?' for _ in chunk)})",
                    [source, user_id, *chunk])
            return self._db.total_changes - before

    async def label(self, message_ids: Sequence[str], source: str,
                    user_id: int | None) -> int:
        if not message_ids:
            return 0
        return await self._run(self._label, list(message_ids), source, user_id)

    def _labels_complete(self) -> bool:
        with self._lock:
            row = self._db.execute("SELECT value FROM log_state WHERE name = 'labels'").fetchone()
        return row is not None and row[0] == "complete"

    async def labels_complete(self) -> bool:
        return await self._run(self._labels_complete)

    def _set_labels_complete(self, complete: bool) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO log_state (name, value) VALUES ('labels', ?)",
                             ("complete" if complete else "pending",))

    async def set_labels_complete(self, complete: bool) -> None:
        await self._run(self._set_labels_complete, complete)

    # -- LogReader -------------------------------------------------------------------------------

    @staticmethod
    def _where(query: LogFilter) -> tuple[str, list[Any]]:
        visible: list[str] = []
        params: list[Any] = []
        if query.owner is not None:
            visible.append("user_id = ?")
            params.append(query.owner)
        for name, since in query.domains:
            visible.append("(from_domain = ? AND timestamp >= ?)")
            params += [name, _micros(since)]
        clauses = [f"({' OR '.join(visible)})"]
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
        if query.source == "API":
            clauses.append("source = 'API'")
        elif query.source == "SMTP":
            clauses.append("(source IS NULL OR source != 'API')")
        return " AND ".join(clauses), params

    def _counts(self, query: LogFilter) -> list[LogGroup]:
        where, params = self._where(query)
        with self._lock:
            rows = self._db.execute(
                f"SELECT action, event, source, COUNT(*) FROM logs WHERE {where}"
                " GROUP BY action, event, source", params).fetchall()
        return [LogGroup(action=a, event=e, source=s, count=int(n)) for a, e, s, n in rows]

    async def counts(self, query: LogFilter) -> list[LogGroup]:
        if query.empty:
            return []
        return await self._run(self._counts, query)

    def _page(self, query: LogFilter, skip: int, limit: int) -> list[dict[str, Any]]:
        from etrans.app.logs import SORTABLE

        where, params = self._where(query)
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
            if document["source"] is None:
                del document["source"]  # as MongoDB: no field
            documents.append(document)
        return documents

    async def page(self, query: LogFilter, *, skip: int, limit: int) -> list[dict[str, Any]]:
        if query.empty:
            return []
        return await self._run(self._page, query, skip, limit)

    async def check(self) -> None:
        await self._run(self._ensure_indexes)

    def close(self) -> None:
        with self._lock:
            self._db.close()
