"""Publishing email events (``docs/wire-formats.md``, "Email events") from the workers that
learn them (``etrans sendmail``: sent; ``etrans fetchlog``: delivered, delayed, bounced).

:func:`publish_events` returns once the broker acknowledged every event, else raises
:class:`~etrans.errors.RetryLater`: the caller's offsets are not committed, the batch (or the
message) is retried, and the events are published again with the same ids.  An event of an email
whose trace is known carries its ``traceparent`` as a record header (docs/operations.md,
"Tracing"); the value is unchanged.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from etrans.domain.events import encode_event
from etrans.domain.trace_context import HEADER
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.app.ports import EventPublisher
    from etrans.domain.events import EmailEvent


async def publish_events(publisher: EventPublisher, topic: str,
                         events: Sequence[EmailEvent],
                         traceparents: Sequence[str | None] | None = None) -> None:
    """Publish ``events`` to ``topic`` (one wait for all when the publisher can batch), event
    ``i`` with a ``traceparent`` header when ``traceparents[i]`` is one."""
    if not events:
        return
    records = [(topic, value, key) for key, value in map(encode_event, events)]
    headers = ([[(HEADER, each)] if each else None for each in traceparents]
               if traceparents is not None and any(traceparents) else None)
    publish_many = getattr(publisher, "publish_many", None)
    try:
        if publish_many is not None:
            answers = (await publish_many(records) if headers is None
                       else await publish_many(records, headers=headers))
            errors = [e for e in answers if e is not None]
        else:
            errors = []
            async with trio.open_nursery() as nursery:
                for index, (record_topic, value, key) in enumerate(records):
                    nursery.start_soon(publisher.publish, record_topic, value, key,
                                       headers[index] if headers is not None else None)
    except Exception as exc:
        raise RetryLater(f"could not publish email events to {topic}: {exc!r}") from exc
    if errors:
        raise RetryLater(f"could not publish {len(errors)} email events to {topic}: "
                         f"{errors[0]!r}")


class _Waiting:
    """The records of one :meth:`CoalescedEvents.publish` call, waiting for their batch."""

    __slots__ = ("error", "headers", "lead", "records", "woken")

    def __init__(self, records: list[tuple[str, bytes | None, bytes | None]],
                 headers: list[Any]) -> None:
        self.records = records
        self.headers = headers  # one per record (None: none)
        self.error: str | None = None  # why not acknowledged (set with ``woken``)
        self.lead = False  # woken to publish the next batch, not because its own is done
        self.woken = trio.Event()


class CoalescedEvents:
    """Publishes the email events of concurrent tasks together: one produce and one
    acknowledgement wait for all the events queued while the previous batch was in flight.

    At most one batch is in flight.  The first caller publishes its events at once (no linger:
    an idle worker's event goes out immediately); the events of callers that arrive while a
    batch waits for the broker queue up and go in one ``publish_many`` as soon as it is
    acknowledged, published by the first of them.  Every caller returns only once the broker
    acknowledged its own events (so a task's offset is never committed before that), and raises
    :class:`~etrans.errors.RetryLater` when they were not: publishing again is safe, event ids
    are derived from the facts.  Under load this is one wake-up of Trio per batch instead of
    one per message, and fewer, larger produce requests for librdkafka and the broker.
    """

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher
        self._queue: list[_Waiting] = []
        self._in_flight = False
        self.batches = 0  # batches published (statistics)
        self.published = 0  # records in them

    async def publish(self, topic: str, events: Sequence[EmailEvent],
                      traceparents: Sequence[str | None] | None = None) -> None:
        """Publish ``events`` to ``topic`` (event ``i`` with a ``traceparent`` header when
        ``traceparents[i]`` is one, as :func:`publish_events`) and return once the broker
        acknowledged them; RetryLater when it did not."""
        if not events:
            return
        waiting = _Waiting([(topic, value, key) for key, value in map(encode_event, events)],
                           [[(HEADER, each)] if each else None for each in traceparents]
                           if traceparents is not None else [None] * len(events))
        self._queue.append(waiting)
        if self._in_flight:
            try:
                await waiting.woken.wait()
            except BaseException:
                # Cancelled while queued: not published; if it was just asked to publish the
                # next batch, the next in the queue does.
                if waiting in self._queue:
                    self._queue.remove(waiting)
                if waiting.lead:
                    self._hand_over()
                raise
            if waiting.lead:
                await self._publish_queued()
        else:
            await self._publish_queued()
        if waiting.error is not None:
            raise RetryLater(f"could not publish email events to {topic}: {waiting.error}")

    async def _publish_queued(self) -> None:
        """Publish every queued record in one batch, wake their callers, hand over."""
        batch, self._queue = self._queue, []
        self._in_flight = True
        records = [record for waiting in batch for record in waiting.records]
        headers = [each for waiting in batch for each in waiting.headers]
        errors: list[object | None] = []
        failure: str | None = "publishing was cancelled"
        try:
            self.batches += 1
            self.published += len(records)
            publish_many = getattr(self._publisher, "publish_many", None)
            if publish_many is not None:
                errors = list(await publish_many(
                    records, headers if any(h is not None for h in headers) else None))
            else:
                async with trio.open_nursery() as nursery:
                    for (record_topic, value, key), given in zip(records, headers, strict=True):
                        nursery.start_soon(partial(self._publisher.publish, record_topic,
                                                   value, key, headers=given))
            failure = None
        except Exception as exc:
            failure = repr(exc)
        finally:
            start = 0
            for waiting in batch:
                end = start + len(waiting.records)
                mine = [e for e in errors[start:end] if e is not None]
                waiting.error = failure or (repr(mine[0]) if mine else None)
                waiting.lead = False
                waiting.woken.set()
                start = end
            self._hand_over()

    def statistics(self) -> dict[str, int]:
        return {"batches": self.batches, "records": self.published}

    def _hand_over(self) -> None:
        """Wake the first queued caller to publish the next batch (or none is in flight)."""
        if self._queue:
            following = self._queue[0]
            following.lead = True
            following.woken.set()
        else:
            self._in_flight = False
