"""Trace context over the real processes (issue 17 item 2): ``etrans serve``, ``sendmail``,
``fetchlog`` and ``webhooks`` on the harness's services, the dev SMTP sink publishing the
delivery log as Filebeat would, a webhook endpoint of this test subscribed to the email events.
One POST /emails with a ``traceparent``, to a recipient the SMTP server accepts and one it refuses
(550 at RCPT): every log line of every process that names that email carries its trace id, the
send request and each email event (``email.queued``, ``email.sent``, ``email.delivered``,
``email.bounced``) carry the header (read by a real consumer), and with
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at an OTLP/HTTP receiver of this test (the export
requests decoded with opentelemetry-proto), each process exports its spans in that trace.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.e2e.dev_support import EtransProcess, start_real, wait_for
from tests.e2e.send_support import read_topic
from tests.harness.servers import unique_name
from tests.integration.webhook_support import Receiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class OtlpReceiver:
    """POST /v1/traces (OTLP/HTTP, protobuf): keeps (service.name, trace id, span name, kind)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, int]] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = ExportTraceServiceRequest.FromString(body)
                found = []
                for resource_spans in request.resource_spans:
                    service = next(
                        (
                            a.value.string_value
                            for a in resource_spans.resource.attributes
                            if a.key == "service.name"
                        ),
                        "",
                    )
                    for scope_spans in resource_spans.scope_spans:
                        found += [
                            (service, span.trace_id.hex(), span.name, span.kind)
                            for span in scope_spans.spans
                        ]
                with receiver._lock:
                    receiver.spans += found
                    receiver.requests += 1
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def services_of(self, trace_id: str) -> set[str]:
        with self._lock:
            return {service for service, trace, _, _ in self.spans if trace == trace_id}


def _lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for text in log.read_text(errors="replace").splitlines():
        if text.startswith("{"):
            try:
                lines.append(json.loads(text))
            except ValueError:
                continue
    return lines


def _about(log: Path, message_id: str) -> list[dict[str, Any]]:
    """The lines that name the email, in any field (its id, or its ``<id>`` header)."""
    return [line for line in _lines(log) if message_id in json.dumps(line)]


@pytest.mark.slow
def test_one_trace_through_serve_sendmail_fetchlog_and_webhooks(
    etrans_env: Any, tmp_path: Path, kafka_test_config: dict[str, Any], new_topic: Any
) -> None:
    receiver = OtlpReceiver().start()
    hooks = Receiver().start()
    env = etrans_env(
        ETRANS_REDIS_PREFIX=f"e2e:{uuid.uuid4().hex[:10]}:",
        ETRANS_LOG_LEVEL="DEBUG",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="200",
        KAFKA_EVENTS_TOPIC=new_topic(prefix="events"),
        WEBHOOKS_GROUP_ID=unique_name("hooks"),
        WEBHOOKS_ALLOW_PRIVATE_URLS="true",
    )
    backend, sink = start_real(env, tmp_path)
    try:
        webhooks_env = {k: v for k, v in env.items() if k != "BILLING_V4_URI"}
        backend.processes.append(
            EtransProcess(["webhooks"], webhooks_env, tmp_path / "webhooks.log").start()
        )
        logs = {p.args[0]: p.log for p in backend.processes}
        created = backend.call(
            "POST",
            "/webhooks",
            json={
                "url": hooks.url,
                "events": ["email.queued", "email.sent", "email.delivered", "email.bounced"],
            },
        )
        assert created.status_code == 201, created.text
        hooks.secret = created.json()["secret"]
        sent = httpx.post(
            backend.base_url + "/emails",
            timeout=30,
            headers={**backend.headers, "traceparent": f"00-{TRACE}-{PARENT}-01"},
            json={
                "from": f"Acme <news@{backend.domain}>",
                "to": ["a@example.org", "b@bounce.test"],
                "subject": "Hi",
                "text": "Hello",
            },
        )
        assert sent.status_code == 200, sent.text
        assert sent.headers["traceresponse"].startswith(f"00-{TRACE}-")
        message_id = sent.json()["id"]
        for command, event in (
            ("serve", "email queued"),
            ("serve", "outbox row published"),
            ("sendmail", "reject published"),
            ("fetchlog", "delivery event stored"),
            ("webhooks", "webhook attempt"),
        ):
            wait_for(
                lambda c=command, e=event: any(
                    line["event"] == e for line in _about(logs[c], message_id)
                ),
                60,
                f"{command}: {event}",
                backend.tails,
            )
        wait_for(
            lambda: (
                receiver.services_of(TRACE)
                >= {"etrans-serve", "etrans-sendmail", "etrans-fetchlog", "etrans-webhooks"}
            ),
            30,
            "spans of the trace from the four processes",
            lambda: f"{receiver.spans}\n{backend.tails()}",
        )
        wait_for(lambda: len(hooks.snapshot()) >= 4, 30, "the four webhook calls",
                 backend.tails)
        assert backend.stop() == [0, 0, 0, 0], backend.tails()
    finally:
        backend.stop()
        sink.stop()
        receiver.stop()
        hooks.stop()

    for command, log in logs.items():
        about = _about(log, message_id)
        assert about, f"{command}: no line about {message_id}"
        assert {line.get("trace_id") for line in about} == {TRACE}, (command, about)
    [record] = read_topic(
        env["KAFKA_BOOTSTRAP_SERVERS"],
        env["KAFKA_TOPIC"],
        want=1,
        overrides=kafka_test_config,
        raw=True,
    )
    assert record["key"] == message_id.encode()
    [(name, value)] = record["headers"]
    assert name == "traceparent"
    assert value.decode().startswith(f"00-{TRACE}-")
    events = read_topic(
        env["KAFKA_BOOTSTRAP_SERVERS"],
        env["KAFKA_EVENTS_TOPIC"],
        want=4,
        overrides=kafka_test_config,
        raw=True,
    )
    traced = {
        json.loads(event["value"])["type"]: dict(event["headers"]).get("traceparent", b"")
        for event in events
    }
    assert sorted(traced) == ["email.bounced", "email.delivered", "email.queued", "email.sent"], (
        traced
    )
    assert all(v.decode().startswith(f"00-{TRACE}-") for v in traced.values()), traced
    names = {(service, name) for service, trace, name, _ in receiver.spans if trace == TRACE}
    assert {
        ("etrans-serve", "POST /emails"),
        ("etrans-serve", "outbox publish"),
        ("etrans-sendmail", "sendmail deliver"),
        ("etrans-fetchlog", "fetchlog store"),
        ("etrans-webhooks", "webhook deliver"),
    } <= names
