"""Trace context in ``etrans webhooks`` (docs/operations.md, "Tracing"), in process on the real
USEND DB and a real HTTP receiver, with the OpenTelemetry SDK's in-memory exporter: an event
whose record carries a ``traceparent`` is delivered in a ``webhook deliver`` span of that trace
(the header's child) and the lines of its delivery carry its ``trace_id`` and ``message_id``; the
next event, without one, makes no span and its lines carry no trace of the previous one.  A
retry (from ``webhook_retries``, which keeps the event's value but not its header) is attempted
in the email's trace, read from ``email_messages.traceparent``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import structlog
import trio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import insert
from structlog.testing import capture_logs

from etrans.adapters.kafka.client import KafkaProducer
from etrans.adapters.otel.tracer import OtelTracer
from etrans.adapters.sql import usend_database
from etrans.adapters.sql.usend import EmailMessage
from etrans.bootstrap.webhooks import webhook_client, webhook_delivery
from etrans.domain.events import encode_event
from etrans.pipeline import Message
from etrans.settings import for_command
from etrans.workers.webhooks import WebhooksTask
from tests.harness.servers import unique_name
from tests.integration.webhook_support import Receiver, add_webhook, email_event, fresh_user

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def in_memory_tracing() -> tuple[InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider


@asynccontextmanager
async def delivery_stack(env: dict[str, str], receiver: Receiver, *,
                         tracer: OtelTracer | None = None) -> AsyncIterator[tuple[Any, Any]]:
    """The webhooks worker's delivery on the USEND DB of ``env`` (and its database), closed
    with everything it opened, and ``receiver``, on the way out."""
    settings = for_command("webhooks", env)
    db = usend_database(env["USEND_DB_URI"], pool_size=2)
    producer = KafkaProducer.from_settings(settings.kafka)
    client = webhook_client(settings.webhooks)
    delivery = webhook_delivery(db, settings.tokens.secret.get(), client, producer,
                                settings.webhooks,
                                **({} if tracer is None else {"tracer": tracer}))
    try:
        yield db, delivery
    finally:
        await delivery.aclose()
        await client.aclose()
        producer.close(timeout=5.0)
        db.dispose()
        receiver.stop()


async def test_a_traced_event_is_delivered_in_its_trace_and_the_next_is_not(
    etrans_env: Callable[..., dict[str, str]], new_topic: Callable[..., str]
) -> None:
    env = etrans_env(KAFKA_EVENTS_TOPIC=new_topic(prefix="events"),
                     WEBHOOKS_GROUP_ID=unique_name("webhooks"),
                     WEBHOOKS_ALLOW_PRIVATE_URLS="true")
    receiver = Receiver().start()
    user_id = fresh_user()
    add_webhook(env["USEND_DB_URI"], env["TOKEN_SECRET"], user_id, receiver.url,
                receiver.secret)
    exporter, provider = in_memory_tracing()
    traced, plain = email_event(user_id, 1), email_event(user_id, 2)

    def record(event: Any, offset: int, headers: tuple[tuple[str, bytes], ...]) -> Message:
        key, value = encode_event(event)
        return Message("events", 0, offset, key, value, headers)

    async with delivery_stack(env, receiver) as (_, delivery):
        task = WebhooksTask(delivery, OtelTracer(provider))
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await task(record(traced, 0, (("traceparent", f"00-{TRACE}-{PARENT}-01".encode()),)))
            await task(record(plain, 1, ()))
        await trio.to_thread.run_sync(lambda: receiver.wait_for(lambda got: len(got) == 2))

    [span] = exporter.get_finished_spans()
    assert span.name == "webhook deliver"
    assert span.kind is SpanKind.CONSUMER
    assert f"{span.context.trace_id:032x}" == TRACE
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT
    assert dict(span.attributes or {}) == {"messaging.message.id": traced.id,
                                           "etrans.event": "email.delivered"}
    attempts = {line["event_id"]: line for line in logs if line["event"] == "webhook attempt"}
    assert attempts[traced.id]["trace_id"] == TRACE
    assert attempts[traced.id]["message_id"] == traced.message_id
    assert "trace_id" not in attempts[plain.id]
    assert attempts[plain.id]["message_id"] == plain.message_id
    assert [r.webhook_id for r in receiver.snapshot()] == [traced.id, plain.id]


async def test_a_retry_is_attempted_in_its_emails_trace(
    etrans_env: Callable[..., dict[str, str]], new_topic: Callable[..., str]
) -> None:
    env = etrans_env(KAFKA_EVENTS_TOPIC=new_topic(prefix="events"),
                     WEBHOOKS_GROUP_ID=unique_name("webhooks"),
                     WEBHOOKS_ALLOW_PRIVATE_URLS="true", WEBHOOKS_RETRY_DELAYS="0.1,0.1")
    receiver = Receiver(answer=lambda n: 500 if n == 1 else 200).start()
    user_id = fresh_user()
    add_webhook(env["USEND_DB_URI"], env["TOKEN_SECRET"], user_id, receiver.url,
                receiver.secret)
    event = email_event(user_id, 3)
    message_id = event.data["message_id"] = f"msg_{uuid4().hex}@a.example"
    exporter, provider = in_memory_tracing()
    key, value = encode_event(event)
    async with delivery_stack(env, receiver, tracer=OtelTracer(provider)) as (db, delivery):
        with db.engine.begin() as conn:
            conn.execute(insert(EmailMessage.__table__).values(
                message_id=message_id, user_id=user_id, from_address="s@example.test",
                to_addresses=["r@example.org"], subject="Hi", status="sent",
                created_at=datetime.now(UTC), traceparent=f"00-{TRACE}-{PARENT}-01"))
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            # The first attempt, from a record without a header (500: a retry is due 0.1 s on).
            await WebhooksTask(delivery, OtelTracer(provider))(
                Message("events", 0, 0, key, value, ()))
            await trio.sleep(0.3)
            assert await delivery.deliver_due() == 1
        await trio.to_thread.run_sync(lambda: receiver.wait_for(lambda got: len(got) == 2))

    [span] = exporter.get_finished_spans()
    assert span.name == "webhook retry"
    assert f"{span.context.trace_id:032x}" == TRACE
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT
    assert dict(span.attributes or {}) == {"messaging.message.id": event.id,
                                           "etrans.event": "email.delivered", "attempt": 2}
    first, retried = [line for line in logs if line["event"] == "webhook attempt"]
    assert (first["attempt"], first["status_code"]) == (1, 500)
    assert "trace_id" not in first
    assert (retried["attempt"], retried["status_code"]) == (2, 200)
    assert (retried["trace_id"], retried["message_id"]) == (TRACE, message_id)
