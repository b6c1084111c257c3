"""The :class:`~etrans.app.tracing.Tracer` port on the OpenTelemetry SDK.

Imported only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
is set (:mod:`etrans.bootstrap.tracing`): without it no SDK module is loaded and each step
costs one random span id.  Spans are started with an explicit parent (the
:class:`~etrans.domain.trace_context.TraceContext` carried by the request, the outbox row or
the Kafka header) and never made current: nothing leaks into OpenTelemetry's own context
between Trio tasks.  :func:`otlp_tracer` exports them in batches from the SDK's thread
(``BatchSpanProcessor``: ``OTEL_BSP_*``) with the OTLP/HTTP exporter, configured by the
standard ``OTEL_EXPORTER_OTLP_*`` variables; ``OTEL_SERVICE_NAME`` overrides the service name,
``OTEL_TRACES_SAMPLER`` the sampler (by default the parent's decision, else always).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from etrans.domain.trace_context import TraceContext

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.sdk.trace import TracerProvider

    from etrans.app.tracing import Span
    from etrans.app.tracing import SpanKind as Kind

_KINDS = {
    "server": SpanKind.SERVER,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
    "internal": SpanKind.INTERNAL,
}


class _OtelSpan:
    __slots__ = ("_span", "context")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        found = span.get_span_context()
        self.context = TraceContext(
            f"{found.trace_id:032x}", f"{found.span_id:016x}", found.trace_flags.sampled
        )

    def end(self, error: str | None = None) -> None:
        if error is not None:
            self._span.set_status(Status(StatusCode.ERROR, error))
        self._span.end()


class OtelTracer:
    """Spans of the SDK's ``provider``, each the child of the context it is given."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("etrans")

    def start(
        self,
        name: str,
        parent: TraceContext | None,
        *,
        kind: Kind = "internal",
        attributes: Mapping[str, str | int] | None = None,
    ) -> Span:
        context = None
        if parent is not None:
            remote = SpanContext(
                int(parent.trace_id, 16),
                int(parent.span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(
                    TraceFlags.SAMPLED if parent.sampled else TraceFlags.DEFAULT
                ),
            )
            context = trace.set_span_in_context(NonRecordingSpan(remote))
        return _OtelSpan(
            self._tracer.start_span(name, context=context, kind=_KINDS[kind], attributes=attributes)
        )


def otlp_tracer(service_name: str) -> OtelTracer:
    """Spans exported over OTLP/HTTP by a batch processor (flushed at exit by the SDK)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    given = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(given))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return OtelTracer(provider)
