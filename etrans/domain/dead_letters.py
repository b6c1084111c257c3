"""What a dead-lettered record carries, and the rules of re-driving it.

The pipeline (``etrans/pipeline/dead_letter.py``) copies a poison message to
KAFKA_DEAD_LETTER_TOPIC with its key, value and headers, and appends three headers:
``etrans-error`` (the error text), ``etrans-error-type`` (the exception class) and
``etrans-source`` (``topic/partition/offset`` of the original record).  A replay produces the
original key, value and headers (those three removed) to the source topic, with
``etrans-replayed-from`` (``dlq-topic/partition/offset``) added so that a record dead-lettered
again can be traced to the earlier one.

:class:`DeadLetterFilter` is the one rule of which records a ``list`` or ``replay`` takes;
:func:`parse_moment` reads the ``--since``/``--until`` values (ISO-8601, or an age: ``90s``,
``15m``, ``2h``, ``7d``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from etrans.domain.timestamps import parse_timestamp

ERROR_HEADER = "etrans-error"
ERROR_TYPE_HEADER = "etrans-error-type"
SOURCE_HEADER = "etrans-source"
REPLAYED_FROM_HEADER = "etrans-replayed-from"
# Headers a dead-lettering or a replay adds: never part of the original record.
ADDED_HEADERS = frozenset({ERROR_HEADER, ERROR_TYPE_HEADER, SOURCE_HEADER, REPLAYED_FROM_HEADER})


@dataclass(frozen=True)
class Source:
    """Where a dead-lettered record was first read: ``topic/partition/offset``."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Source | None:
        """From the ``etrans-source`` header; None when it is not ``topic/partition/offset``
        (a Kafka topic name has no ``/``)."""
        topic, _, rest = text.partition("/")
        partition, _, offset = rest.partition("/")
        if not topic or not partition.isdigit() or not offset.isdigit():
            return None
        return cls(topic, int(partition), int(offset))


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, read back."""

    topic: str  # the dead-letter topic
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def where(self) -> str:
        """``partition/offset`` in the dead-letter topic: what ``etrans dlq show`` takes."""
        return f"{self.partition}/{self.offset}"

    @property
    def time(self) -> datetime | None:
        if self.timestamp_ms is None or self.timestamp_ms <= 0:
            return None
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` as text, or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def error(self) -> str:
        return self.header(ERROR_HEADER) or ""

    @property
    def error_type(self) -> str:
        return self.header(ERROR_TYPE_HEADER) or ""

    @property
    def source(self) -> Source | None:
        text = self.header(SOURCE_HEADER)
        return Source.parse(text) if text is not None else None

    @property
    def message_id(self) -> str | None:
        """The email's ``message_id`` when the value is a JSON object naming one (a send request,
        a delivery-log event, an email event), else None."""
        try:
            document = json.loads(self.value or b"")
        except ValueError:
            return None
        if not isinstance(document, dict):
            return None
        for holder in (document, document.get("payload"), document.get("data")):
            if isinstance(holder, dict) and isinstance(holder.get("message_id"), str | int):
                return str(holder["message_id"])
        return None

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The original record's headers, and where this replay comes from."""
        original = [(k, v) for k, v in self.headers if k not in ADDED_HEADERS]
        return [*original, (REPLAYED_FROM_HEADER, f"{self.topic}/{self.where}".encode())]


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a command takes: all of these that are given must hold."""

    topic: str | None = None  # the source topic
    since: datetime | None = None  # dead-lettered at or after
    until: datetime | None = None  # dead-lettered before
    error: str | None = None  # in etrans-error or etrans-error-type, case-insensitive

    def matches(self, letter: DeadLetter) -> bool:
        if self.topic is not None:
            source = letter.source
            if source is None or source.topic != self.topic:
                return False
        if self.since is not None or self.until is not None:
            moment = letter.time
            if moment is None:
                return False
            if self.since is not None and moment < self.since:
                return False
            if self.until is not None and moment >= self.until:
                return False
        if self.error is not None:
            needle = self.error.casefold()
            if needle not in letter.error.casefold() and needle not in letter.error_type.casefold():
                return False
        return True


_AGE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_moment(text: str, now: datetime) -> datetime:
    """An ISO-8601 timestamp (no offset: UTC) or an age before ``now`` (``90s``, ``15m``,
    ``2h``, ``7d``); ValueError naming both forms when ``text`` is neither."""
    age = _AGE.match(text)
    if age is not None:
        return now - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
    try:
        return parse_timestamp(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO-8601 time (2026-12-06T18:00:00Z) nor an "
                         "age (90s, 15m, 2h, 7d)") from None
