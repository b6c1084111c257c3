"""Redis (redis-py, sync client) from Trio through worker threads; :func:`unavailable_as_503`
turns "Redis did not answer" (either client) into a 503 with Retry-After for the API."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import trio

from etrans.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import redis

P = ParamSpec("P")
T = TypeVar("T")

PROBE_TIMEOUT_SECONDS = 2.0


RETRY_AFTER_SECONDS = 5


class RedisDown(UpstreamUnavailable):
    """Redis did not answer (refused, closed, timed out): 503 with Retry-After, never a 500;
    nothing was done, the request may be retried as is."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} unavailable, please retry",
                         retry_after_seconds=RETRY_AFTER_SECONDS)


def outage_errors() -> tuple[type[BaseException], ...]:
    """What redis-py and the Trio client raise when Redis does not answer (a Redis error reply,
    such as a script error, is not an outage: it stays a bug)."""
    import redis as redis_lib

    from etrans.adapters._net.redis_trio import RedisUnavailable

    return (redis_lib.exceptions.ConnectionError, redis_lib.exceptions.TimeoutError,
            RedisUnavailable)


@contextmanager
def unavailable_as_503(what: str) -> Iterator[None]:
    """Raise :class:`RedisDown` ("<what> unavailable, please retry") for an outage inside."""
    try:
        yield
    except outage_errors() as exc:
        raise RedisDown(what) from exc


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
        # /readyz probes (check): one connection and thread of their own, short timeouts.
        self._url = url
        self._probe_client: redis.Redis | None = None
        self._probe_limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter)

    def _ping(self) -> None:
        if self._probe_client is None:
            import redis as redis_lib

            self._probe_client = redis_lib.Redis.from_url(
                self._url, max_connections=1, socket_timeout=PROBE_TIMEOUT_SECONDS,
                socket_connect_timeout=PROBE_TIMEOUT_SECONDS)
        self._probe_client.ping()

    async def check(self) -> None:
        """PING on the probe's own connection (not from the request pool)."""
        await trio.to_thread.run_sync(self._ping, limiter=self._probe_limiter,
                                      abandon_on_cancel=True)

    def close(self) -> None:
        self.client.close()
        if self._probe_client is not None:
            self._probe_client.close()
