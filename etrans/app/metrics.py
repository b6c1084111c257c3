"""The metrics port: what the API, the pipelines and the use cases count and time.

Two kinds of figures, so that the hot paths pay next to nothing:

- figures a component already keeps (``Pipeline.statistics()``, the tasks' counters) are read
  when the metrics are scraped, on the Trio thread (:class:`MetricsRegistry.watch_pipeline`,
  :class:`MetricsRegistry.watch_counts`): nothing is added to the path of a message;
- latencies, and counts nothing kept before, go through instruments bound to their labels once,
  at wiring time (:class:`SmtpMetrics`, :class:`LogInsertMetrics`): one ``inc`` or ``observe``
  per event, no label lookup.

The default of every instrument is :data:`NOTHING`, so a use case built without metrics (unit
tests, tools) counts into nothing.  The Prometheus adapter is
:mod:`etrans.adapters.metrics.prometheus`; the names and labels are listed in
docs/operations.md, "Metrics".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class _Nothing:
    """An instrument that records nothing."""

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


NOTHING = _Nothing()

# The classes of SMTP replies sendmail counts: the first digit of the code, and "unavailable"
# (no reply: the server could not be reached or the session broke).
SMTP_REPLY_CLASSES = ("2xx", "4xx", "5xx", "unavailable")


def _no_replies() -> Mapping[str, Counter]:
    return dict.fromkeys(SMTP_REPLY_CLASSES, NOTHING)


@dataclass(frozen=True)
class SmtpMetrics:
    """sendmail: every SMTP reply to a transaction by class (the data's reply, or the reply
    that refused a recipient), and the time from the send request's creation to the 250."""

    replies: Mapping[str, Counter] = field(default_factory=_no_replies)
    delivery_seconds: Histogram = NOTHING

    def reply(self, code: int | None) -> None:
        """Count one reply with ``code`` (None: no reply, the server was unavailable)."""
        if code is None or not 200 <= code < 600:
            self.replies["unavailable"].inc()
        elif code < 300:
            self.replies["2xx"].inc()
        elif code < 500:
            self.replies["4xx"].inc()
        else:
            self.replies["5xx"].inc()


@dataclass(frozen=True)
class LogInsertMetrics:
    """fetchlog: one ``observe`` each per batch inserted into the delivery-log store."""

    seconds: Histogram = NOTHING
    documents: Histogram = NOTHING


@dataclass(frozen=True)
class WebhookMetrics:
    """webhooks: one ``observe`` per POST to an endpoint, whatever it answered (a timeout
    too): the time from sending the request to the answer or the error."""

    post_seconds: Histogram = NOTHING


class HttpMetrics(Protocol):
    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request; ``route`` is the route's template (``/emails/<email_id>``),
        never the raw path (no ids of anyone in a label)."""


class PartitionFigures(Protocol):
    """One assigned partition, as ``etrans.pipeline.stats.PartitionStats`` has it."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def lag(self) -> int | None: ...


class PipelineFigures(Protocol):
    """A pipeline's counters, as ``etrans.pipeline.stats.PipelineStats`` has them."""

    @property
    def processed(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def poisoned(self) -> int: ...
    @property
    def dead_lettered(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def channel_fill(self) -> int: ...
    @property
    def channel_size(self) -> int: ...
    @property
    def paused(self) -> bool: ...
    @property
    def commits(self) -> int: ...
    @property
    def rebalances(self) -> int: ...
    @property
    def partitions(self) -> Sequence[PartitionFigures]: ...


class MetricsRegistry(Protocol):
    """Where a process's metrics are made and read (one per process)."""

    def http(self) -> HttpMetrics: ...
    def smtp(self) -> SmtpMetrics: ...
    def log_inserts(self, store: str) -> LogInsertMetrics: ...
    def webhooks(self) -> WebhookMetrics: ...

    def watch_pipeline(self, worker: str, statistics: Callable[[], PipelineFigures]) -> None:
        """Read ``statistics()`` at every scrape, labelled ``worker``."""

    def watch_counts(self, name: str, worker: str,
                     counts: Callable[[], Mapping[str, int]]) -> None:
        """Counters named in the catalog (``name``), one per key of ``counts()``."""

    def watch_backlog(self, rows: str, age: str,
                      backlog: Callable[[], Awaitable[tuple[int, float]]]) -> None:
        """Gauges named in the catalog (``rows``, ``age``) set from ``backlog()`` -> (rows
        waiting, seconds of the oldest), read at every scrape (a database query: bounded in
        time, the last values kept when it fails)."""

    async def render(self) -> tuple[bytes, str]:
        """The exposition (body, content type), after the scrape-time reads."""
