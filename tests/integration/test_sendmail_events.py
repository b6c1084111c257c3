"""``etrans sendmail`` publishes ``email.sent`` to KAFKA_EVENTS_TOPIC once the relay answered 250
(accepted recipients, the relay's reply), before the message is recorded as done: the real SMTP
server, Redis and broker of ``test_sendmail.py``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio

from etrans.domain.events import EventType, decode_event, derived_event_id
from tests.integration.sendmail_support import CredentialFixture, read_events, simple_request
from tests.integration.test_sendmail import (  # noqa: F401  (fixtures)
    Worker,
    credentials,
    make_worker,
    new_id,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.harness.smtp import SmtpTestServer


async def test_an_accepted_email_is_an_email_sent_event(
    smtp_server_factory: Callable[..., SmtpTestServer],
    make_worker: Callable[..., Worker], credentials: CredentialFixture,  # noqa: F811
    new_topic: Callable[..., str],
) -> None:
    server = smtp_server_factory(users={"alice@example.com": "s3cret-pw"})
    worker = make_worker(server)
    topic = new_topic(1, prefix="events")
    worker.delivery.events_topic = topic
    user_id = credentials.add("alice@example.com", "s3cret-pw")
    message_id = new_id()
    request = simple_request(message_id, user_id, recipients=["a@example.com", "b@example.com"])

    await worker.task(worker.message(request))
    await worker.task(worker.message(request))  # a redelivery: skipped, nothing published

    assert len(server.received) == 1
    raw = await trio.to_thread.run_sync(
        lambda: read_events(worker.bootstrap, topic, 1, settle=1.0))
    [event] = [decode_event(json.dumps(value).encode()) for value in raw]
    assert event.type is EventType.SENT
    assert event.id == derived_event_id(message_id, "email.sent")
    assert event.user_id == int(user_id)
    assert event.message_id == message_id
    assert event.data["recipients"] == ["a@example.com", "b@example.com"]
    assert event.data["response"].startswith("250")


async def test_a_rejected_email_is_no_email_sent_event(
    smtp_server_factory: Callable[..., SmtpTestServer],
    make_worker: Callable[..., Worker], credentials: CredentialFixture,  # noqa: F811
    new_topic: Callable[..., str],
) -> None:
    server = smtp_server_factory(users={"alice@example.com": "s3cret-pw"})
    worker = make_worker(server)
    topic = new_topic(1, prefix="events")
    worker.delivery.events_topic = topic
    message_id = new_id()
    # No credentials for this user: rejected without sending.
    await worker.task(worker.message(simple_request(message_id, "424242")))

    rejects = await worker.events(1)
    assert [e["message_id"] for e in rejects] == [message_id]
    sent = await trio.to_thread.run_sync(
        lambda: read_events(worker.bootstrap, topic, 1, timeout=1.0))
    assert sent == []


class _WatchedProducer:
    """The real producer, its ``publish_many`` calls recorded (records per call, the moment each
    returned, i.e. was acknowledged) and held ``hold`` seconds before producing: the events of
    messages that finish meanwhile queue behind it."""

    def __init__(self, producer: Any, hold: float) -> None:
        self._producer = producer
        self.hold = hold
        self.calls: list[tuple[list[bytes | None], float]] = []

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        await self._producer.publish(*args, **kwargs)

    async def publish_many(self, records: Any, headers: Any = None) -> list[Any]:
        await trio.sleep(self.hold)
        errors = await self._producer.publish_many(records, headers)
        self.calls.append(([key for _, _, key in records], trio.current_time()))
        return list(errors)


async def test_the_sent_events_of_concurrent_messages_share_one_acknowledgement_wait(
    smtp_server_factory: Callable[..., SmtpTestServer],
    make_worker: Callable[..., Worker], credentials: CredentialFixture,  # noqa: F811
    new_topic: Callable[..., str],
) -> None:
    """While one batch of email.sent events waits for the broker, the events of the messages
    that finish meanwhile wait together for the next (one produce and one acknowledgement for
    all), and each task still returns only after its own event was acknowledged."""
    server = smtp_server_factory(users={"alice@example.com": "s3cret-pw"})
    worker = make_worker(server, pool_size=8)
    topic = new_topic(1, prefix="events")
    worker.delivery.events_topic = topic
    watched = _WatchedProducer(worker.delivery.events, hold=0.3)
    worker.delivery.events = watched
    user_id = credentials.add("alice@example.com", "s3cret-pw")
    ids = [new_id() for _ in range(8)]
    returned: dict[bytes, float] = {}

    async def deliver(message_id: str) -> None:
        await worker.task(worker.message(simple_request(message_id, user_id)))
        returned[message_id.encode()] = trio.current_time()

    async with trio.open_nursery() as nursery:
        for message_id in ids:
            nursery.start_soon(deliver, message_id)

    assert len(server.received) == 8
    published = [key for keys, _ in watched.calls for key in keys]
    assert sorted(published) == sorted(message_id.encode() for message_id in ids)
    # 8 messages, fewer acknowledgement waits: the first event goes alone, the others together.
    assert len(watched.calls) < 8, [len(keys) for keys, _ in watched.calls]
    for keys, acknowledged_at in watched.calls:
        for key in keys:
            assert returned[key] >= acknowledged_at
    raw = await trio.to_thread.run_sync(lambda: read_events(worker.bootstrap, topic, 8, settle=1.0))
    assert sorted(e["data"]["message_id"] for e in raw) == sorted(ids)
