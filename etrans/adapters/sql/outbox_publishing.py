"""How the outbox relay hands a pass's records to the producer: one ``publish_many`` (one wait
for the broker's answers to all of them), or, for a publisher without it, one task per record;
each record with its headers (the ``traceparent`` of :mod:`etrans.adapters.sql.outbox_traces`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from etrans.adapters.kafka.client import PublishFailure

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.adapters.sql.outbox_store import OutboxRow
    from etrans.adapters.sql.outbox_traces import Headers
    from etrans.app.ports import EventPublisher


async def publish_records(
    publisher: EventPublisher,
    ids: Sequence[OutboxRow] | Sequence[int],
    records: Sequence[tuple[str, bytes | None, bytes | None]],
    headers: Sequence[Headers | None] | None = None,
) -> dict[int, PublishFailure | str | None]:
    """``records[i]`` published for ``ids[i]`` (a row or its id), with ``headers[i]``:
    id -> failure or None."""
    keys = [each if isinstance(each, int) else each.id for each in ids]
    publish_many = getattr(publisher, "publish_many", None)
    errors: Sequence[PublishFailure | str | None]
    if publish_many is not None:
        # One wait for the whole pass instead of a task and a wake-up per row.
        try:
            errors = await (
                publish_many(records) if headers is None else publish_many(records, headers=headers)
            )
        except Exception as exc:
            errors = [PublishFailure("unreachable", repr(exc))] * len(records)
    else:
        errors = await _publish_each(publisher, records, headers or [None] * len(records))
    return dict(zip(keys, errors, strict=True))


async def _publish_each(
    publisher: EventPublisher,
    records: Sequence[tuple[str, bytes | None, bytes | None]],
    headers: Sequence[Headers | None],
) -> list[str | None]:
    outcomes: list[str | None] = [None] * len(records)

    async def publish(index: int, topic: str, value: bytes | None, key: bytes | None) -> None:
        try:
            await publisher.publish(topic, value, key, headers[index])
        except Exception as exc:
            outcomes[index] = repr(exc)

    async with trio.open_nursery() as nursery:
        for index, (topic, value, key) in enumerate(records):
            nursery.start_soon(publish, index, topic, value, key)
    return outcomes
