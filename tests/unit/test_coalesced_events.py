"""CoalescedEvents (etrans.app.email_events): the email.sent events of concurrent tasks share one
``publish_many``; each caller learns the fate of its own events only, and a caller cancelled
while its batch is in flight or while queued never strands the others.

The publisher here is a port stand-in that answers when the test says so (the real broker's
side is tests/integration/test_sendmail_events.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import trio
import trio.testing

from etrans.app.email_events import CoalescedEvents
from etrans.domain.events import EmailEvent, EventType, derived_event_id
from etrans.errors import RetryLater


def _sent(message_id: str) -> EmailEvent:
    return EmailEvent(id=derived_event_id(message_id, "email.sent"), type=EventType.SENT,
                      timestamp=datetime.now(UTC), user_id=7,
                      data={"message_id": message_id, "recipients": ["a@example.org"],
                            "response": "250 ok"})


class _Broker:
    """Records each batch; a batch is answered when the test releases it.  ``refuse``: keys
    answered with an error."""

    def __init__(self, refuse: frozenset[bytes] = frozenset()) -> None:
        self.batches: list[list[bytes | None]] = []
        self.headers: list[Any] = []
        self.refuse = refuse
        self.release = trio.Event()

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("publish_many is used")

    async def publish_many(self, records: Any, headers: Any = None) -> list[object | None]:
        self.batches.append([key for _, _, key in records])
        self.headers.append(headers)
        await self.release.wait()
        return ["refused" if key in self.refuse else None for _, _, key in records]


async def test_events_queued_behind_an_in_flight_batch_go_in_one_batch() -> None:
    broker = _Broker(refuse=frozenset({b"m3"}))
    events = CoalescedEvents(broker)
    outcome: dict[str, str] = {}

    async def publish(message_id: str) -> None:
        try:
            await events.publish("events", [_sent(message_id)])
            outcome[message_id] = "acknowledged"
        except RetryLater:
            outcome[message_id] = "retry"

    async with trio.open_nursery() as nursery:
        for message_id in ("m1", "m2", "m3", "m4"):
            nursery.start_soon(publish, message_id)
            await trio.testing.wait_all_tasks_blocked()
        assert broker.batches == [[b"m1"]]  # the first at once, the others wait for it
        assert outcome == {}
        broker.release.set()
    assert broker.batches == [[b"m1"], [b"m2", b"m3", b"m4"]]
    assert outcome == {"m1": "acknowledged", "m2": "acknowledged", "m3": "retry",
                       "m4": "acknowledged"}


@pytest.mark.parametrize("cancelled", ["m1", "m2"])
async def test_a_cancelled_caller_strands_nobody(cancelled: str) -> None:
    """m1's batch is in flight, m2 and m3 queued.  m1 cancelled: its batch is not known to be
    acknowledged (m1 gone), the queued ones still go.  m2 cancelled while queued: not
    published, m3 goes."""
    broker = _Broker()
    events = CoalescedEvents(broker)
    outcome: dict[str, str] = {}
    scopes: dict[str, trio.CancelScope] = {}

    async def publish(message_id: str) -> None:
        with trio.CancelScope() as scopes[message_id]:
            try:
                await events.publish("events", [_sent(message_id)])
                outcome[message_id] = "acknowledged"
            except RetryLater:
                outcome[message_id] = "retry"
            return
        outcome[message_id] = "cancelled"

    async with trio.open_nursery() as nursery:
        for message_id in ("m1", "m2", "m3"):
            nursery.start_soon(publish, message_id)
            await trio.testing.wait_all_tasks_blocked()
        scopes[cancelled].cancel()
        await trio.testing.wait_all_tasks_blocked()
        broker.release.set()
    if cancelled == "m1":
        assert broker.batches == [[b"m1"], [b"m2", b"m3"]]
        assert outcome == {"m1": "cancelled", "m2": "acknowledged", "m3": "acknowledged"}
    else:
        assert broker.batches == [[b"m1"], [b"m3"]]
        assert outcome == {"m1": "acknowledged", "m2": "cancelled", "m3": "acknowledged"}


async def test_a_failed_batch_is_retry_later_for_each_of_its_callers() -> None:
    class Down(_Broker):
        async def publish_many(self, records: Any, headers: Any = None) -> list[object | None]:
            self.batches.append([key for _, _, key in records])
            raise RuntimeError("broker down")

    events = CoalescedEvents(Down())
    with pytest.raises(RetryLater, match="broker down"):
        await events.publish("events", [_sent("m1")])
    with pytest.raises(RetryLater, match="broker down"):  # and the next one tries again
        await events.publish("events", [_sent("m2")])


async def test_each_event_keeps_its_own_traceparent_in_a_shared_batch() -> None:
    broker = _Broker()
    events = CoalescedEvents(broker)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(events.publish, "events", [_sent("m1")], [parent])
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(events.publish, "events", [_sent("m2")], [None])
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(events.publish, "events", [_sent("m3")], [parent])
        await trio.testing.wait_all_tasks_blocked()
        broker.release.set()
    assert broker.batches == [[b"m1"], [b"m2", b"m3"]]
    assert broker.headers == [[[("traceparent", parent)]], [None, [("traceparent", parent)]]]
