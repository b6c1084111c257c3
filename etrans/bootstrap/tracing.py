"""The tracer of this process (docs/operations.md, "Tracing").

Trace context always travels (request header, outbox row, Kafka header, ``trace_id`` in the
logs); spans are recorded and exported only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, from the environment or the env file.  Unset,
the OpenTelemetry SDK is never imported: :class:`~etrans.app.tracing.ContextOnlyTracer` gives
each step a span id and nothing else.  The CLI starts it with the logs
(:func:`start_tracing`); the wiring asks :func:`process_tracer`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from etrans.app.tracing import ContextOnlyTracer

if TYPE_CHECKING:
    from collections.abc import Mapping

    from etrans.app.tracing import Tracer

# The subcommands whose steps are spans of an email's trace.
TRACED = frozenset({"serve", "sendmail", "fetchlog", "webhooks", "dev"})
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_CONTEXT_ONLY = ContextOnlyTracer()
_process: dict[str, Tracer] = {}


def start_tracing(service: str, environment: Mapping[str, str]) -> None:
    """Export spans over OTLP/HTTP when an endpoint is set (a no-op otherwise)."""
    if service not in TRACED or not any(environment.get(name) for name in ENDPOINTS):
        return
    # The SDK reads its OTEL_* variables from the process environment: those of the env file
    # too (the environment still wins).
    for name, value in environment.items():
        if name.startswith("OTEL_"):
            os.environ.setdefault(name, value)
    from etrans.adapters.otel.tracer import otlp_tracer

    _process["tracer"] = otlp_tracer(f"etrans-{service}")


def process_tracer() -> Tracer:
    return _process.get("tracer", _CONTEXT_ONLY)
