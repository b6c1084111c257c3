"""The rules of ``scheduled_at`` (:mod:`etrans.domain.schedule`) and of the status a scheduled
email is stored with (:func:`etrans.app.schedules.stored_status`): pure, no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from etrans.app.schedules import scheduled_time, stored_status
from etrans.domain.schedule import (
    MAX_AHEAD,
    ScheduleError,
    format_problem,
    parse_scheduled_at,
    timing_problem,
)
from etrans.domain.status import display_label, parse_status_filter
from etrans.errors import InvalidInput

NOW = datetime(2026, 12, 6, 21, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "moment"), [
    ("2026-12-24T08:00:00Z", datetime(2026, 12, 24, 8, tzinfo=UTC)),
    ("2026-12-24t08:00:00z", datetime(2026, 12, 24, 8, tzinfo=UTC)),
    ("2026-12-24 09:00:00+01:00", datetime(2026, 12, 24, 8, tzinfo=UTC)),
    ("2026-12-24T03:30:00.250-04:30", datetime(2026, 12, 24, 8, 0, 0, 250000, tzinfo=UTC)),
    ("2026-12-24T08:00:00.123456+00:00", datetime(2026, 12, 24, 8, 0, 0, 123456, tzinfo=UTC)),
    # RFC 3339 allows any number of fraction digits: Go's RFC3339Nano and Java's Instant write
    # up to 9; beyond microseconds they are cut (datetime holds no more).
    ("2026-12-24T08:00:00.123456789Z", datetime(2026, 12, 24, 8, 0, 0, 123456, tzinfo=UTC)),
    ("2026-12-24T09:00:00.9999999+01:00", datetime(2026, 12, 24, 8, 0, 0, 999999, tzinfo=UTC)),
])
def test_rfc3339_with_an_offset_is_one_moment_in_utc(text: str, moment: datetime) -> None:
    assert parse_scheduled_at(text) == moment
    assert format_problem(text) is None


@pytest.mark.parametrize(("text", "says"), [
    ("2026-12-24T08:00:00", "the offset is required"),
    ("2026-12-24T08:00Z", "invalid RFC 3339"),  # seconds are required
    ("2026-12-24", "invalid RFC 3339"),
    ("2026-12-24T08:00:00.Z", "invalid RFC 3339"),  # a dot needs a digit
    ("2026-12-24T08:00:0012Z", "invalid RFC 3339"),  # digits after the seconds need a dot
    ("\u0662026-12-24T08:00:00Z", "invalid RFC 3339"),  # ASCII digits only (not Arabic-Indic)
    ("2026-12-24T08:00:00.\u0661Z", "invalid RFC 3339"),
    ("2026-12-24T08:00:00+0100", "invalid RFC 3339"),
    ("2026-02-30T08:00:00Z", "invalid date-time"),
    ("2026-12-24T24:00:00Z", "invalid date-time"),
    ("0001-01-01T00:00:00+01:00", "invalid date-time"),  # before year 1 in UTC
    ("next tuesday", "invalid RFC 3339"),
    ("", "invalid RFC 3339"),
])
def test_anything_else_is_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        parse_scheduled_at(text)
    assert says in (format_problem(text) or "")


def test_the_moment_must_be_ahead_and_within_30_days() -> None:
    assert timing_problem(NOW + timedelta(seconds=1), NOW) is None
    assert timing_problem(NOW + MAX_AHEAD, NOW) is None
    assert "is in the past" in (timing_problem(NOW, NOW) or "")
    assert "is in the past" in (timing_problem(NOW - timedelta(days=1), NOW) or "")
    assert timing_problem(NOW + MAX_AHEAD + timedelta(seconds=1), NOW) == (
        "scheduled_at 2027-01-05T21:00:01Z is more than 30 days ahead (at most "
        "2027-01-05T21:00:00Z)")


def test_scheduled_time_of_a_request() -> None:
    assert scheduled_time({}, NOW) is None
    assert scheduled_time({"scheduled_at": None}, NOW) is None
    assert scheduled_time({"scheduled_at": "2026-12-07T00:00:00+01:00"}, NOW) == (
        datetime(2026, 12, 6, 23, tzinfo=UTC))
    with pytest.raises(InvalidInput, match="is in the past"):
        scheduled_time({"scheduled_at": "2026-12-06T21:00:00Z"}, NOW)
    with pytest.raises(InvalidInput, match=r"^scheduled_at: invalid RFC 3339"):
        scheduled_time({"scheduled_at": "2026-12-07T00:00:00"}, NOW)


def test_statuses_of_a_scheduled_email() -> None:
    assert stored_status(b"{}", NOW) == "scheduled"
    assert stored_status(b"{}", None) == "queued"
    assert stored_status(b"", NOW) == "suppressed"  # nothing to send, scheduled or not
    assert (display_label("scheduled"), display_label("cancelled")) == ("Scheduled", "Cancelled")
    assert parse_status_filter("Scheduled,cancelled,queued") == ("Scheduled", "Cancelled",
                                                                   "Queued")
