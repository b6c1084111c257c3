"""The metrics of a worker process: one registry, served at ETRANS_METRICS_BIND (when set) for
as long as the worker runs (docs/operations.md, "Metrics")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from etrans.adapters.metrics.prometheus import PrometheusMetrics
from etrans.adapters.metrics.server import serve_metrics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from etrans.app.metrics import MetricsRegistry
    from etrans.pipeline import Pipeline


async def run_with_metrics(bind: str | None,
                           run: Callable[[PrometheusMetrics], Awaitable[None]]) -> None:
    """``run(metrics)``, with GET /metrics at ``bind`` (None: not served) until it returns."""
    metrics = PrometheusMetrics()
    async with trio.open_nursery() as nursery:
        if bind is not None:
            await nursery.start(serve_metrics, bind, metrics.render)
        try:
            await run(metrics)
        finally:
            nursery.cancel_scope.cancel()


def watched(metrics: MetricsRegistry, worker: str,
            start: Callable[..., Awaitable[object]]) -> Callable[..., Awaitable[None]]:
    """``start`` (a worker's run function, started with its Pipeline: ``run_fetchlog``...), with
    that pipeline's figures read at every scrape, labelled ``worker``, from its start on."""

    async def run(*, task_status: trio.TaskStatus[Pipeline] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            pipeline: Any = await nursery.start(start)
            metrics.watch_pipeline(worker, pipeline.statistics)
            task_status.started(pipeline)

    return run
