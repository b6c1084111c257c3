"""What a pipeline is told: topics, group, librdkafka settings, concurrency, timing and policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

# Settings the pipeline must own: it stores and commits offsets itself, after completion.
FORCED_CONSUMER_CONFIG: dict[str, str | int | bool] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
}

# Defaults the caller may override through ``PipelineConfig.kafka``.  librdkafka's prefetch queue
# is capped at 16 MB (default 64 MB) so that a large backlog does not sit in its memory as well as
# in the channel.  (Lowering queued.min.messages instead made tansu fetches 40x slower.)
# ``fetch.wait.max.ms`` (librdkafka: 500): how long the broker may hold a fetch that found no new
# record.  Kafka answers a held fetch as soon as a record arrives, so there it only sets how
# often an idle consumer asks (20 times a second per broker at 50); tansu does not, it answers
# at the end of the wait: a record produced meanwhile waited for it, up to 500 ms (the email's
# time to inbox was 60-160 ms at idle, p50 170 ms at 50 emails/s; consumer-only probe on tansu,
# produce -> consume p50 77 ms at 500, 12 ms at 50: docs/performance.md).
DEFAULT_CONSUMER_CONFIG: dict[str, str | int | bool] = {
    "queued.max.messages.kbytes": 16_384,
    "fetch.wait.max.ms": 50,
}


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff for transient failures.

    ``max_attempts=None`` retries until shutdown (or revoke); an integer N makes the N-th
    consecutive transient failure of one message count as poison.
    """

    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    multiplier: float = 2.0
    max_attempts: int | None = None

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))


@dataclass(frozen=True)
class PipelineConfig:
    """Configuration of one pipeline (one consumer, one thread, ``workers`` Trio tasks).

    ``kafka`` is the librdkafka configuration (``KafkaSettings.librdkafka()``, plus test overrides);
    ``group.id``, ``group.instance.id``, ``auto.offset.reset``, ``partition.assignment.strategy``
    and the forced commit settings are added from the fields below.
    """

    topics: tuple[str, ...]
    group_id: str
    kafka: Mapping[str, str | int | bool]
    # Static group membership (KIP-345): a consumer restarted with the same id within
    # ``session.timeout.ms`` gets its partitions back at once, without a rebalance.  None:
    # dynamic membership.  Unique per consumer within the group.
    group_instance_id: str | None = None
    workers: int = 10
    # Messages handed to Trio and not yet finished, at most (the bound on buffered memory):
    # waiting in the channel or the dispatcher's inbox, running (even past message_timeout, if a
    # task ignores its cancellation), waiting for a retry.  When it is reached, the consumer
    # thread waits for room (librdkafka keeps prefetching into its bounded queue); if there is
    # still none after ``pause_after`` seconds it pauses its partitions and keeps polling, so it
    # is never evicted; it resumes at half of it.  Records that arrive without room are held
    # back on the consumer thread (``PipelineStats.held``), not handed out.
    channel_size: int = 1000
    # Finished messages whose offsets cannot be committed yet (an earlier message of their
    # partition still runs or waits for a retry) are remembered, ~70 bytes each.  Past this many,
    # the excess counts against channel_size: no new message is handed out until the earlier
    # one finishes.  Bounds that memory while one message retries for minutes.
    max_done_behind: int = 100_000
    pause_after: float = 0.5
    commit_interval: float = 1.0
    # Per-message (per-batch) timeout; exceeding it is a transient failure.  None: no limit.
    message_timeout: float | None = None
    batch_size: int = 1
    batch_linger: float = 0.0
    dead_letter_topic: str | None = None
    # Seek every assigned partition to its beginning, whatever the group has committed.
    from_earliest: bool = False
    # Finish once every assigned partition is done up to its end as observed by the first fetch
    # after assignment (messages past it are left for the next run).  A consumer with no
    # partition assigned never finishes this way (an eager rebalance empties the assignment).
    stop_at_end: bool = False
    assignment_strategy: str = "range,roundrobin"
    auto_offset_reset: str = "earliest"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # How long a revoke waits for the partition's in-flight messages before committing.
    revoke_timeout: float = 10.0
    # How long the shutdown waits for the consumer thread to commit and close.
    close_timeout: float = 10.0
    # consume() batch size and timeout on the consumer thread.
    poll_batch: int = 500
    poll_timeout: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.topics, str):
            object.__setattr__(self, "topics", (self.topics,))
        if not self.topics:
            raise ValueError("PipelineConfig.topics is empty")
        if self.max_done_behind < 0:
            raise ValueError("max_done_behind must not be negative")
        if self.workers < 1 or self.channel_size < 1 or self.batch_size < 1:
            raise ValueError("workers, channel_size and batch_size must be at least 1")

    def consumer_config(self) -> dict[str, str | int | bool]:
        """The librdkafka configuration of the pipeline's consumer."""
        conf: dict[str, str | int | bool] = dict(DEFAULT_CONSUMER_CONFIG)
        conf.update(self.kafka)
        conf.update(
            {
                "group.id": self.group_id,
                "auto.offset.reset": self.auto_offset_reset,
                "partition.assignment.strategy": self.assignment_strategy,
            }
        )
        if self.group_instance_id is not None:
            conf["group.instance.id"] = self.group_instance_id
        conf.update(FORCED_CONSUMER_CONFIG)
        return conf
