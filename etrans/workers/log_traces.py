"""The trace of each delivery-log document fetchlog stores (docs/operations.md, "Tracing").

An event whose record carries a ``traceparent`` header (the Reject events of ``etrans
sendmail``) is stored in that trace: a span per document (``fetchlog store``, the child of the
header's) and a DEBUG line ``delivery event stored`` with its ``trace_id``.  Documents of no
known trace cost nothing but the look at their headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.domain.trace_context import HEADER, parse_traceparent
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.app.tracing import Tracer
    from etrans.domain.trace_context import TraceContext
    from etrans.pipeline import Message

log = get_logger(__name__)


def record_trace(message: Message) -> TraceContext | None:
    """The context of the record's ``traceparent`` header, if it has a valid one."""
    return parse_traceparent(message.header(HEADER)) if message.headers else None


def trace_documents(tracer: Tracer, documents: Sequence[dict[str, Any]],
                    traces: Sequence[TraceContext | None]) -> None:
    """A span and a DEBUG line per stored document whose email's trace is known."""
    for document, parent in zip(documents, traces, strict=True):
        if parent is None:
            continue
        tracer.start("fetchlog store", parent, kind="consumer", attributes={
            "messaging.message.id": document["message_id"],
            "etrans.event": document["event"]}).end()
        log.debug("delivery event stored", message_id=document["message_id"],
                  log_event=document["event"], trace_id=parent.trace_id)
