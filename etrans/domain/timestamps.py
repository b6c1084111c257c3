"""Timestamps in the API: the ones callers give (parsed) and the ones responses carry (formatted).

Given: ISO-8601, ``Z`` or an offset; no offset means UTC.

:func:`parse_timestamp` is the one rule: the request schema checks with it (400) and the use
cases convert with it.  Every parsed value is range-checked: an offset can move a valid local
time out of the range of ``datetime`` (``0001-01-01T00:00:00+01:00`` is before year 1 in UTC),
which raised OverflowError, a 500, in the list filters.

:func:`iso` is the one formatter of response timestamps: UTC with a ``Z``.  Two precisions are
part of the wire format: the email and log resources answer whole seconds
(``2026-12-06T02:50:47Z``), the account resources (domains, API keys, senders, subscriptions)
keep the stored microseconds (``2026-12-06T02:50:47.123456Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from etrans.errors import InvalidInput


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


def parse_timestamp_field(text: str, name: str) -> datetime:
    """A timestamp a caller gave in field ``name`` (a list filter): :func:`parse_timestamp`, or
    :class:`~etrans.errors.InvalidInput` (400) naming the field."""
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise InvalidInput(f"{name}: {exc}") from None


def iso(moment: datetime | None, *, whole_seconds: bool = False) -> str | None:
    """``moment`` in UTC with a ``Z`` (None stays None); ``whole_seconds`` drops the fraction."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    if whole_seconds:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.isoformat().replace("+00:00", "Z")
