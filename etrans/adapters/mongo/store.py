"""MongoDB (pymongo, sync) from Trio through worker threads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from etrans.settings import MongoSettings


class MongoStore:
    name = "mongodb"

    def __init__(self, settings: MongoSettings, *, timeout_ms: int = 3000) -> None:
        from pymongo import MongoClient

        self.client: MongoClient[dict[str, Any]] = MongoClient(
            settings.uri.get(), serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
            tz_aware=True,
        )
        self.collection = self.client[settings.dbname][settings.collection]
        self.limiter = trio.CapacityLimiter(20)
        self._probe_limiter = trio.CapacityLimiter(1)  # /readyz: not a request slot

    def _ping(self) -> None:
        self.client.admin.command("ping")

    async def check(self) -> None:
        await trio.to_thread.run_sync(self._ping, limiter=self._probe_limiter,
                                      abandon_on_cancel=True)

    def close(self) -> None:
        self.client.close()
