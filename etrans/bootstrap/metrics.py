"""The metrics of a worker process: one registry, served at ETRANS_METRICS_BIND (when set) for
as long as the worker runs (docs/operations.md, "Metrics")."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from etrans.adapters.metrics.prometheus import PrometheusMetrics
from etrans.adapters.metrics.server import serve_metrics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


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
