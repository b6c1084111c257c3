"""``GET /readyz``: one round of health probes shared by every caller, remembered for a second.

Each probe round asks every backend once (in parallel, ``timeout_seconds`` each).  A caller that
arrives while a round runs waits for that round (single flight); a caller within
``cache_seconds`` of the last round's end gets its result.  However many probes hit /readyz (200
concurrent calls measured: one round), each backend sees at most one probe at a time, and the
probes themselves use their own connection and thread limiter (``check`` of each store), never the
slots of requests: /readyz can neither exhaust the request pools nor wait behind them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.app.ports import HealthProbe


async def _probe(probe: HealthProbe, limit_seconds: float, results: dict[str, str]) -> None:
    with trio.move_on_after(limit_seconds) as scope:
        try:
            await probe.check()
        except Exception as exc:  # any failure of a dependency means "down"; say which
            results[probe.name] = f"down: {type(exc).__name__}"
            return
    results[probe.name] = "down: timeout" if scope.cancelled_caught else "ok"


class Readiness:
    def __init__(self, probes: Sequence[HealthProbe], *, timeout_seconds: float = 3.0,
                 cache_seconds: float = 1.0) -> None:
        self._probes = tuple(probes)
        self._timeout = timeout_seconds
        self._cache_seconds = cache_seconds
        self._last: tuple[float, dict[str, str]] | None = None
        self._running: trio.Event | None = None
        self.rounds = 0

    def statistics(self) -> dict[str, int]:
        return {"rounds": self.rounds}

    async def wait_checks(self) -> dict[str, str]:
        """``{probe name: "ok" | "down: <reason>"}`` of the latest round, fresh within
        ``cache_seconds``."""
        while True:
            last = self._last
            if last is not None and time.monotonic() - last[0] < self._cache_seconds:
                return dict(last[1])
            if self._running is not None:
                # Another caller is probing: wait for its round (if it was cancelled, loop and
                # start one ourselves).
                await self._running.wait()
                continue
            return dict(await self._run_round())

    async def _run_round(self) -> dict[str, str]:
        self._running = done = trio.Event()
        try:
            self.rounds += 1
            results: dict[str, str] = {}
            async with trio.open_nursery() as nursery:
                for probe in self._probes:
                    nursery.start_soon(_probe, probe, self._timeout, results)
            self._last = (time.monotonic(), results)
            return results
        finally:
            self._running = None
            done.set()
