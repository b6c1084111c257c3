"""Publishing email events (``docs/wire-formats.md``, "Email events") from the workers that
learn them (``etrans sendmail``: sent; ``etrans fetchlog``: delivered, delayed, bounced).

:func:`publish_events` returns once the broker acknowledged every event, else raises
:class:`~etrans.errors.RetryLater`: the caller's offsets are not committed, the batch (or the
message) is retried, and the events are published again with the same ids.  An event of an email
whose trace is known carries its ``traceparent`` as a record header (docs/operations.md,
"Tracing"); the value is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
