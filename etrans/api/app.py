"""Quart-Trio application factory, error mapping and health endpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from quart import jsonify
from quart_trio import QuartTrio

from etrans.errors import AppError
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.app.ports import HealthProbe

log = get_logger(__name__)

SERVICE_NAME = "email-transactional"


@dataclass
class ApiDependencies:
    """What the routes need; built by :mod:`etrans.bootstrap`."""

    probes: Sequence[HealthProbe] = ()
    probe_timeout_seconds: float = 3.0
    extra: dict[str, Any] = field(default_factory=dict)


async def _probe(probe: HealthProbe, limit_seconds: float, results: dict[str, str]) -> None:
    with trio.move_on_after(limit_seconds) as scope:
        try:
            await probe.check()
        except Exception as exc:  # any failure of a dependency means "down"; say which
            results[probe.name] = f"down: {type(exc).__name__}"
            return
    results[probe.name] = "down: timeout" if scope.cancelled_caught else "ok"


def create_app(deps: ApiDependencies) -> QuartTrio:
    app = QuartTrio("etrans")
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["etrans"] = deps

    @app.errorhandler(AppError)
    async def _app_error(exc: AppError) -> Any:
        return jsonify({"detail": exc.detail}), exc.status_code

    @app.get("/healthz")
    async def healthz() -> Any:
        return jsonify({"status": "ok", "service": SERVICE_NAME})

    @app.get("/readyz")
    async def readyz() -> Any:
        results: dict[str, str] = {}
        async with trio.open_nursery() as nursery:
            for probe in deps.probes:
                nursery.start_soon(_probe, probe, deps.probe_timeout_seconds, results)
        down = sorted(name for name, state in results.items() if state != "ok")
        body = {"status": "ok" if not down else "unavailable", "service": SERVICE_NAME,
                "checks": results}
        if down:
            body["down"] = down
            log.warning("not ready", down=down)
            return jsonify(body), 503
        return jsonify(body)

    return app
