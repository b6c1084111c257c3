"""The W3C ``traceparent`` parser is strict (a malformed header starts a new trace) and what we
write is what the specification's examples show."""

from __future__ import annotations

import pytest

from etrans.domain.trace_context import TraceContext, parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_the_specifications_example_is_read() -> None:
    assert parse_traceparent(VALID) == TraceContext(TRACE, SPAN, True)
    assert parse_traceparent(VALID.encode()) == TraceContext(TRACE, SPAN, True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == TraceContext(TRACE, SPAN, False)
    assert parse_traceparent(VALID).traceparent == VALID  # type: ignore[union-attr]


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-03-what-comes-later") == TraceContext(
        TRACE, SPAN, True
    )
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01") == TraceContext(TRACE, SPAN, True)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        VALID.upper(),  # upper-case hex is invalid
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{SPAN}-01",  # version ff is forbidden
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 is exactly 55 characters
        f"00-{TRACE}-{SPAN}-1",
        f"00-{TRACE[:-1]}-{SPAN}-01x",
        f"00_{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-0g",
        f"0g-{TRACE}-{SPAN}-01",
        f"01-{TRACE}-{SPAN}-01x",  # a later version: the flags end with a dash or the string
        f" {VALID}",
        f"00-{TRACE}-{SPAN}-01\n",
        f"00-{TRACE[:31]}\n-{SPAN}-01",  # a line break where a digit belongs: never logged
        "00-" + "é" * 32 + f"-{SPAN}-01",
        b"\xff" * 55,
        f"01-{TRACE}-{SPAN}-01-" + "x" * 600,  # unbounded input
    ],
)
def test_a_malformed_traceparent_is_refused(value: str | bytes | None) -> None:
    assert parse_traceparent(value) is None


def test_new_and_child_contexts() -> None:
    first, second = TraceContext.new(), TraceContext.new()
    assert first.trace_id != second.trace_id
    for context in (first, first.child()):
        assert parse_traceparent(context.traceparent) == context
    child = first.child()
    assert (child.trace_id, child.sampled) == (first.trace_id, True)
    assert child.span_id != first.span_id
