"""Cross-site request forgery rules of requests authenticated by the session cookie.

A browser attaches the session cookie to every request to the API, whichever site's page makes it;
a form on ``https://evil.test`` can POST ``text/plain`` without asking anyone.  So a
cookie-authenticated request that may change state (any method but GET, HEAD, OPTIONS) must

- send ``Content-Type: application/json`` (a cross-site page cannot send it without a CORS
  preflight, which etrans never grants), and
- when it carries an ``Origin`` header, come from the API's own origin (scheme and ``Host`` of the
  request) or one of ``ETRANS_ALLOWED_ORIGINS``.  No ``Origin`` is allowed: browsers send it with
  every cross-origin request of these methods, other clients (curl, servers) usually do not.

Otherwise 403.  API keys and Bearer tokens are not sent by a browser on its own: no rule for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.errors import Forbidden

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CookieCsrfPolicy:
    def __init__(self, allowed_origins: Iterable[str] = ()) -> None:
        self._allowed = frozenset(o.strip().rstrip("/").lower() for o in allowed_origins)

    def check(self, method: str, headers: Mapping[str, str], *, scheme: str) -> None:
        """Raise :class:`Forbidden` unless a cookie-authenticated request may proceed."""
        if method.upper() in SAFE_METHODS:
            return
        media_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise Forbidden("Cross-site request refused: a request authenticated by the session "
                            "cookie must send Content-Type: application/json")
        origin = headers.get("Origin")
        if origin is None:
            return
        origin = origin.strip().lower()
        host = headers.get("Host", "").strip().lower()
        if origin in self._allowed or (host and origin == f"{scheme.lower()}://{host}"):
            return
        raise Forbidden("Cross-site request refused: the Origin of a request authenticated by "
                        "the session cookie must be the API's own or one of "
                        "ETRANS_ALLOWED_ORIGINS")
