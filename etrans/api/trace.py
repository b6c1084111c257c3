"""Trace context of each API request (W3C Trace Context; docs/operations.md, "Tracing").

The request's ``traceparent`` header, when there is exactly one and it is valid
(:func:`~etrans.domain.trace_context.parse_traceparent`), is the parent of the request's span;
otherwise a new trace starts (a malformed header is ignored: never an error, never logged).
The trace id is bound to every log line of the request (structlog contextvars, ``trace_id``),
handed to the send path (the outbox row keeps it for the relay, which puts it in the Kafka
record's ``traceparent`` header), and returned in the ``traceresponse`` header (Trace Context
Level 2): ``00-<trace id>-<the request span's id>-<flags>``, for the client to correlate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response, g, request
from structlog.contextvars import bind_contextvars

from etrans.domain.trace_context import HEADER, parse_traceparent

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from etrans.app.tracing import Tracer

RESPONSE_HEADER = "traceresponse"


def register_tracing(app: QuartTrio, tracer: Tracer) -> None:
    @app.before_request
    async def _start_span() -> None:
        values = request.headers.getlist(HEADER)
        parent = parse_traceparent(values[0]) if len(values) == 1 else None
        rule = request.url_rule
        span = tracer.start(
            f"{request.method} {rule.rule if rule is not None else 'unmatched'}",
            parent,
            kind="server",
        )
        g.trace_span = span
        bind_contextvars(trace_id=span.context.trace_id)

    @app.after_request
    async def _end_span(response: Response) -> Response:
        span = g.get("trace_span")
        if span is not None:
            response.headers[RESPONSE_HEADER] = span.context.traceparent
            span.end(f"HTTP {response.status_code}" if response.status_code >= 500 else None)
        return response


def current_traceparent() -> str | None:
    """The ``traceparent`` of the request's span (the parent of what the request queues)."""
    span = g.get("trace_span")
    return None if span is None else span.context.traceparent
