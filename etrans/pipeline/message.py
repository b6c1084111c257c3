"""The message a pipeline task receives: an immutable copy of one Kafka record.

Tasks never see confluent-kafka objects: a :class:`Message` is built on the consumer's thread and
is safe to keep, hash and pass between tasks.  It is a ``NamedTuple`` rather than a frozen
dataclass because one is built per record on the consumer thread, where a frozen dataclass's
``__init__`` (one ``object.__setattr__`` per field) cost four times as much; read it by field name.
"""

from __future__ import annotations

from typing import NamedTuple


class Message(NamedTuple):
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
