"""HTTP metrics of the API and ``GET /metrics`` on the API's own port.

Each answered request is counted and timed under its route's template
(``/emails/<email_id>``, "unmatched" for a path no route has), its method (the usual ones, else
"other") and its status: no raw path, hence no id of anyone, reaches a label.  The time runs
from the first ``before_request`` hook to the ``after_request`` hooks (the body's streaming out
is not in it).  ``GET /metrics`` is unauthenticated: it says how much traffic there is, nothing
of whose; an operator who does not want it on the API's port sets ETRANS_METRICS_BIND, and
``etrans serve`` then serves it there instead (docs/operations.md, "Metrics").
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from quart import Response, g, request

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from quart_trio import QuartTrio

    from etrans.app.metrics import HttpMetrics

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def register_metrics(app: QuartTrio, metrics: HttpMetrics | None,
                     page: Callable[[], Awaitable[tuple[bytes, str]]] | None) -> None:
    """Time every request into ``metrics`` (None: not timed); ``page``: GET /metrics."""
    if metrics is not None:
        _time_requests(app, metrics)
    if page is not None:
        @app.get("/metrics")
        async def metrics_page() -> Any:
            body, content_type = await page()
            return Response(body, content_type=content_type)


def _time_requests(app: QuartTrio, metrics: HttpMetrics) -> None:
    @app.before_request
    async def _start_clock() -> None:
        g.metrics_started = perf_counter()

    @app.after_request
    async def _observe(response: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            rule = request.url_rule
            method = request.method if request.method in _METHODS else "other"
            metrics.observe_request(method, rule.rule if rule is not None else "unmatched",
                                    response.status_code, perf_counter() - started)
        return response
