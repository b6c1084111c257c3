"""The memory budget of request bodies: how many body bytes the API holds at once.

Why: a body is held in memory whole, several times over while it is parsed and queued (a 33 MiB
POST /emails peaks at ~150 MiB of heap, docs/configuration.md), and hypercorn has no cap on
connections.  Twenty concurrent 25 MB sends took ``etrans serve`` to a 2.9 GiB peak RSS; with
the default budget (256 MiB of bodies) the same load peaks at ~1.2 GiB and the sends beyond the
budget are answered 503 with ``Retry-After`` at once, before their body is read.

A request reserves its declared ``Content-Length`` (a chunked body, whose size is unknown, the
largest body allowed) when its route asks for the body, that is after authentication: a client
without a valid key never holds any of the budget.  The reservation is released when the
request ends (answered, failed or disconnected).  :mod:`etrans.api.asgi_body` does the
gating at the ASGI level; routes call :func:`etrans.api.routing.read_body`.
"""

from __future__ import annotations

from dataclasses import dataclass

from etrans.errors import AppError

RETRY_AFTER_SECONDS = 5


class ServerBusy(AppError):
    """503: the request bodies in memory already fill the budget; retry shortly."""

    status_code = 503
    retry_after_seconds = RETRY_AFTER_SECONDS  # sent as Retry-After (api/app.py)


@dataclass(frozen=True)
class BodyBudgetStatistics:
    limit_bytes: int
    reserved_bytes: int
    requests_holding: int
    refused_total: int


class BodyBudget:
    """A counter of reserved body bytes, owned by one trio thread (no locking needed)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._reserved = 0
        self._holding = 0
        self._refused = 0

    def reserve(self, size: int) -> None:
        """Reserve ``size`` bytes or raise :class:`ServerBusy`.  A body larger than the whole
        budget is let through when nothing else is held, so it can never be refused forever."""
        if self._reserved + size > self.limit_bytes and self._holding:
            self._refused += 1
            raise ServerBusy("The server is busy receiving other requests; retry in "
                             f"{RETRY_AFTER_SECONDS} seconds")
        self._reserved += size
        self._holding += 1

    def release(self, size: int) -> None:
        self._reserved -= size
        self._holding -= 1

    def statistics(self) -> BodyBudgetStatistics:
        return BodyBudgetStatistics(self.limit_bytes, self._reserved, self._holding,
                                    self._refused)
