"""Snapshots returned by ``Pipeline.statistics()``: for logs now, metrics later."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PartitionStats:
    topic: str
    partition: int
    # Next offset the group will read from (None before the first commit of this assignment).
    committed: int | None
    # High watermark as last observed by the consumer (None when unknown).
    high_watermark: int | None
    # Offsets handed to workers and not yet finished.
    in_flight: int

    @property
    def lag(self) -> int | None:
        if self.high_watermark is None or self.committed is None:
            return None
        return max(0, self.high_watermark - self.committed)


@dataclass(frozen=True)
class PipelineStats:
    processed: int = 0  # messages whose task returned
    failed: int = 0  # transient failures (each retry counts)
    poisoned: int = 0  # messages given up on (PoisonMessage or too many attempts)
    dead_lettered: int = 0  # of those, published to the dead-letter topic
    # Messages handed to Trio and not yet finished: waiting in the channel or the dispatcher's
    # inbox, running, or waiting for a retry.  Never more than channel_size.
    in_flight: int = 0
    channel_fill: int = 0  # of those, messages waiting in the channel (and inbox) for a worker
    channel_size: int = 0
    paused: bool = False  # back-pressure: partitions paused because the channel is full
    commits: int = 0
    rebalances: int = 0
    partitions: tuple[PartitionStats, ...] = field(default_factory=tuple)
    # Every offset this pipeline committed, last value per (topic, partition) - kept after a
    # partition is revoked, so the stats returned by ``run`` show what the shutdown committed.
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    # Records the consumer thread received while there was no room for them, held back (not
    # yet handed to Trio).  Messages in memory: in_flight + held.
    held: int = 0
