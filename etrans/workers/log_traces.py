"""The trace of each delivery-log document fetchlog stores (docs/operations.md, "Tracing").

An event whose record carries a ``traceparent`` header (the Reject events of ``etrans
sendmail``) is stored in that trace: a span per document (``fetchlog store``, the child of the
header's) and a DEBUG line ``delivery event stored`` with its ``trace_id``.  An event without
one (the SMTP server's, through Filebeat) takes its email's, read with its owner from the USEND
DB (``email_messages.traceparent``, when the lookup offers ``traceparents``).  Documents of no
known trace cost nothing but the look at their headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.domain.delivery_log import bare_message_id
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


def add_email_traces(documents: Sequence[dict[str, Any]], traces: list[TraceContext | None],
                     owners: object) -> None:
    """Fill in, in place, the traces of documents whose record had none, from their emails'."""
    lookup = getattr(owners, "traceparents", None)
    if lookup is None or all(traces):
        return
    ids = {index: bare_message_id(str(documents[index].get("message_id") or ""))
           for index, trace in enumerate(traces) if trace is None}
    known: dict[str, str] = lookup(list(ids.values()))
    for index, message_id in ids.items():
        if message_id in known:
            traces[index] = parse_traceparent(known[message_id])


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
