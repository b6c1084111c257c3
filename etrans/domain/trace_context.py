"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the ``traceparent`` of one email.

A :class:`TraceContext` is where an email is in its trace: the 128-bit trace id shared by every
step (the API request, the outbox relay, sendmail, fetchlog), the 64-bit id of the span that is
the parent of the next step, and the sampled flag.  It travels as the ``traceparent`` text:
``00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>``.

:func:`parse_traceparent` is strict, as the specification asks of a receiver: lower-case hex
only, exact lengths, no all-zero ids, version ``ff`` refused; a later version is read by its
first four fields when it is at least 55 characters and the flags are followed by a dash or the
end.  Anything else is None: the caller starts a new trace, and the refused text is never kept,
logged or echoed (a header is the client's input).
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

# version-trace_id-parent_id-flags, lower-case hex; a later version may go on after a dash.
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z", re.DOTALL
)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
HEADER = "traceparent"


class TraceContext(NamedTuple):
    trace_id: str  # 32 lower-case hex digits, not all zero
    span_id: str  # 16 lower-case hex digits, not all zero: the parent of the next step
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def child(self) -> TraceContext:
        """The same trace, with a new span of ours as the parent of what follows."""
        return TraceContext(self.trace_id, new_span_id(), self.sampled)

    @classmethod
    def new(cls) -> TraceContext:
        """A new trace (sampled: the decision to record is ours, and we keep it)."""
        return cls(new_trace_id(), new_span_id(), True)


def new_trace_id() -> str:
    # random is reseeded in a forked child (os.register_at_fork): no two processes share ids.
    return f"{random.getrandbits(127) + 1:032x}"


def new_span_id() -> str:
    return f"{random.getrandbits(63) + 1:016x}"


def parse_traceparent(value: str | bytes | None) -> TraceContext | None:
    """The context of a ``traceparent`` header, or None when it is missing or malformed."""
    if value is None or len(value) > 512:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    found = _TRACEPARENT.match(value)
    if found is None:
        return None
    version, trace_id, span_id, flags, later = found.groups()
    if version == "ff" or (version == "00" and later is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))
