"""Scheduled sending: the rules of ``scheduled_at`` (POST /emails, /emails/batch, PATCH
/emails/{id}/schedule).

``scheduled_at`` is an RFC 3339 date-time *with* its offset (``2026-12-24T09:00:00+01:00`` or
``...Z``): a moment, never a local time whose zone the server would have to guess.  It must be
in the future and at most :data:`MAX_AHEAD` (30 days) ahead of the moment the request is
accepted.  :func:`format_problem` is the request schema's check (400 with the field's name);
:func:`timing_problem` is the use case's, against its clock.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

MAX_AHEAD = timedelta(days=30)

# RFC 3339 ``date-time``: full date, ``T`` (or a space, or ``t``), time with seconds, an optional
# fraction (any number of digits, as RFC 3339 allows: Go's RFC3339Nano and Java's Instant write
# 9; cut to the 6 that datetime holds), and a mandatory offset.  ASCII digits only.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:(\.\d{1,6})\d*)?([Zz]|[+-]\d{2}:\d{2})$",
    re.ASCII)


class ScheduleError(ValueError):
    """``scheduled_at`` breaks a rule; the message is the API's ``detail``."""


def format_problem(text: str) -> str | None:
    """None when ``text`` is an RFC 3339 date-time with an offset, else why not."""
    try:
        parse_scheduled_at(text)
    except ScheduleError as exc:
        return str(exc)
    return None


def parse_scheduled_at(text: str) -> datetime:
    """``text`` as an aware UTC datetime; ScheduleError when it is not RFC 3339 with an offset."""
    found = _RFC3339.match(text)
    if not found:
        raise ScheduleError(
            f"invalid RFC 3339 date-time {text!r}: use e.g. 2026-12-24T09:00:00Z or "
            "2026-12-24T10:00:00+01:00 (the offset is required)")
    moment, fraction, offset = found.groups()
    value = moment + (fraction or "") + ("+00:00" if offset in ("Z", "z") else offset)
    try:
        return datetime.fromisoformat(value.replace("t", "T")).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ScheduleError(f"invalid date-time {text!r}") from None


def timing_problem(moment: datetime, now: datetime) -> str | None:
    """None when ``moment`` is in the future and at most 30 days after ``now``, else why not."""
    if moment <= now:
        return (f"scheduled_at {_show(moment)} is in the past (now is {_show(now)}): "
                "omit it to send at once")
    if moment - now > MAX_AHEAD:
        return (f"scheduled_at {_show(moment)} is more than {MAX_AHEAD.days} days ahead "
                f"(at most {_show(now + MAX_AHEAD)})")
    return None


def _show(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
