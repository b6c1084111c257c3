"""The tracking endpoints' event queue (:mod:`etrans.app.tracking_hits`): a hit never waits, a
full queue drops and counts, a refused batch is retried, the rest is produced at close.  The
publisher is a fake of the BatchPublisher port (the real producer: test_tracking_endpoints)."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from etrans.app.tracking_hits import TrackingHits
from etrans.domain.events import decode_event
from etrans.domain.tracking import CLICK, OPEN, TrackingTarget, derive_tracking_key, make_token

KEY = derive_tracking_key(b"k" * 32)
OPENED = make_token(KEY, TrackingTarget(OPEN, 7, "msg_1@example.org"))
CLICKED = make_token(KEY, TrackingTarget(CLICK, 7, "msg_1@example.org", "https://a.example/"))

Record = tuple[str, bytes | None, bytes | None]


class Publisher:
    def __init__(self, failures: int = 0) -> None:
        self.records: list[Record] = []
        self.failures = failures
        self.gate = trio.Event()
        self.gate.set()

    async def publish_many(self, records: Sequence[Record]) -> list[object | None]:
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            return ["broker down"] * len(records)
        self.records.extend(records)
        return [None] * len(records)


async def test_hits_are_queued_and_produced_in_order() -> None:
    publisher = Publisher()
    hits = TrackingHits(KEY, publisher, "events")
    async with trio.open_nursery() as nursery:
        await nursery.start(hits.run)
        assert hits.opened(OPENED, "UA")
        assert hits.clicked(CLICKED, None) == "https://a.example/"
        assert hits.clicked(OPENED, "UA") is None
        assert not hits.opened(CLICKED, "UA")
        await hits.aclose()
    events = [decode_event(value) for _, value, _ in publisher.records]
    assert [(e.type.value, e.data.get("url")) for e in events] == [
        ("email.opened", None), ("email.clicked", "https://a.example/")]
    assert {key for _, _, key in publisher.records} == {b"msg_1@example.org"}
    assert hits.statistics() | {"queued": 0} == {
        "opens": 1, "clicks": 1, "invalid": 2, "dropped": 0, "published": 2, "failed": 0,
        "queued": 0}


async def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    publisher = Publisher()
    publisher.gate = trio.Event()  # the broker does not answer
    hits = TrackingHits(KEY, publisher, "events", queue_size=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(hits.run)
        for _ in range(6):  # one in flight, two queued, three dropped
            assert hits.opened(OPENED, "UA")
            await trio.testing.wait_all_tasks_blocked()
        assert hits.dropped == 3
        publisher.gate.set()
        await hits.aclose()
    assert (hits.published, len(publisher.records)) == (3, 3)


async def test_a_refused_batch_is_retried_then_given_up(autojump_clock: trio.abc.Clock) -> None:
    publisher = Publisher(failures=2)
    hits = TrackingHits(KEY, publisher, "events")
    async with trio.open_nursery() as nursery:
        await nursery.start(hits.run)
        hits.opened(OPENED, "UA")
        await trio.sleep(10)
        assert (hits.published, hits.failed) == (1, 0)
        publisher.failures = 100
        hits.opened(OPENED, "UA")
        await trio.sleep(60)
        assert (hits.published, hits.failed) == (1, 1)
        await hits.aclose()
