"""The Redis client of etrans and what a Redis outage means for the API.

Every Redis adapter of a process shares one :class:`~etrans.adapters._net.redis_trio.TrioRedis`
(``async with open_redis(url) as redis``): the commands of concurrent requests are pipelined on
one connection, on the Trio thread (no worker thread, no connection pool to size).  Its
``check`` is the readiness probe (PING on a connection of its own).

:func:`unavailable_as_503` turns "Redis did not answer" into :class:`RedisDown`, a 503 with
Retry-After for the API; a Redis error reply (a script error) is not an outage: it stays a bug.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from etrans.adapters._net.redis_trio import RedisUnavailable, Script, TrioRedis, open_redis
from etrans.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["RETRY_AFTER_SECONDS", "RedisDown", "Script", "TrioRedis", "open_redis",
           "unavailable_as_503"]

RETRY_AFTER_SECONDS = 5


class RedisDown(UpstreamUnavailable):
    """Redis did not answer (refused, closed, timed out): 503 with Retry-After, never a 500;
    nothing was done, the request may be retried as is."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} unavailable, please retry",
                         retry_after_seconds=RETRY_AFTER_SECONDS)


@contextmanager
def unavailable_as_503(what: str) -> Iterator[None]:
    """Raise :class:`RedisDown` ("<what> unavailable, please retry") for an outage inside."""
    try:
        yield
    except RedisUnavailable as exc:
        raise RedisDown(what) from exc
