"""Without an OTLP endpoint, nothing of the OpenTelemetry SDK is imported (no cost when unset):
checked in a fresh interpreter that wires the traced subcommands' modules; with one
(from the environment or the env file) the SDK's tracer is used, named after the subcommand."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from etrans.bootstrap import fetchlog, sendmail, serve, webhooks
import etrans.workers.webhooks
from etrans.bootstrap.tracing import process_tracer, start_tracing
from etrans.app.tracing import ContextOnlyTracer
for service in ("serve", "sendmail", "fetchlog", "webhooks", "dev"):
    start_tracing(service, {"OTEL_SERVICE_NAME": "x"})
assert isinstance(process_tracer(), ContextOnlyTracer)
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
start_tracing("db", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
assert isinstance(process_tracer(), ContextOnlyTracer)
start_tracing("sendmail", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
assert type(process_tracer()).__name__ == "OtelTracer"
assert process_tracer().provider.resource.attributes["service.name"] == "etrans-sendmail"
# Variables of the env file reach the SDK (it reads the process environment).
start_tracing("fetchlog", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces",
                           "OTEL_SERVICE_NAME": "mail-logs"})
assert process_tracer().provider.resource.attributes["service.name"] == "mail-logs"
"""


def test_the_sdk_is_imported_only_with_an_endpoint() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
