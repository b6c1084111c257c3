"""Publishing email events (``docs/wire-formats.md``, "Email events") from the workers that
learn them (``etrans sendmail``: sent; ``etrans fetchlog``: delivered, delayed, bounced).

:func:`publish_events` returns once the broker acknowledged every event, else raises
:class:`~etrans.errors.RetryLater`: the caller's offsets are not committed, the batch (or the
message) is retried, and the events are published again with the same ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from etrans.domain.events import encode_event
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.app.ports import EventPublisher
    from etrans.domain.events import EmailEvent


async def publish_events(publisher: EventPublisher, topic: str,
                         events: Sequence[EmailEvent]) -> None:
    """Publish ``events`` to ``topic`` (one wait for all when the publisher can batch)."""
    if not events:
        return
    records = [(topic, value, key) for key, value in map(encode_event, events)]
    publish_many = getattr(publisher, "publish_many", None)
    try:
        if publish_many is not None:
            errors = [e for e in await publish_many(records) if e is not None]
        else:
            errors = []
            async with trio.open_nursery() as nursery:
                for record_topic, value, key in records:
                    nursery.start_soon(publisher.publish, record_topic, value, key)
    except Exception as exc:
        raise RetryLater(f"could not publish email events to {topic}: {exc!r}") from exc
    if errors:
        raise RetryLater(f"could not publish {len(errors)} email events to {topic}: "
                         f"{errors[0]!r}")
