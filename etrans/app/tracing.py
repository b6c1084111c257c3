"""The tracing port: a span per step of an email (the API request, the outbox relay's publish,
sendmail's delivery, fetchlog's storing), each the child of the step before it.

What travels between the steps is a :class:`~etrans.domain.trace_context.TraceContext` (the
``traceparent`` of the request, of the outbox row, of the Kafka header).  A :class:`Tracer`
turns the parent's context into a span of this step whose own context is the parent of the
next.  :class:`ContextOnlyTracer` records nothing: it only gives each step a new span id, so
that the ``traceparent`` handed on names this step, as the W3C specification asks.  With
``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the wiring uses the OpenTelemetry SDK's instead
(:mod:`etrans.adapters.otel`), which exports the spans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

from etrans.domain.trace_context import TraceContext

if TYPE_CHECKING:
    from collections.abc import Mapping

SpanKind = Literal["server", "producer", "consumer", "internal"]


class Span(Protocol):
    @property
    def context(self) -> TraceContext:
        """This span's context: the parent of the next step."""
        ...

    def end(self, error: str | None = None) -> None:
        """The step is over (``error``: why it failed)."""
        ...


class Tracer(Protocol):
    def start(
        self,
        name: str,
        parent: TraceContext | None,
        *,
        kind: SpanKind = "internal",
        attributes: Mapping[str, str | int] | None = None,
    ) -> Span:
        """A span of this step, the child of ``parent`` (None: a new trace)."""
        ...


class _ContextOnlySpan:
    __slots__ = ("context",)

    def __init__(self, context: TraceContext) -> None:
        self.context = context

    def end(self, error: str | None = None) -> None:
        pass


class ContextOnlyTracer:
    """Records nothing: a new span id under the parent (or a new trace), at no other cost."""

    def start(
        self,
        name: str,
        parent: TraceContext | None,
        *,
        kind: SpanKind = "internal",
        attributes: Mapping[str, str | int] | None = None,
    ) -> Span:
        return _ContextOnlySpan(parent.child() if parent is not None else TraceContext.new())
