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


async def publish_chained(
    publisher: EventPublisher,
    rows: Sequence[OutboxRow],
    records: Sequence[tuple[str, bytes | None, bytes | None]],
    events: Sequence[tuple[bytes, bytes] | None],
    events_topic: str,
    headers: Sequence[Headers | None] | None = None,
) -> tuple[dict[int, PublishFailure | str | None], dict[int, PublishFailure | None]]:
    """``records[i]`` for ``rows[i]``, and its email.queued event ``events[i]`` ((key, value)
    of :func:`~etrans.adapters.sql.outbox_events.queued_record`, or None) to ``events_topic``
    once the broker acknowledged the record (``KafkaProducer.publish_chained``: one wait), both
    with ``headers[i]``: (id -> failure of the record, id -> failure of its event)."""
    then = [(events_topic, event[1], event[0]) if event is not None else None
            for event in events]
    try:
        errors, then_errors = await publisher.publish_chained(  # type: ignore[attr-defined]
            records, then, headers=headers)
    except Exception as exc:
        errors, then_errors = [PublishFailure("unreachable", repr(exc))] * len(records), [
            None] * len(records)
    ids = [row.id for row in rows]
    return dict(zip(ids, errors, strict=True)), dict(zip(ids, then_errors, strict=True))


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
