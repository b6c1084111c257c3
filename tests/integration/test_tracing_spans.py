"""The spans of one email with the OpenTelemetry SDK (its in-memory exporter), in-process on the
real services: the API request (child of the request's ``traceparent``), the outbox relay's
publish (child of the request), sendmail's delivery (child of the Kafka header, a real record
read back from the broker) and fetchlog's storing of the SMTP server's event (the email's trace,
read from the USEND DB): one trace id, each parent the span before it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pymongo import MongoClient

from etrans.adapters.crypto.credentials import CredentialCipher
from etrans.adapters.mongo.log_writer import MongoLogWriter
from etrans.adapters.otel.tracer import OtelTracer
from etrans.adapters.redis.credential_source import RedisCredentialSource
from etrans.adapters.redis.delivery_marks import RedisDeliveryMarks
from etrans.adapters.smtp.pool import SmtpConfig, SmtpPool
from etrans.adapters.sql.message_owners import MessageOwnerLookup
from etrans.app.sendmail import DeliveryPolicy, EmailDelivery
from etrans.domain.delivery_log import EventFilter
from etrans.pipeline import Message
from etrans.settings import MongoSettings, Secret
from etrans.workers.fetchlog import FetchlogTask
from etrans.workers.sendmail import SendmailTask
from tests.e2e.send_support import read_topic
from tests.harness.servers import unique_name
from tests.integration.sending_api import email, open_sending_api

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def mongo_settings(mongo_uri: str) -> Iterator[MongoSettings]:
    settings = MongoSettings(
        uri=Secret(mongo_uri), dbname=unique_name("tr").replace("-", "_"), collection="email_logs"
    )
    yield settings
    client: MongoClient[Any] = MongoClient(mongo_uri)
    client.drop_database(settings.dbname)
    client.close()


def _delivery_event(message_id: str) -> dict[str, Any]:
    return {
        "Event": "Sender",
        "@timestamp": "2026-12-06T10:00:00Z",
        "SMTP_Action": "delivered",
        "from": "hello@shop.example",
        "recipient": "rcpt@example.org",
        "response": "250 2.0.0 OK",
        "from_domain": "shop.example",
        "Event_ID": message_id,
        "message_id": message_id,
        "to_domain": "example.org",
        "agent": {"type": "filebeat", "hostname": "mx1", "name": "beat-1", "id": "a1"},
    }


async def test_one_emails_spans_form_one_trace(
    etrans_env: Any,
    billing_db: Any,
    kafka_test_config: dict[str, Any],
    smtp_server_factory: Any,
    mongo_settings: Any,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OtelTracer(provider)
    server = smtp_server_factory()

    async with open_sending_api(etrans_env, billing_db, with_relay=True, tracer=tracer) as api:
        user, _, domain = api.sender()
        key, _ = api.api_key(user, "sending_access")
        response = await api.client.post(
            "/emails",
            json=email(domain),
            headers={"X-API-KEY": key, "traceparent": f"00-{TRACE}-{PARENT}-01"},
        )
        assert response.status_code == 200
        message_id = (await response.get_json())["id"]
        await api.relay.relay_once()
        [record] = await trio.to_thread.run_sync(
            lambda: read_topic(
                api.env["KAFKA_BOOTSTRAP_SERVERS"],
                api.settings.kafka.topic,
                want=1,
                overrides=kafka_test_config,
                raw=True,
            )
        )

        pool = SmtpPool(
            SmtpConfig(
                host=server.host,
                port=server.port,
                implicit_tls=False,
                timeout_seconds=10.0,
                allow_plaintext_auth=True,
            ),
            size=1,
        )
        cipher = CredentialCipher(api.settings.tokens.secret.get(), api.settings.tokens.iv.get())
        delivery = EmailDelivery(
            credentials=RedisCredentialSource(api.redis, cipher),
            marks=RedisDeliveryMarks(api.redis),
            transport=pool,
            events=api.producer,
            log_topic=api.settings.kafka.topic + "-logs",
            policy=DeliveryPolicy(),
        )
        try:
            await SendmailTask(delivery, tracer)(
                Message(
                    api.settings.kafka.topic,
                    0,
                    0,
                    record["key"],
                    record["value"],
                    tuple((name, value) for name, value in record["headers"]),
                )
            )
        finally:
            await pool.aclose()
        assert len(server.received) == 1

        writer = MongoLogWriter(mongo_settings)
        fetchlog = FetchlogTask(
            EventFilter(), writer, owners=MessageOwnerLookup(api.usend), tracer=tracer
        )
        try:
            await writer.ensure_indexes()
            await fetchlog(
                [
                    Message(
                        "email-logs", 0, 0, None, json.dumps(_delivery_event(message_id)).encode()
                    )
                ]
            )
        finally:
            writer.close()

    spans = {span.name: span for span in exporter.get_finished_spans()}
    request, publish = spans["POST /emails"], spans["outbox publish"]
    deliver, store = spans["sendmail deliver"], spans["fetchlog store"]
    assert {f"{s.context.trace_id:032x}" for s in spans.values()} == {TRACE}
    assert [s.kind for s in (request, publish, deliver, store)] == [
        SpanKind.SERVER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.CONSUMER,
    ]
    assert f"{request.parent.span_id:016x}" == PARENT
    assert publish.parent.span_id == request.context.span_id
    assert deliver.parent.span_id == publish.context.span_id
    assert store.parent.span_id == request.context.span_id  # the email's row keeps the request's
    assert response.headers["traceresponse"] == f"00-{TRACE}-{request.context.span_id:016x}-01"
    assert (
        dict(record["headers"])["traceparent"]
        == f"00-{TRACE}-{publish.context.span_id:016x}-01".encode()
    )
