"""The metrics port (:mod:`etrans.app.metrics`) on prometheus-client: every metric of etrans.

:data:`CATALOG` names every family a process can expose (docs/operations.md, "Metrics", lists
them with their labels; ``config/grafana-dashboard.json`` is built from these names and
``tests/unit/test_metrics_catalog.py`` checks both).  Each process has its own
:class:`PrometheusMetrics` and its own ``CollectorRegistry`` (none of the library's global
default metrics: ``etrans dev`` and the tests build several in one process).

Pipeline figures and the tasks' counters are read at scrape time, on the Trio thread, from the
``statistics()`` those components already keep: :meth:`PrometheusMetrics.render` reads them,
then renders; the collector only returns what was read, so nothing is read from another thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from etrans.app.metrics import (
    SMTP_REPLY_CLASSES,
    LogInsertMetrics,
    SmtpMetrics,
    WebhookMetrics,
)
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping

    from etrans.app.metrics import PipelineFigures

log = get_logger(__name__)

# name (as exposed, counters with their _total) -> (type, labels, help)
CATALOG: dict[str, tuple[str, tuple[str, ...], str]] = {
    "etrans_http_requests_total": (
        "counter", ("method", "route", "status"), "HTTP requests answered"),
    "etrans_http_request_duration_seconds": (
        "histogram", ("method", "route", "status"), "HTTP request handling time"),
    "etrans_pipeline_processed_total": (
        "counter", ("worker",), "Messages (or batches) whose task returned"),
    "etrans_pipeline_retries_total": (
        "counter", ("worker",), "Transient failures of a task (each retry counts)"),
    "etrans_pipeline_poisoned_total": (
        "counter", ("worker",), "Messages given up on (never retried again)"),
    "etrans_pipeline_dead_lettered_total": (
        "counter", ("worker",), "Poisoned messages published to the dead-letter topic"),
    "etrans_pipeline_commits_total": ("counter", ("worker",), "Offset commits"),
    "etrans_pipeline_rebalances_total": ("counter", ("worker",), "Consumer-group rebalances"),
    "etrans_pipeline_in_flight": (
        "gauge", ("worker",), "Messages handed to Trio and not yet finished"),
    "etrans_pipeline_channel_occupancy": (
        "gauge", ("worker",), "Messages waiting in the channel for a worker task"),
    "etrans_pipeline_channel_capacity": ("gauge", ("worker",), "Size of the channel"),
    "etrans_pipeline_paused": (
        "gauge", ("worker",), "1 while back-pressure pauses the partitions"),
    "etrans_pipeline_consumer_lag": (
        "gauge", ("worker", "topic", "partition"),
        "Records behind: high watermark minus committed offset"),
    "etrans_pipeline_partition_in_flight": (
        "gauge", ("worker", "topic", "partition"), "Offsets of the partition not yet finished"),
    "etrans_sendmail_outcomes_total": (
        "counter", ("worker", "outcome"),
        "Send requests by outcome (delivered, rejected, skipped, retries, deferred)"),
    "etrans_smtp_replies_total": ("counter", ("class",), "SMTP replies to a transaction"),
    "etrans_sendmail_delivery_seconds": (
        "histogram", (), "From the send request's Kafka record creation to the SMTP 250"),
    "etrans_fetchlog_events_total": (
        "counter", ("worker", "outcome"), "Delivery-log and engagement events by outcome"),
    "etrans_log_insert_seconds": (
        "histogram", ("store",), "Time of one batch insert into the delivery-log store"),
    "etrans_log_insert_documents": (
        "histogram", ("store",), "Documents in one batch insert"),
    "etrans_webhook_deliveries_total": (
        "counter", ("worker", "outcome"),
        "Webhook attempts by outcome (delivered, failed, given_up, postponed, disabled, "
        "retried)"),
    "etrans_webhook_post_seconds": (
        "histogram", (), "Time of one POST to a webhook endpoint (answer, error or timeout)"),
    "etrans_webhook_retries_waiting": (
        "gauge", (), "Events waiting for another attempt at an endpoint (webhook_retries)"),
    "etrans_webhook_retries_overdue_seconds": (
        "gauge", (), "How long the most overdue webhook retry has been due (0 when none is)"),
    "etrans_outbox_backlog": ("gauge", (), "Outbox rows waiting to be published"),
    "etrans_outbox_oldest_age_seconds": (
        "gauge", (), "Age of the oldest outbox row waiting (0 when none)"),
}

# Families fed by MetricsRegistry.watch_counts.
COUNT_FAMILIES = ("etrans_sendmail_outcomes_total", "etrans_fetchlog_events_total",
                  "etrans_webhook_deliveries_total")

_HTTP_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
_DELIVERY_BUCKETS = (.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_INSERT_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10)
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


def _help(name: str) -> str:
    return CATALOG[name][2]


def _labels(name: str) -> tuple[str, ...]:
    return CATALOG[name][1]


class _Http:
    """HTTP metrics; the children of each (method, route, status) are bound once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        name = "etrans_http_requests_total"
        self._requests = Counter(name.removesuffix("_total"), _help(name), _labels(name),
                                 registry=registry)
        name = "etrans_http_request_duration_seconds"
        self._seconds = Histogram(name, _help(name), _labels(name), registry=registry,
                                  buckets=_HTTP_BUCKETS)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = (self._requests.labels(*labels), self._seconds.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class _ScrapeTimeFigures:
    """A collector returning the families :meth:`PrometheusMetrics.render` read last."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class PrometheusMetrics:
    """:class:`etrans.app.metrics.MetricsRegistry` on a prometheus-client registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._http: _Http | None = None
        self._smtp: SmtpMetrics | None = None
        self._inserts: dict[str, LogInsertMetrics] = {}
        self._pipelines: list[tuple[str, Callable[[], PipelineFigures]]] = []
        self._counts: list[tuple[str, str, Callable[[], Mapping[str, int]]]] = []
        self._webhooks: WebhookMetrics | None = None
        self._backlogs: list[tuple[Gauge, Gauge, Callable[[], Awaitable[tuple[int, float]]]]] = []
        self._figures = _ScrapeTimeFigures()
        self.registry.register(self._figures)

    def http(self) -> _Http:
        if self._http is None:
            self._http = _Http(self.registry)
        return self._http

    def smtp(self) -> SmtpMetrics:
        if self._smtp is None:
            name = "etrans_smtp_replies_total"
            replies = Counter(name.removesuffix("_total"), _help(name), _labels(name),
                              registry=self.registry)
            name = "etrans_sendmail_delivery_seconds"
            self._smtp = SmtpMetrics(
                replies={cls: replies.labels(cls) for cls in SMTP_REPLY_CLASSES},
                delivery_seconds=Histogram(name, _help(name), registry=self.registry,
                                           buckets=_DELIVERY_BUCKETS))
        return self._smtp

    def log_inserts(self, store: str) -> LogInsertMetrics:
        if not self._inserts:
            seconds = Histogram("etrans_log_insert_seconds", _help("etrans_log_insert_seconds"),
                                ("store",), registry=self.registry, buckets=_INSERT_BUCKETS)
            documents = Histogram(
                "etrans_log_insert_documents", _help("etrans_log_insert_documents"), ("store",),
                registry=self.registry, buckets=_BATCH_BUCKETS)
            self._insert_families = (seconds, documents)
        if store not in self._inserts:
            seconds, documents = self._insert_families
            self._inserts[store] = LogInsertMetrics(seconds.labels(store),
                                                    documents.labels(store))
        return self._inserts[store]

    def webhooks(self) -> WebhookMetrics:
        if self._webhooks is None:
            name = "etrans_webhook_post_seconds"
            self._webhooks = WebhookMetrics(Histogram(name, _help(name), registry=self.registry,
                                                      buckets=_HTTP_BUCKETS))
        return self._webhooks

    def watch_pipeline(self, worker: str, statistics: Callable[[], PipelineFigures]) -> None:
        self._pipelines.append((worker, statistics))

    def watch_counts(self, name: str, worker: str,
                     counts: Callable[[], Mapping[str, int]]) -> None:
        if name not in COUNT_FAMILIES:
            raise ValueError(f"{name} is not a family of counts (COUNT_FAMILIES)")
        self._counts.append((name, worker, counts))

    def watch_backlog(self, rows: str, age: str,
                      backlog: Callable[[], Awaitable[tuple[int, float]]]) -> None:
        self._backlogs.append((Gauge(rows, _help(rows), registry=self.registry),
                               Gauge(age, _help(age), registry=self.registry), backlog))

    async def render(self) -> tuple[bytes, str]:
        """Read the scrape-time figures (on this, the Trio thread), then render them all."""
        families = _pipeline_families(self._pipelines)
        families.extend(_count_families(self._counts))
        self._figures.families = families
        for rows, age, backlog in self._backlogs:
            await _read_backlog(rows, age, backlog)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


async def _read_backlog(rows: Gauge, age: Gauge,
                        backlog: Callable[[], Awaitable[tuple[int, float]]]) -> None:
    # A database that does not answer must not hang the scrape: the gauges keep their last
    # value (the relay's or the worker's own errors are logged by them).
    try:
        with trio.fail_after(2.0):
            waiting, oldest = await backlog()
    except Exception as exc:
        log.warning("could not measure a backlog", error=repr(exc))
        return
    rows.set(waiting)
    age.set(oldest)


def _pipeline_families(pipelines: list[tuple[str, Callable[[], PipelineFigures]]]
                       ) -> list[Metric]:
    if not pipelines:
        return []
    counters = {name: CounterMetricFamily(name.removesuffix("_total"), _help(name),
                                          labels=["worker"])
                for name in ("etrans_pipeline_processed_total", "etrans_pipeline_retries_total",
                             "etrans_pipeline_poisoned_total",
                             "etrans_pipeline_dead_lettered_total",
                             "etrans_pipeline_commits_total", "etrans_pipeline_rebalances_total")}
    gauges = {name: GaugeMetricFamily(name, _help(name), labels=list(_labels(name)))
              for name in ("etrans_pipeline_in_flight", "etrans_pipeline_channel_occupancy",
                           "etrans_pipeline_channel_capacity", "etrans_pipeline_paused",
                           "etrans_pipeline_consumer_lag",
                           "etrans_pipeline_partition_in_flight")}
    for worker, statistics in pipelines:
        stats = statistics()
        for name, value in (("processed", stats.processed), ("retries", stats.failed),
                            ("poisoned", stats.poisoned), ("dead_lettered", stats.dead_lettered),
                            ("commits", stats.commits), ("rebalances", stats.rebalances)):
            counters[f"etrans_pipeline_{name}_total"].add_metric([worker], value)
        for name, level in (("in_flight", stats.in_flight),
                            ("channel_occupancy", stats.channel_fill),
                            ("channel_capacity", stats.channel_size),
                            ("paused", int(stats.paused))):
            gauges[f"etrans_pipeline_{name}"].add_metric([worker], level)
        for part in stats.partitions:
            labels = [worker, part.topic, str(part.partition)]
            if part.lag is not None:
                gauges["etrans_pipeline_consumer_lag"].add_metric(labels, part.lag)
            gauges["etrans_pipeline_partition_in_flight"].add_metric(labels, part.in_flight)
    return [*counters.values(), *gauges.values()]


def _count_families(counts: list[tuple[str, str, Callable[[], Mapping[str, int]]]]
                    ) -> list[Metric]:
    families: dict[str, CounterMetricFamily] = {}
    for name, worker, read in counts:
        family = families.get(name)
        if family is None:
            family = CounterMetricFamily(name.removesuffix("_total"), _help(name),
                                         labels=["worker", "outcome"])
            families[name] = family
        for outcome, value in read().items():
            family.add_metric([worker, outcome], value)
    return list(families.values())
