"""The trace context of the rows the outbox relay publishes (docs/operations.md, "Tracing").

A row written by an API request keeps that request's ``traceparent``
(``email_outbox.traceparent``).  When the relay publishes it, it starts a span of its own
(``outbox publish``, a producer span, the child of the row's) and puts that span's context in
the record's ``traceparent`` header; the span ends with the broker's answer.  A pass whose rows
have no trace context publishes without headers, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.domain.trace_context import HEADER, parse_traceparent
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from etrans.adapters.sql.outbox_store import OutboxRow
    from etrans.app.tracing import Span, Tracer

log = get_logger(__name__)

Headers = list[tuple[str, str]]


class PassSpans:
    """The spans of one pass's rows (None for a row without trace context)."""

    def __init__(self, tracer: Tracer, rows: Sequence[OutboxRow]) -> None:
        self.spans: list[Span | None] = [None] * len(rows)
        self.rows = rows
        for index, row in enumerate(rows):
            parent = parse_traceparent(row.traceparent) if row.traceparent else None
            if parent is not None:
                self.spans[index] = tracer.start(
                    "outbox publish",
                    parent,
                    kind="producer",
                    attributes={"messaging.destination.name": row.topic},
                )

    def headers(self) -> list[Headers | None] | None:
        """The records' headers, None when no row has a trace (no headers at all)."""
        if not any(self.spans):
            return None
        return [
            [(HEADER, span.context.traceparent)] if span is not None else None
            for span in self.spans
        ]

    def end(self, results: Mapping[int, object | None]) -> None:
        """End each span with its row's answer; a DEBUG line per published row."""
        for row, span in zip(self.rows, self.spans, strict=True):
            if span is None:
                continue
            error = results.get(row.id)
            span.end(None if error is None else str(error))
            if error is None:
                log.debug(
                    "outbox row published",
                    message_id=row.message_id,
                    topic=row.topic,
                    trace_id=span.context.trace_id,
                )


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a row's ``traceparent`` (for its log lines), None without a valid one."""
    context = parse_traceparent(traceparent) if traceparent else None
    return context.trace_id if context is not None else None
