"""``/docs``: the OpenAPI document (``/openapi.json``) in Swagger UI, served by etrans itself.

Swagger UI's files come from the ``flask-swagger-ui`` package (its ``dist/`` directory: the
upstream release, refreshed weekly on PyPI; only the files, its Flask blueprint is not used), so
the page fetches nothing from a CDN.  Every answer carries a Content-Security-Policy that allows
this origin only (``data:`` images aside: Swagger UI's stylesheet embeds its icons), and the
page has no inline script: its configuration is ``/docs/swagger-initializer.js``.  Not rate
limited, like ``/openapi.json`` (docs/api.md).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from quart import Response

from etrans.api.routing import json_response

if TYPE_CHECKING:
    from quart_trio import QuartTrio

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

# The files of Swagger UI the page uses, and their types (nothing else of dist/ is served).
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "index.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>etrans API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="stylesheet" href="/docs/assets/index.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="/docs/assets/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-initializer.js"></script>
</body>
</html>
"""

# validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
INITIALIZER = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    validatorUrl: null,
    displayOperationId: false,
    displayRequestDuration: true,
  });
});
"""


def swagger_ui_directory() -> Path:
    """Where the installed ``flask-swagger-ui`` keeps Swagger UI (found without importing the
    package: that would import Flask for nothing)."""
    spec = importlib.util.find_spec("flask_swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("flask-swagger-ui is not installed: /docs needs its Swagger UI files")
    return Path(next(iter(spec.submodule_search_locations))) / "dist"


@cache
def _asset(name: str) -> bytes:
    return (swagger_ui_directory() / name).read_bytes()


def register_docs(app: QuartTrio) -> None:
    """The three routes of the page: ``/docs``, its initializer and Swagger UI's files."""

    @app.get("/docs")
    async def docs() -> Response:
        return Response(PAGE, content_type="text/html; charset=utf-8", headers=_HEADERS)

    @app.get("/docs/swagger-initializer.js")
    async def docs_initializer() -> Response:
        return Response(INITIALIZER, content_type="text/javascript; charset=utf-8",
                        headers=_HEADERS)

    @app.get("/docs/assets/<name>")
    async def docs_asset(name: str) -> Response:
        content_type = ASSETS.get(name)
        if content_type is None:
            return json_response({"detail": "Not Found"}, 404)
        return Response(_asset(name), content_type=content_type,
                        headers={**_HEADERS, "Cache-Control": "public, max-age=3600"})
