"""Timestamps given by API callers: ISO-8601, ``Z`` or an offset; no offset means UTC.

:func:`parse_timestamp` is the one rule: the request schema checks with it (400) and the use
cases convert with it.  Every parsed value is range-checked: an offset can move a valid local
time out of the range of ``datetime`` (``0001-01-01T00:00:00+01:00`` is before year 1 in UTC),
which raised OverflowError, a 500, in the list filters.
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(text: str) -> datetime:
    """``text`` as an aware UTC datetime; ValueError (with a message) when it is not one."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid ISO-8601 timestamp {text!r}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp out of range {text!r}: it must fall within years "
                         "1..9999 in UTC") from None
