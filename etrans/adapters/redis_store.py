"""Redis (redis-py, sync client) from Trio through worker threads."""

from __future__ import annotations

from typing import TYPE_CHECKING, ParamSpec, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

P = ParamSpec("P")
T = TypeVar("T")


class RedisClient:
    """A sync redis-py client with a connection pool and a matching CapacityLimiter."""

    name = "redis"

    def __init__(self, url: str, *, max_connections: int = 20, timeout: float = 5.0) -> None:
        import redis as redis_lib

        self.client: redis.Redis = redis_lib.Redis.from_url(
            url, max_connections=max_connections, socket_timeout=timeout,
            socket_connect_timeout=timeout, health_check_interval=30,
        )
        self.limiter = trio.CapacityLimiter(max_connections)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter)

    async def check(self) -> None:
        await self.run(self.client.ping)

    def close(self) -> None:
        self.client.close()
