"""Use case of ``etrans serve``: an open pixel fetched or a tracked link followed becomes an
``email.opened`` / ``email.clicked`` event on KAFKA_EVENTS_TOPIC (``docs/tracking.md``).

The tracking endpoints are what mail clients hit at scale, so a hit never waits on a database
or the broker: :meth:`TrackingHits.opened` / :meth:`TrackingHits.clicked` check the token (an
HMAC, no I/O) and hand the event to a bounded in-memory channel without blocking; one background
task (:meth:`TrackingHits.run`, started in the app's nursery) drains it and produces the events
in batches through the port :class:`~etrans.app.ports.BatchPublisher`.

What is given up for that, by design: when the channel is full (the broker slow or down for
long), new hits are still answered but their events are dropped, counted (``dropped``) and
logged at most every 10 s; a batch the broker refuses is retried after 0.5, 1, 2... s up to
:data:`PUBLISH_ATTEMPTS` times, then dropped and counted (``failed``); events still queued when
the process stops are produced during the drain (up to :data:`CLOSE_SECONDS`).  Opens and clicks
are therefore "at most once" (event ids are random: ``etrans.domain.events``), unlike the other
email events.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import trio

from etrans.domain.events import EmailEvent, EventType, encode_event, random_event_id
from etrans.domain.tracking import CLICK, OPEN, InvalidToken, read_token
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.ports import BatchPublisher
    from etrans.domain.tracking import Kind, TrackingTarget

log = get_logger(__name__)

MAX_USER_AGENT = 512
BATCH_SIZE = 500
PUBLISH_ATTEMPTS = 5
CLOSE_SECONDS = 5.0
_WARN_EVERY_SECONDS = 10.0

Record = tuple[str, bytes | None, bytes | None]


class TrackingHits:
    """Checks tracking tokens and queues their events; one instance per server process."""

    def __init__(self, key: bytes, publisher: BatchPublisher, topic: str, *,
                 queue_size: int = 10_000, retry_base_seconds: float = 0.5) -> None:
        self._key = key
        self._publisher = publisher
        self.topic = topic
        self._retry_base = retry_base_seconds
        self._send, self._receive = trio.open_memory_channel[Record](queue_size)
        self._stopped = trio.Event()
        self._running = False
        self._last_warning = -math.inf
        self.opens = self.clicks = self.invalid = 0
        self.dropped = self.published = self.failed = 0

    # -- the request path: no await ---------------------------------------------------------------

    def opened(self, token: str, user_agent: str | None) -> bool:
        """Queue the ``email.opened`` event of ``token``; False for a token this server did not
        make (the pixel is answered anyway)."""
        target = self._target(OPEN, token)
        if target is None:
            return False
        self.opens += 1
        self._queue(target, EventType.OPENED, user_agent)
        return True

    def clicked(self, token: str, user_agent: str | None) -> str | None:
        """The URL to redirect to, after queueing the ``email.clicked`` event; None for a token
        this server did not make (never redirect to a URL that was not signed)."""
        target = self._target(CLICK, token)
        if target is None or target.url is None:
            return None
        self.clicks += 1
        self._queue(target, EventType.CLICKED, user_agent)
        return target.url

    def _target(self, kind: Kind, token: str) -> TrackingTarget | None:
        try:
            return read_token(self._key, kind, token)
        except InvalidToken:
            self.invalid += 1
            return None

    def _queue(self, target: TrackingTarget, kind: EventType, user_agent: str | None) -> None:
        data: dict[str, str] = {"message_id": target.message_id,
                                "user_agent": (user_agent or "")[:MAX_USER_AGENT]}
        if target.url is not None:
            data["url"] = target.url
        event = EmailEvent(id=random_event_id(), type=kind, timestamp=datetime.now(UTC),
                           user_id=target.user_id, data=data)
        try:
            key, value = encode_event(event)
        except ValueError:  # over 64 KiB: cannot happen with a 4 KiB token and 512 bytes of UA
            self.dropped += 1
            return
        try:
            self._send.send_nowait((self.topic, value, key))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_warning >= _WARN_EVERY_SECONDS:
                self._last_warning = now
                log.warning("tracking events dropped: the queue is full (broker slow or down?)",
                            dropped=self.dropped, topic=self.topic)

    # -- the background task ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Produce queued events until :meth:`aclose`, then what is left."""
        self._running = True
        task_status.started()
        try:
            async with self._receive:
                async for first in self._receive:
                    batch = [first]
                    while len(batch) < BATCH_SIZE:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await self._publish(batch)
        finally:
            self._stopped.set()

    async def _publish(self, batch: list[Record]) -> None:
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                errors = await self._publisher.publish_many(batch)
            except Exception as exc:
                errors = [repr(exc)] * len(batch)
            left = [record for record, error in zip(batch, errors, strict=True)
                    if error is not None]
            self.published += len(batch) - len(left)
            if not left:
                return
            batch = left
            if attempt + 1 < PUBLISH_ATTEMPTS:
                log.warning("could not produce tracking events, will retry", events=len(batch),
                            error=str(next(e for e in errors if e is not None)))
                await trio.sleep(self._retry_base * 2**attempt)
        self.failed += len(batch)
        log.error("tracking events lost: the broker refused them", events=len(batch),
                  topic=self.topic)

    async def aclose(self) -> None:
        """No more hits; wait (up to :data:`CLOSE_SECONDS`) until the queued ones are produced."""
        self._send.close()
        if not self._running:
            return
        with trio.move_on_after(CLOSE_SECONDS):
            await self._stopped.wait()

    def statistics(self) -> dict[str, int]:
        return {"opens": self.opens, "clicks": self.clicks, "invalid": self.invalid,
                "dropped": self.dropped, "published": self.published, "failed": self.failed,
                "queued": self._receive.statistics().current_buffer_used}
