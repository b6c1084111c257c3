"""Request rate limits of the API, per credential and per client address.

Every request to an authenticated route counts in one bucket:

* ``key:<id>`` - requests with ``X-API-KEY`` (each key has its own budget);
* ``user:<id>`` - requests with a Bearer token or the session cookie;
* ``addr:<client>`` - requests whose credentials are missing or refused (401), per client address
  (an IPv6 client per /64).  The client is the peer of the connection, or, when that peer is one of
  ``RATE_LIMIT_TRUSTED_PROXIES``, the last address of ``X-Forwarded-For`` that is not a trusted
  proxy.

Budgets are ``RATE_LIMIT_REQUESTS`` (credentials) and ``RATE_LIMIT_ANONYMOUS_REQUESTS``
(addresses) per ``RATE_LIMIT_WINDOW_SECONDS`` fixed window.  Over the budget: 429
``{"detail": "Too many requests ..."}`` with ``Retry-After``.  Every counted response carries the
headers of draft-ietf-httpapi-ratelimit-headers (-10)::

    RateLimit-Policy: "api-key";q=6000;w=60
    RateLimit: "api-key";r=5999;t=60

The counters live in Redis (:mod:`etrans.adapters.redis.rate_limit`).  When the store fails or
is slow the request is allowed (fail open: an outage of the limiter must not stop sending) and a
warning is logged, at most once per ``_WARN_EVERY_SECONDS``.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from etrans.errors import AppError
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.api.auth import Principal
    from etrans.app.ports import RateCounter

log = get_logger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A limiter store slower than this lets the request through (fail open).
STORE_TIMEOUT_SECONDS = 1.0
_WARN_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class RateLimitPolicy:
    """The budgets (requests per window); 0 turns a budget off."""

    requests: int = 6000
    anonymous_requests: int = 600
    window_seconds: int = 60
    trusted_proxies: tuple[Network, ...] = ()


@dataclass(frozen=True)
class RateDecision:
    """One request counted in one bucket."""

    policy: str  # "api-key" | "user" | "anonymous": the name in the RateLimit headers
    limit: int
    window_seconds: int
    count: int
    reset_seconds: float

    @property
    def allowed(self) -> bool:
        return self.count <= self.limit

    def headers(self) -> dict[str, str]:
        reset = math.ceil(self.reset_seconds)
        remaining = max(0, self.limit - self.count)
        headers = {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={self.window_seconds}',
            "RateLimit": f'"{self.policy}";r={remaining};t={reset}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, reset))
        return headers


class RateLimited(AppError):
    status_code = 429

    def __init__(self, decision: RateDecision) -> None:
        super().__init__(f"Too many requests: the limit is {decision.limit} per "
                         f"{decision.window_seconds} s; retry after "
                         f"{max(1, math.ceil(decision.reset_seconds))} s")
        self.decision = decision


class RateLimiter:
    """Counts each request in its bucket and raises :class:`RateLimited` over the budget."""

    def __init__(self, counter: RateCounter, policy: RateLimitPolicy) -> None:
        self._counter = counter
        self.policy = policy
        self._unchecked = 0
        self._warned_at = -math.inf

    async def check(self, principal: Principal | None, client: str) -> RateDecision | None:
        """The decision for this request (None: not limited, or the store failed)."""
        policy = self.policy
        if principal is None:
            name, bucket, limit = "anonymous", f"addr:{client}", policy.anonymous_requests
        elif principal.key_id is not None:
            name, bucket, limit = "api-key", f"key:{principal.key_id}", policy.requests
        else:
            name, bucket, limit = "user", f"user:{principal.user_id}", policy.requests
        if limit <= 0:
            return None
        count, reset = -1, 0.0
        with trio.move_on_after(STORE_TIMEOUT_SECONDS):
            try:
                count, reset = await self._counter.hit(bucket, policy.window_seconds)
            except Exception as exc:  # fail open: the limiter must not take the API down
                self._store_failed(exc)
                return None
        if count < 0:
            self._store_failed(TimeoutError(f"no answer in {STORE_TIMEOUT_SECONDS} s"))
            return None
        decision = RateDecision(name, limit, policy.window_seconds, count, reset)
        if not decision.allowed:
            raise RateLimited(decision)
        return decision

    def _store_failed(self, exc: BaseException) -> None:
        self._unchecked += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_SECONDS:
            log.warning("rate limit store unavailable: requests allowed unchecked",
                        unchecked=self._unchecked, error=f"{type(exc).__name__}: {exc}")
            self._warned_at = now
            self._unchecked = 0

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        return client_address(peer, forwarded_for, self.policy.trusted_proxies)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted_proxies: Sequence[Network]) -> str:
    """The address a request is counted under: the connection's peer, or - walking
    ``X-Forwarded-For`` from the right while the hop is a trusted proxy - the first hop that is
    not one.  IPv6 clients are counted per /64 (one subscriber's prefix)."""
    address = _parse_ip(peer or "")
    if address is None:
        return peer or "unknown"
    hops = [h for h in (forwarded_for or "").split(",") if h.strip()]
    while trusted_proxies and hops and any(address in net for net in trusted_proxies):
        hop = _parse_ip(hops.pop())
        if hop is None:
            break
        address = hop
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)

