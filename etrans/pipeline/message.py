"""The message a pipeline task receives: an immutable copy of one Kafka record.

Tasks never see confluent-kafka objects: a :class:`Message` is built on the consumer's thread and
is safe to keep, hash and pass between tasks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka record.  ``headers`` keeps order and duplicates, as Kafka does."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None

    def where(self) -> dict[str, object]:
        """``topic/partition/offset``: the keys bound to log lines about this message."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}
