"""The delivery-log collection, write side: indexes at start, idempotent ``insert_many``.

Owned by the fetchlog worker.  pymongo is synchronous, so every call runs in a worker thread
behind a CapacityLimiter.  Idempotence rests on the unique index on ``event_id``: a replayed event
fails with a duplicate-key error (code 11000), which :meth:`MongoLogWriter.insert` counts and
ignores; every other failure is raised as :class:`~etrans.errors.RetryLater`, so the pipeline
retries the batch and commits nothing past it.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

import trio

from etrans.app.metrics import LogInsertMetrics
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pymongo import MongoClient
    from pymongo.collection import Collection

    from etrans.settings import MongoSettings

DUPLICATE_KEY = 11000

# name -> (keys, options): the spec's three query indexes, the unique key of idempotence and
# GET /logs's "own messages" branch (``user_id``, recorded by fetchlog).
INDEXES: Mapping[str, tuple[list[tuple[str, int]], dict[str, Any]]] = {
    "idx_from_domain_timestamp": ([("from_domain", 1), ("timestamp", -1)], {}),
    "idx_user_id_timestamp": ([("user_id", 1), ("timestamp", -1)], {}),
    "idx_message_id": ([("message_id", 1)], {}),
    "idx_event_timestamp": ([("event", 1), ("timestamp", -1)], {}),
    "uniq_event_id": ([("event_id", 1)], {"unique": True}),
}


@dataclass(frozen=True)
class InsertResult:
    inserted: int
    duplicates: int  # already stored (a replay or a retried batch)


class MongoLogWriter:
    """Writes log documents into ``MONGODB_DBNAME.MONGODB_COLLECTION``."""

    name = "mongodb"

    def __init__(
        self,
        settings: MongoSettings,
        *,
        insert_timeout: float = 10.0,
        threads: int = 10,
        server_selection_timeout: float = 5.0,
        inserts: LogInsertMetrics | None = None,
    ) -> None:
        from pymongo import MongoClient

        self.insert_timeout = insert_timeout
        # Each insert_many that MongoDB answered: its time (in the thread, around the call
        # alone: not the wait for a thread) and its documents.
        self.inserts = inserts or LogInsertMetrics()
        self._client: MongoClient[dict[str, Any]] = MongoClient(
            settings.uri.get(),
            tz_aware=True,
            serverSelectionTimeoutMS=int(server_selection_timeout * 1000),
            connectTimeoutMS=int(server_selection_timeout * 1000),
            # A write must not hang longer than its timeout on a half-open connection.
            socketTimeoutMS=int(insert_timeout * 1000),
            maxPoolSize=max(threads, 1),
            # Our own retry loop (the pipeline's) owns retries: the batch is retried whole.
            retryWrites=False,
        )
        self.collection: Collection[dict[str, Any]] = self._client[settings.dbname][
            settings.collection
        ]
        # etrans's own bookkeeping (the backfill marker), beside the spec's collection.
        self.state: Collection[dict[str, Any]] = self._client[settings.dbname][
            f"{settings.collection}_etrans_state"
        ]
        self.limiter = trio.CapacityLimiter(max(threads, 1))
        self._probe_limiter = trio.CapacityLimiter(1)  # /readyz: not a request slot

    # -- indexes ---------------------------------------------------------------------------------

    def _ensure_indexes(self) -> list[str]:
        from pymongo import IndexModel

        models = [IndexModel(keys, name=name, **options)
                  for name, (keys, options) in INDEXES.items()]
        return list(self.collection.create_indexes(models))

    async def ensure_indexes(self) -> list[str]:
        """Create the indexes (a no-op when they exist); raises when MongoDB does not answer."""
        return await trio.to_thread.run_sync(
            self._ensure_indexes, limiter=self.limiter, abandon_on_cancel=True
        )

    # -- writes ----------------------------------------------------------------------------------

    def _insert(self, documents: Sequence[Mapping[str, Any]]) -> InsertResult:
        import pymongo
        from pymongo.errors import BulkWriteError, PyMongoError

        # insert_many adds ``_id`` to the dicts it is given: hand it copies, so that a retried
        # batch does not carry ids from an attempt that may or may not have been stored.
        batch = [dict(document) for document in documents]
        started = perf_counter()
        try:
            with pymongo.timeout(self.insert_timeout):
                result = self.collection.insert_many(batch, ordered=False)
        except BulkWriteError as exc:
            self._observe(started, len(batch))
            errors = exc.details.get("writeErrors", [])
            others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if others or exc.details.get("writeConcernErrors"):
                first = others[0] if others else exc.details["writeConcernErrors"][0]
                detail = first.get("errmsg", first)
                raise RetryLater(f"MongoDB insert_many failed: {detail}") from exc
            return InsertResult(int(exc.details.get("nInserted", 0)), len(errors))
        except PyMongoError as exc:
            raise RetryLater(f"MongoDB unavailable: {exc.__class__.__name__}: {exc}") from exc
        self._observe(started, len(batch))
        return InsertResult(len(result.inserted_ids), 0)

    def _observe(self, started: float, documents: int) -> None:
        self.inserts.seconds.observe(perf_counter() - started)
        self.inserts.documents.observe(documents)

    async def insert(self, documents: Sequence[Mapping[str, Any]]) -> InsertResult:
        """Store ``documents`` (unordered); events already stored are counted, not errors."""
        if not documents:
            return InsertResult(0, 0)
        # abandon_on_cancel: a timed-out batch's thread may still finish its write; the retry
        # then meets duplicate keys, which is exactly the idempotent path.
        return await trio.to_thread.run_sync(
            self._insert, documents, limiter=self.limiter, abandon_on_cancel=True
        )

    # -- the backfill of ``source`` / ``user_id`` (LogLabels) -------------------------------------

    def _unlabelled(self, after: Any, limit: int) -> tuple[list[str], Any]:
        clauses: dict[str, Any] = {"source": {"$exists": False}}
        if after is not None:
            clauses["_id"] = {"$gt": after}
        rows = list(self.collection.find(clauses, {"_id": 1, "message_id": 1})
                    .sort("_id", 1).limit(limit))
        position = rows[-1]["_id"] if len(rows) == limit else None
        return [str(row.get("message_id") or "") for row in rows], position

    async def unlabelled(self, after: Any, limit: int) -> tuple[list[str], Any]:
        return await trio.to_thread.run_sync(self._unlabelled, after, limit,
                                             limiter=self.limiter, abandon_on_cancel=True)

    def _label(self, message_ids: Sequence[str], source: str, user_id: int | None) -> int:
        values: dict[str, Any] = {"source": source}
        if user_id is not None:
            values["user_id"] = user_id
        result = self.collection.update_many(
            {"message_id": {"$in": list(message_ids)}, "source": {"$exists": False}},
            {"$set": values})
        return int(result.modified_count)

    async def label(self, message_ids: Sequence[str], source: str,
                    user_id: int | None) -> int:
        if not message_ids:
            return 0
        return await trio.to_thread.run_sync(self._label, message_ids, source, user_id,
                                             limiter=self.limiter, abandon_on_cancel=True)

    def _labels_complete(self) -> bool:
        return self.state.find_one({"_id": "labels", "complete": True}) is not None

    async def labels_complete(self) -> bool:
        return await trio.to_thread.run_sync(self._labels_complete, limiter=self.limiter,
                                             abandon_on_cancel=True)

    def _set_labels_complete(self, complete: bool) -> None:
        self.state.replace_one({"_id": "labels"}, {"_id": "labels", "complete": complete},
                               upsert=True)

    async def set_labels_complete(self, complete: bool) -> None:
        await trio.to_thread.run_sync(self._set_labels_complete, complete, limiter=self.limiter,
                                      abandon_on_cancel=True)

    def _ping(self) -> None:
        self._client.admin.command("ping")

    async def check(self) -> None:
        await trio.to_thread.run_sync(self._ping, limiter=self._probe_limiter,
                                      abandon_on_cancel=True)

    def close(self) -> None:
        self._client.close()
