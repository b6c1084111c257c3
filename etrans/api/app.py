"""Quart-Trio application factory, error mapping, health endpoints and the OpenAPI document.

Routes of each resource live in their own module with a ``register(api)`` function
(:mod:`etrans.api.emails`, :mod:`etrans.api.logs`, ...); :func:`create_app` calls those named in
``ApiDependencies.routers``.  Every error answers ``{"detail": ...}`` (FastAPI's shape):
:class:`~etrans.errors.AppError` with its status, unknown paths 404 ``"Not Found"``, wrong
methods 405, anything unexpected 500 ``"Internal Server Error"`` (logged with its traceback).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from etrans.api import openapi
from etrans.api.asgi_body import CompleteBodyBeforeResponse
from etrans.api.body_budget import BodyBudget
from etrans.api.docs import register_docs
from etrans.api.metrics import register_metrics
from etrans.api.readiness import Readiness
from etrans.api.routing import Api, ApiServices, json_response
from etrans.api.trace import register_tracing
from etrans.app.tracing import ContextOnlyTracer
from etrans.errors import AppError
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.api.auth import Authenticator
    from etrans.api.rate_limit import RateLimiter
    from etrans.app.metrics import HttpMetrics
    from etrans.app.ports import HealthProbe
    from etrans.app.tracing import Tracer
    from etrans.app.tracking_hits import TrackingHits

log = get_logger(__name__)

SERVICE_NAME = "email-transactional"

# 25 MB of email (decoded attachments + bodies, docs/api.md) is ~33.4 MB once base64-encoded in
# JSON; the request body is capped a little above that, before it is read.
DEFAULT_MAX_BODY_BYTES = 36 * 1024 * 1024

Router = Callable[[Api], None]


def default_routers() -> list[Router]:
    import importlib

    routers: list[Router] = []
    for name in ROUTER_MODULES:
        routers.append(importlib.import_module(name).register)
    return routers


# Modules with a ``register(api)`` function, in the order their routes are added.
ROUTER_MODULES: list[str] = [
    "etrans.api.emails", "etrans.api.logs",
    # account routes: domains, API keys, senders, suppressions, billing
    "etrans.api.routes_domains", "etrans.api.routes_api_keys", "etrans.api.routes_senders",
    "etrans.api.routes_suppressions", "etrans.api.routes_billing", "etrans.api.routes_testing",
    "etrans.api.routes_webhooks", "etrans.api.routes_templates", "etrans.api.routes_schedule",
]


@dataclass
class ApiDependencies:
    """What the routes need; built by :mod:`etrans.bootstrap`."""

    probes: Sequence[HealthProbe] = ()
    probe_timeout_seconds: float = 3.0
    authenticator: Authenticator | None = None
    # What the routers call (None: only for an app without routes, e.g. routers=[]).
    services: ApiServices | None = None
    routers: Sequence[Router] | None = None  # None: default_routers()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    rate_limiter: RateLimiter | None = None  # None: no request rate limits
    # Request bodies held in memory at once (etrans.api.body_budget); None: no budget.
    body_memory_bytes: int | None = None
    # Open and click tracking endpoints (etrans.api.tracking); None: not served (404).
    tracking: TrackingHits | None = None
    # Requests counted and timed (etrans.api.metrics); None: not measured.
    metrics: HttpMetrics | None = None
    # GET /metrics: the exposition (body, content type); None: no such route.
    metrics_page: Callable[[], Awaitable[tuple[bytes, str]]] | None = None
    # A span per request (etrans.api.trace); None: trace context only, nothing recorded.
    tracer: Tracer | None = None
    # The errors of a backend that cannot answer (its driver's connection errors, named by the
    # wiring) that an adapter let through: 503 with Retry-After, not 500.
    unavailable: tuple[type[BaseException], ...] = ()


UNAVAILABLE_RETRY_AFTER_SECONDS = 5


def _only(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """``exc`` is one of ``kinds``, or a group of nothing else (a nursery's)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(inner, kinds) for inner in exc.exceptions)
    return isinstance(exc, kinds)


def create_app(deps: ApiDependencies) -> QuartTrio:
    """The app: error mapping, health endpoints, the routers' routes, the OpenAPI document and
    the body budget.  A router whose dependency is missing fails here (see ApiServices)."""
    app = QuartTrio("etrans")
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = deps.max_body_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True
    app.extensions["etrans"] = deps
    api = Api(app, deps.authenticator, deps.services, rate_limiter=deps.rate_limiter)
    app.extensions["etrans_api"] = api
    register_tracing(app, deps.tracer or ContextOnlyTracer())
    _map_errors(app, deps)
    register_metrics(app, deps.metrics, deps.metrics_page)
    _health_routes(app, deps)
    if deps.tracking is not None:
        from etrans.api.tracking import register_tracking

        register_tracking(app, deps.tracking)
    for register in deps.routers if deps.routers is not None else default_routers():
        register(api)
    _document_routes(app, api)
    # Bodies are admitted against the memory budget after authentication, and hypercorn stalls
    # a keep-alive connection answered before its body arrived: see asgi_body.
    budget = BodyBudget(deps.body_memory_bytes) if deps.body_memory_bytes is not None else None
    app.extensions["etrans_body_budget"] = budget
    app.asgi_app = CompleteBodyBeforeResponse(  # type: ignore[method-assign,assignment]
        app.asgi_app, budget=budget)
    return app


def _map_errors(app: QuartTrio, deps: ApiDependencies) -> None:
    """Every error as ``{"detail": ...}``, rate-limit headers on every answer."""

    @app.after_request
    async def _rate_limit_headers(response: Response) -> Response:
        decision = g.get("rate_limit")
        if decision is not None:
            for name, value in decision.headers().items():
                response.headers[name] = value
        return response

    @app.errorhandler(AppError)
    async def _app_error(exc: AppError) -> Any:
        retry_after = getattr(exc, "retry_after_seconds", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return json_response({"detail": exc.detail}, exc.status_code, headers)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        if status == 413:  # the spec answers 400 for a body over the size limit
            return json_response({"detail": "Request body too large"}, 400)
        detail = {404: "Not Found", 405: "Method Not Allowed"}.get(status, exc.name)
        response = json_response({"detail": detail}, status)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Any:
        if deps.unavailable and _only(exc, deps.unavailable):
            rule = request.url_rule
            log.warning("backend unavailable", error=f"{type(exc).__name__}: {exc}"[:500],
                        route=f"{request.method} {rule.rule if rule is not None else 'unmatched'}")
            return json_response({"detail": "Service temporarily unavailable, please retry"},
                                 503, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})
        log.error("unhandled error", exc_info=exc)
        return json_response({"detail": "Internal Server Error"}, 500)


def _health_routes(app: QuartTrio, deps: ApiDependencies) -> None:
    @app.get("/healthz")
    async def healthz() -> Any:
        return json_response({"status": "ok", "service": SERVICE_NAME})

    readiness = Readiness(deps.probes, timeout_seconds=deps.probe_timeout_seconds)
    app.extensions["etrans_readiness"] = readiness

    @app.get("/readyz")
    async def readyz() -> Any:
        results = await readiness.wait_checks()
        down = sorted(name for name, state in results.items() if state != "ok")
        body: dict[str, Any] = {"status": "ok" if not down else "unavailable",
                                "service": SERVICE_NAME, "checks": results}
        if down:
            body["down"] = down
            log.warning("not ready", down=down)
            return json_response(body, 503)
        return json_response(body)


def _document_routes(app: QuartTrio, api: Api) -> None:
    document: dict[str, Any] = {}

    @app.get("/openapi.json")
    async def openapi_json() -> Any:
        if not document:
            document.update(openapi.build(api))
        return json_response(document)

    register_docs(app)
