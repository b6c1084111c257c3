"""The delivery use case (etrans/app/webhook_delivery.py) on in-memory fakes of its ports:
signed attempts, the retry schedule, giving up, busy endpoints, disabling."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import trio
from standardwebhooks.webhooks import Webhook

from etrans.app.webhook_delivery import BUSY, DeliveryPolicy, WebhookDelivery, webhook_body
from etrans.app.webhook_records import WebhookEndpoint
from etrans.domain.events import (
    EmailEvent,
    EventType,
    decode_event,
    encode_event,
    random_event_id,
)
from etrans.domain.webhook_retries import RetrySchedule
from etrans.domain.webhook_signing import new_secret
from tests.unit.fakes_webhooks import (
    Clock,
    FakeDirectory,
    FakePublisher,
    FakeStore,
    FakeTransport,
)

SECRET = new_secret()


def _endpoint(webhook_id: int = 1, url: str = "https://hooks.example/a",
              types: tuple[str, ...] = ()) -> WebhookEndpoint:
    return WebhookEndpoint(id=webhook_id, user_id=7, url=url, secret=SECRET, event_types=types)


def _event(kind: EventType = EventType.DELIVERED) -> tuple[EmailEvent, bytes]:
    event = EmailEvent(id=random_event_id(), type=kind, timestamp=datetime.now(UTC), user_id=7,
                       data={"message_id": "msg_1@a.example", "recipient": "b@x.org"})
    return event, encode_event(event)[1]


def _delivery(transport: FakeTransport, *endpoints: WebhookEndpoint,
              policy: DeliveryPolicy | None = None
              ) -> tuple[WebhookDelivery, FakeStore, FakePublisher, Clock]:
    store, publisher, clock = FakeStore(), FakePublisher(), Clock(datetime.now(UTC))
    delivery = WebhookDelivery(FakeDirectory(list(endpoints)), store, transport, publisher,
                               "email-events", policy or DeliveryPolicy(), clock=clock)
    return delivery, store, publisher, clock


async def test_each_subscriber_gets_the_event_signed() -> None:
    transport = FakeTransport()
    delivery, store, _, _ = _delivery(transport, _endpoint(1), _endpoint(2, "https://b.example/",
                                                                          ("email.bounced",)))
    event, record = _event()
    await delivery.deliver(event, record)
    [(url, body, headers)] = transport.calls  # endpoint 2 does not subscribe to deliveries
    assert url == "https://hooks.example/a"
    assert body == webhook_body(event)
    assert headers["webhook-id"] == event.id
    assert Webhook(SECRET).verify(body, headers) == json.loads(body)
    [attempt] = store.attempts
    assert (attempt.webhook_id, attempt.attempt, attempt.status_code, attempt.error) == (
        1, 1, 200, None)
    assert delivery.statistics().delivered == 1


async def test_failures_are_retried_on_schedule_then_given_up() -> None:
    answers = iter([500, "timeout (ReadTimeout)", 503])
    transport = FakeTransport(answer=lambda url: next(answers))
    policy = DeliveryPolicy(schedule=RetrySchedule((5, 30), max_attempts=3))
    delivery, store, _, clock = _delivery(transport, _endpoint(), policy=policy)
    event, record = _event()
    await delivery.deliver(event, record)
    [retry] = store.retries.values()
    assert (retry.attempt, retry.last_error, retry.event) == (1, "HTTP 500", record)
    assert (retry.due_at - clock.now).total_seconds() == 5
    assert await delivery.deliver_due() == 0  # not due yet
    clock.advance(5)
    assert await delivery.deliver_due() == 1
    [retry] = store.retries.values()
    assert (retry.attempt, retry.last_error) == (2, "timeout (ReadTimeout)")
    assert (retry.due_at - clock.now).total_seconds() == 30
    clock.advance(30)
    await delivery.deliver_due()
    assert store.retries == {}
    assert [(a.attempt, a.status_code) for a in store.attempts] == [(1, 500), (2, None),
                                                                    (3, 503)]
    assert {c[2]["webhook-id"] for c in transport.calls} == {event.id}
    assert delivery.statistics().given_up == 1


async def test_a_retry_that_succeeds_clears_the_failure() -> None:
    answers = iter([500, 200])
    transport = FakeTransport(answer=lambda url: next(answers))
    delivery, store, _, clock = _delivery(transport, _endpoint())
    await delivery.deliver(*_event())
    assert 1 in store.failing_since
    clock.advance(5)
    await delivery.deliver_due()
    assert store.retries == {}
    assert store.failing_since == {}


async def test_a_retry_for_a_vanished_endpoint_is_dropped() -> None:
    transport = FakeTransport(answer=lambda url: 500)
    delivery, store, _, clock = _delivery(transport, _endpoint())
    await delivery.deliver(*_event())
    delivery.directory.endpoints.clear()  # type: ignore[attr-defined]
    clock.advance(5)
    await delivery.deliver_due()
    assert store.retries == {}
    assert len(transport.calls) == 1


async def test_a_busy_endpoint_postpones_instead_of_waiting() -> None:
    gate = trio.Event()
    transport = FakeTransport(gate=gate)
    policy = DeliveryPolicy(endpoint_concurrency=2, busy_delay=0.5)
    delivery, store, _, clock = _delivery(transport, _endpoint(), policy=policy)
    events = [_event() for _ in range(3)]
    async with trio.open_nursery() as nursery:
        for event, record in events[:2]:
            nursery.start_soon(delivery.deliver, event, record)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(1):
            await delivery.deliver(*events[2])  # returns at once: the endpoint is full
        [retry] = store.retries.values()
        assert (retry.event_id, retry.attempt, retry.last_error) == (events[2][0].id, 0, BUSY)
        assert (retry.due_at - clock.now).total_seconds() == 0.5
        gate.set()
    clock.advance(0.5)
    await delivery.deliver_due()
    assert store.retries == {}
    assert [a.attempt for a in store.attempts] == [1, 1, 1]
    assert delivery.statistics().postponed == 1


async def test_an_endpoint_failing_too_long_is_disabled_once_with_an_event() -> None:
    transport = FakeTransport(answer=lambda url: "ConnectError: refused")
    policy = DeliveryPolicy(schedule=RetrySchedule((60,), max_attempts=100, disable_after=3600))
    delivery, store, publisher, clock = _delivery(transport, _endpoint(), policy=policy)
    await delivery.deliver(*_event())
    clock.advance(3599)
    await delivery.deliver(*_event())
    assert store.disabled == {}
    assert publisher.records == []
    clock.advance(2)
    await delivery.deliver(*_event())
    assert "ConnectError: refused" in store.disabled[1]
    assert store.retries == {}
    [(topic, value, key)] = publisher.records
    disabled = decode_event(value)
    assert topic == "email-events"
    assert key == disabled.id.encode()
    assert disabled.type is EventType.WEBHOOK_DISABLED
    assert disabled.user_id == 7
    assert disabled.data == {"webhook_id": "1", "url": "https://hooks.example/a",
                             "last_error": "ConnectError: refused"}


async def test_an_unusable_secret_is_a_failed_attempt_without_a_request() -> None:
    transport = FakeTransport()
    endpoint = WebhookEndpoint(id=1, user_id=7, url="https://a.example/", secret="whsec_!",
                               event_types=())
    delivery, store, _, _ = _delivery(transport, endpoint)
    await delivery.deliver(*_event())
    assert transport.calls == []
    assert store.attempts[0].error is not None
    assert store.attempts[0].error.startswith("unusable signing secret")


@pytest.mark.parametrize(("attempt", "delay"), [(1, 5), (2, 30), (6, 3600), (8, 21600),
                                                (18, 21600), (19, None)])
def test_default_schedule(attempt: int, delay: float | None) -> None:
    schedule = RetrySchedule()
    assert schedule.delay_after(attempt) == delay
    assert 2.9 * 86400 < schedule.total_span() < 3 * 86400


def test_settings_defaults_are_the_domain_schedule() -> None:
    from etrans.settings import for_command

    options = for_command("webhooks", {"KAFKA_BOOTSTRAP_SERVERS": "k:9092",
                                       "USEND_DB_URI": "postgresql://u@h/d",
                                       "TOKEN_SECRET": "s" * 32, "TOKEN_IV": "i" * 16}).webhooks
    schedule = RetrySchedule()
    assert options.retry_delays == schedule.delays
    assert options.max_attempts == schedule.max_attempts
    assert options.disable_after_seconds == schedule.disable_after
    assert (options.events_topic, options.group_id, options.timeout_seconds) == (
        "email-events", "etrans-webhooks", 10.0)


async def test_the_retry_loop_does_not_wait_for_a_hanging_retry() -> None:
    gate = trio.Event()
    transport = FakeTransport(answer=lambda url: 500)
    delivery, store, _, clock = _delivery(transport, _endpoint(1), _endpoint(2, "https://b/"))
    await delivery.deliver(*_event())  # fails at both endpoints: two retries
    clock.advance(5)
    transport.gate, transport.answer = gate, (lambda url: 200)
    async with trio.open_nursery() as nursery:
        assert await delivery.deliver_due(nursery) == 2  # returns while both attempts hang
        await trio.testing.wait_all_tasks_blocked()
        assert len(transport.calls) == 4
        gate.set()
    assert store.retries == {}


async def test_a_failing_retry_write_is_logged_not_raised() -> None:
    transport = FakeTransport(answer=lambda url: 500)
    delivery, store, _, clock = _delivery(transport, _endpoint())
    await delivery.deliver(*_event())
    clock.advance(5)

    async def database_down(*args: object) -> None:
        raise RuntimeError("USEND DB down")

    store.record_failed = database_down  # type: ignore[method-assign,assignment]
    async with trio.open_nursery() as nursery:
        assert await delivery.deliver_due(nursery) == 1
    assert len(store.retries) == 1  # still there: its lease brings it back
