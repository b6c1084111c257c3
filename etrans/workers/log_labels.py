"""Who sent each delivery-log document: ``source`` ("API" or "SMTP") and ``user_id``.

:func:`label_documents` labels the documents fetchlog is about to store (one USEND lookup per
batch); :func:`backfill_labels` labels those stored without it (before fetchlog recorded it, or
while USEND_DB_URI was unset), and :func:`run_backfill` runs that in the background of
``etrans fetchlog`` until every document is labelled, retrying with backoff.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from etrans.domain.delivery_log import bare_message_id
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.app.ports import LogLabels, MessageOwners
    from etrans.observability import ErrorSink

log = get_logger(__name__)


async def label_documents(documents: Sequence[dict[str, Any]], owners: MessageOwners) -> None:
    """Add ``source`` and (for API mail) ``user_id`` to each document, in place."""
    ids = [bare_message_id(str(d.get("message_id") or "")) for d in documents]
    found = await owners.owners(ids)
    for document, message_id in zip(documents, ids, strict=True):
        user_id = found.get(message_id)
        if user_id is None:
            document["source"] = "SMTP"
        else:
            document["source"] = "API"
            document["user_id"] = user_id


async def backfill_labels(labels: LogLabels, owners: MessageOwners, *,
                          batch: int = 1000) -> int:
    """Record ``source`` / ``user_id`` on the documents stored without them (before fetchlog
    recorded them, or while USEND_DB_URI was unset), ``batch`` documents at a time in stored
    order; returns how many documents changed.  Idempotent and resumable: only documents still
    without ``source`` are read and written, so a restart simply continues."""
    changed = 0
    position: Any = None
    while True:
        message_ids, position = await labels.unlabelled(position, batch)
        bare = {m: bare_message_id(m) for m in message_ids}
        found = await owners.owners(list(bare.values()))
        by_owner: dict[int | None, list[str]] = {}
        for stored, message_id in bare.items():
            by_owner.setdefault(found.get(message_id), []).append(stored)
        for user_id, group in by_owner.items():
            changed += await labels.label(group, "SMTP" if user_id is None else "API", user_id)
        if position is None:
            return changed


async def run_backfill(labels: LogLabels, owners: MessageOwners,
                        reporter: ErrorSink | None, done: trio.Event) -> None:
    delay = 1.0
    while True:
        try:
            if await labels.labels_complete():
                log.info("log backfill: every document is labelled")
                done.set()
                return
            changed = await backfill_labels(labels, owners)
            await labels.set_labels_complete(True)
        except Exception as exc:  # a task boundary: log, report, try again later
            log.warning("log backfill failed, retrying", error=str(exc), retry_in=delay)
            if reporter is not None:
                reporter.capture(exc, step="backfill")
            await trio.sleep(delay)
            delay = min(delay * 2, 60.0)
            continue
        log.info("log backfill done", documents=changed)
        done.set()
        return
