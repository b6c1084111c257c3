"""The tracking endpoints (``docs/tracking.md``): ``GET /t/o/<token>`` answers a 1x1 transparent
GIF, ``GET /t/c/<token>`` a 302 to the token's URL; both at once, unauthenticated, not rate
limited (they are what mail clients fetch, at scale: a token is checked with one HMAC, no I/O)
and not in the OpenAPI document (like ``/healthz``).  The events go through
:class:`etrans.app.tracking_hits.TrackingHits`, which never waits.

An invalid token: the pixel is answered all the same (an open reveals nothing about which tokens
are valid), a click is 404 (never a redirect to a URL that was not signed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response, request
from werkzeug.urls import iri_to_uri

from etrans.api.routing import json_response
from etrans.observability import get_logger

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from etrans.app.tracking_hits import TrackingHits

log = get_logger(__name__)

# The smallest transparent 1x1 GIF (43 bytes).
PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00"
         b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
_NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, private",
             "Pragma": "no-cache"}


def register_tracking(app: QuartTrio, hits: TrackingHits) -> None:
    """The two routes, and the background task that produces their events: started with the
    server in the app's nursery, drained when it stops."""

    @app.before_serving
    async def _start_tracking_events() -> None:
        await app.nursery.start(hits.run)

    @app.after_serving
    async def _drain_tracking_events() -> None:
        await hits.aclose()
        log.info("tracking stopped", **hits.statistics())

    @app.get("/t/o/<token>")
    async def tracking_open(token: str) -> Response:
        hits.opened(token, request.headers.get("User-Agent"))
        return Response(PIXEL, content_type="image/gif", headers=_NO_STORE)

    @app.get("/t/c/<token>")
    async def tracking_click(token: str) -> Response:
        url = hits.clicked(token, request.headers.get("User-Agent"))
        if url is None:
            return json_response({"detail": "Not Found"}, 404)
        response = Response(b"", status=302, headers=_NO_STORE)
        response.headers["Location"] = iri_to_uri(url)
        return response
