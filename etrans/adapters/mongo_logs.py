"""Read side of the delivery logs (MongoDB, written by the fetchlog worker): GET /logs.

Documents have the fields of the spec's "MongoDB Document" (``event``, ``timestamp`` as a BSON
date, ``action``, ``sender``, ``recipient``, ``response``, ``from_domain``, ``message_id``,
``to_domain``, ...).  Every query is restricted to ``from_domain $in <the user's domains>``
(index ``idx_from_domain_timestamp``).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from etrans.app.records import LogGroup

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.adapters.mongo import MongoStore
    from etrans.app.records import LogFilter

_PROJECTION = {"_id": 0, "event": 1, "timestamp": 1, "action": 1, "response": 1, "sender": 1,
               "recipient": 1, "from_domain": 1, "to_domain": 1, "message_id": 1}


def mongo_filter(query: LogFilter) -> dict[str, Any]:
    clauses: dict[str, Any] = {"from_domain": {"$in": list(query.domains)}}
    moment: dict[str, Any] = {}
    if query.after is not None:
        moment["$gt"] = query.after
    if query.before is not None:
        moment["$lt"] = query.before
    if moment:
        clauses["timestamp"] = moment
    if query.actions:
        clauses["action"] = {"$in": list(query.actions)}
    for name in ("sender", "recipient", "message_id"):
        value = getattr(query, name)
        if value is not None:
            clauses[name] = value
    return clauses


class MongoLogReader:
    def __init__(self, store: MongoStore) -> None:
        self._store = store

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(partial(fn, *args), limiter=self._store.limiter)

    async def groups(self, query: LogFilter) -> list[LogGroup]:
        if not query.domains:
            return []
        return await self._run(self._groups, query)

    def _groups(self, query: LogFilter) -> list[LogGroup]:
        pipeline = [
            {"$match": mongo_filter(query)},
            {"$group": {"_id": {"m": "$message_id", "a": "$action", "e": "$event"},
                        "n": {"$sum": 1}}},
        ]
        return [
            LogGroup(message_id=g["_id"].get("m"), action=g["_id"].get("a"),
                     event=g["_id"].get("e"), count=int(g["n"]))
            for g in self._store.collection.aggregate(pipeline)
        ]

    async def page(self, query: LogFilter, *, include_ids: Sequence[str] | None,
                   exclude_ids: Sequence[str] | None, skip: int,
                   limit: int) -> list[dict[str, Any]]:
        if not query.domains:
            return []
        return await self._run(self._page, query, include_ids, exclude_ids, skip, limit)

    def _page(self, query: LogFilter, include_ids: Sequence[str] | None,
              exclude_ids: Sequence[str] | None, skip: int, limit: int) -> list[dict[str, Any]]:
        clauses = mongo_filter(query)
        if include_ids is not None or exclude_ids is not None:
            ids: dict[str, Any] = {}
            if include_ids is not None:
                ids["$in"] = list(include_ids)
            if exclude_ids is not None:
                ids["$nin"] = list(exclude_ids)
            if "message_id" in clauses:
                clauses = {"$and": [clauses, {"message_id": ids}]}
            else:
                clauses["message_id"] = ids
        cursor = (self._store.collection.find(clauses, _PROJECTION)
                  .sort(list(query.sorts)).skip(skip).limit(limit))
        return list(cursor)
