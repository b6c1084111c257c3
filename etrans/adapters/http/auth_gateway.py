"""MANAGE_AUTH_URI client: validates bearer tokens and session cookies with an external service.

Contract (``docs/api.md``, "External authentication"): etrans sends
``GET <MANAGE_AUTH_URI>`` with the caller's credential forwarded as ``Authorization: Bearer
<token>`` or ``Cookie: <name>=<value>``.  The service answers

- 200 with a JSON object holding ``user_id`` (or ``sub``): the credential is valid for that user;
- 401 or 403: the credential is refused (etrans answers 401);
- anything else, or no answer within the timeout: etrans answers 503.

Answers are cached in memory, keyed by the SHA-256 of the credential: valid ones for
``ttl_seconds`` (default 30), refusals for ``negative_ttl_seconds`` (default 5).

A cookie value is forwarded only when it is made of RFC 6265 ``cookie-octet`` characters (no
space, ``"``, ``,``, ``;`` or ``\\``): the request's cookie parser unquotes
``sid="abc; role=admin"`` to ``abc; role=admin``, which would otherwise add a cookie of the
caller's choosing to the header sent upstream.  Any other value is refused (None), no call made.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import Any

import httpx
import trio

from etrans.errors import UpstreamUnavailable
from etrans.observability import get_logger

log = get_logger(__name__)


# RFC 6265 section 4.1.1: cookie-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+")


def is_cookie_value(value: str) -> bool:
    """True when ``value`` can be written as ``name=value`` in a Cookie header as it is."""
    return _COOKIE_VALUE.fullmatch(value) is not None


class HttpAuthGateway:
    name = "manage_auth"

    def __init__(self, uri: str, *, cookie_name: str = "session", timeout_seconds: float = 5.0,
                 ttl_seconds: float = 30.0, negative_ttl_seconds: float = 5.0,
                 max_entries: int = 10_000, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self._uri = uri
        self._cookie_name = cookie_name
        self._client = httpx.AsyncClient(timeout=timeout_seconds, transport=transport)
        self._ttl = ttl_seconds
        self._negative_ttl = negative_ttl_seconds
        self._max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self.calls = 0

    async def validate(self, *, bearer: str | None = None, cookie: str | None = None) -> str | None:
        if (bearer is None) == (cookie is None):
            raise ValueError("give exactly one of bearer and cookie")
        if cookie is not None and not is_cookie_value(cookie):
            return None
        credential = f"b:{bearer}" if bearer is not None else f"c:{cookie}"
        key = hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()
        now = trio.current_time()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return hit[1]
        headers = ({"Authorization": f"Bearer {bearer}"} if bearer is not None
                   else {"Cookie": f"{self._cookie_name}={cookie}"})
        self.calls += 1
        try:
            response = await self._client.get(self._uri, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("auth service unreachable", error=type(exc).__name__)
            raise UpstreamUnavailable("Authentication service unavailable") from None
        user: str | None
        if response.status_code in (401, 403):
            user = None
        elif response.status_code == 200:
            user = _user_of(response)
        else:
            log.warning("auth service error", status=response.status_code)
            raise UpstreamUnavailable("Authentication service unavailable")
        self._remember(key, user, now + (self._ttl if user is not None else self._negative_ttl))
        return user

    def _remember(self, key: str, user: str | None, until: float) -> None:
        self._cache[key] = (until, user)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    async def aclose(self) -> None:
        await self._client.aclose()


def _user_of(response: httpx.Response) -> str | None:
    try:
        data: Any = response.json()
    except ValueError:
        raise UpstreamUnavailable("Authentication service gave an unreadable answer") from None
    if not isinstance(data, dict):
        raise UpstreamUnavailable("Authentication service gave an unreadable answer")
    user = data.get("user_id", data.get("sub"))
    if user is None or isinstance(user, bool) or not isinstance(user, str | int):
        return None
    return str(user)
