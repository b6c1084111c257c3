"""Read side of the delivery logs (MongoDB, written by the fetchlog worker): GET /logs.

Documents have the fields of the spec's "MongoDB Document" (``event``, ``timestamp`` as a BSON
date, ``action``, ``sender``, ``recipient``, ``response``, ``from_domain``, ``message_id``,
``to_domain``, ...) plus etrans's ``source`` and ``user_id`` (recorded by fetchlog).  Every query
is restricted to what the user may see, :func:`visible`: their own messages (index
``idx_user_id_timestamp``) or one of their verified domains from its verification on (index
``idx_from_domain_timestamp``), so MongoDB walks only the user's documents and no message id list
is ever sent.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from etrans.app.records import LogGroup

if TYPE_CHECKING:
    from collections.abc import Callable

    from etrans.adapters.mongo.store import MongoStore
    from etrans.app.records import LogFilter

T = TypeVar("T")
_PROJECTION = {"_id": 0, "event": 1, "timestamp": 1, "action": 1, "response": 1, "sender": 1,
               "recipient": 1, "from_domain": 1, "to_domain": 1, "message_id": 1, "source": 1}


def visible(query: LogFilter) -> list[dict[str, Any]]:
    """The ``$or`` branches of the documents the user may see (each one rides an index)."""
    branches: list[dict[str, Any]] = []
    if query.owner is not None:
        branches.append({"user_id": query.owner})
    branches += [{"from_domain": name, "timestamp": {"$gte": since}}
                 for name, since in query.domains]
    return branches


def mongo_filter(query: LogFilter) -> dict[str, Any]:
    branches = visible(query)
    clauses: dict[str, Any] = branches[0] if len(branches) == 1 else {"$or": branches}
    filters: dict[str, Any] = {}
    moment: dict[str, Any] = {}
    if query.after is not None:
        moment["$gt"] = query.after
    if query.before is not None:
        moment["$lt"] = query.before
    if moment:
        filters["timestamp"] = moment
    if query.actions:
        filters["action"] = {"$in": list(query.actions)}
    for name in ("sender", "recipient", "message_id"):
        value = getattr(query, name)
        if value is not None:
            filters[name] = value
    if query.source == "API":
        filters["source"] = "API"
    elif query.source == "SMTP":
        # A document not yet backfilled counts as SMTP (docs/delivery-logs.md).
        filters["source"] = {"$ne": "API"}
    if not filters:
        return clauses
    if set(filters) & set(clauses):
        return {"$and": [clauses, filters]}
    return {**clauses, **filters}


class MongoLogReader:
    def __init__(self, store: MongoStore) -> None:
        self._store = store

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(partial(fn, *args), limiter=self._store.limiter)

    async def counts(self, query: LogFilter) -> list[LogGroup]:
        if query.empty:
            return []
        return await self._run(self._counts, query)

    def _counts(self, query: LogFilter) -> list[LogGroup]:
        pipeline = [
            {"$match": mongo_filter(query)},
            {"$group": {"_id": {"a": "$action", "e": "$event", "s": "$source"},
                        "n": {"$sum": 1}}},
        ]
        return [
            LogGroup(action=g["_id"].get("a"), event=g["_id"].get("e"),
                     source=g["_id"].get("s"), count=int(g["n"]))
            for g in self._store.collection.aggregate(pipeline)
        ]

    async def page(self, query: LogFilter, *, skip: int, limit: int) -> list[dict[str, Any]]:
        if query.empty:
            return []
        return await self._run(self._page, query, skip, limit)

    def _page(self, query: LogFilter, skip: int, limit: int) -> list[dict[str, Any]]:
        cursor = (self._store.collection.find(mongo_filter(query), _PROJECTION)
                  .sort(list(query.sorts)).skip(skip).limit(limit))
        return list(cursor)
