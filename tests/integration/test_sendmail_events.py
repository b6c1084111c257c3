"""``etrans sendmail`` publishes ``email.sent`` to KAFKA_EVENTS_TOPIC once the relay answered 250
(accepted recipients, the relay's reply), before the message is recorded as done: the real SMTP
server, Redis and broker of ``test_sendmail.py``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

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
