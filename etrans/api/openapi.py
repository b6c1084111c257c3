"""``/openapi.json`` (OpenAPI 3.1) from the route declarations.

The request schemas are the very specs that validate requests (:mod:`etrans.api.schema`): what
the document promises is what the validator enforces.  Every operation declares its answers:
the success ones with their schema (``response=`` of the route, :mod:`etrans.api.responses`;
204 without a body) and the errors as ``{"detail": ...}``.  Named objects become
``components/schemas`` entries.  ``GET /healthz`` is in the document too (the spec lists it);
``/readyz`` and the tracking endpoints are not (operational, and for mail clients).
``/docs`` shows the document with Swagger UI (:mod:`etrans.api.docs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans import __version__
from etrans.api.request_input import PATH_PARAMETER

if TYPE_CHECKING:
    from etrans.api.routing import Api, Operation

_ERROR_DESCRIPTIONS = {
    400: "Invalid input: `detail` is a message, or a list of `{loc, msg, type}` items",
    401: "No credential, or an invalid, expired or deleted one",
    403: "The credential's permission is too low",
    404: "Not found (or owned by another user)",
    409: ("Conflict: an Idempotency-Key used with another body (or in flight), or a domain "
          "name verified by another account"),
    429: ("Too many requests: over the rate limit of the credential (or of the client address "
          "without a valid one); retry after `Retry-After` seconds"),
    503: "A dependency is unavailable",
}

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {
                    "type": "object", "required": ["loc", "msg", "type"],
                    "properties": {
                        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"},
                                                                      {"type": "integer"}]}},
                        "msg": {"type": "string"},
                        "type": {"type": "string"},
                    },
                }},
                {"type": "object"},
            ]
        }
    },
}

SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
    "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
}


def _hoist(schema: Any, components: dict[str, Any]) -> Any:
    """Move titled object schemas into ``components`` and refer to them."""
    if isinstance(schema, list):
        return [_hoist(item, components) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _hoist(value, components) for key, value in schema.items()}
    title = out.get("title")
    if isinstance(title, str) and out.get("type") == "object":
        components[title] = out
        return {"$ref": f"#/components/schemas/{title}"}
    return out


_RATE_LIMIT_HEADERS: dict[str, Any] = {
    "RateLimit-Policy": {"description": 'the budget (draft-ietf-httpapi-ratelimit-headers): '
                                        '`"api-key";q=6000;w=60`',
                         "schema": {"type": "string"}},
    "RateLimit": {"description": 'what is left and when the window ends: `"api-key";r=0;t=41`',
                  "schema": {"type": "string"}},
}


def _operation(op: Operation, components: dict[str, Any], *,
               rate_limited: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary,
                           "tags": [op.tag]}
    if op.description:
        doc["description"] = op.description
    params = [{"name": name, "in": "path", "required": True,
               "schema": PATH_PARAMETER.json_schema()} for name in _path_names(op.path)]
    params += [param.openapi(name) for name, param in op.query.items()]
    for name, header in op.headers.items():
        param = header.openapi(name)
        param["in"] = "header"
        params.append(param)
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": _hoist(op.body.json_schema(), components)}},
        }
    ok: dict[str, Any] = {"description": "Success"}
    if op.response is not None:
        ok["content"] = {"application/json": {
            "schema": _hoist(op.response.json_schema(), components)}}
    responses: dict[str, Any] = {
        str(code): {"description": "No content"} if code == 204 else dict(ok)
        for code in op.success}
    codes = set(op.errors)
    if op.permission is not None:
        codes |= {401, 403, 429} if rate_limited else {401, 403}
        doc["security"] = [{"ApiKey": []}, {"Bearer": []}]
    if op.query or op.body is not None or params:
        codes.add(400)
    for code in sorted(codes):
        responses[str(code)] = {
            "description": _ERROR_DESCRIPTIONS.get(code, "Error"),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    if "429" in responses:
        responses["429"]["headers"] = {
            "Retry-After": {"description": "seconds until the window ends",
                            "schema": {"type": "integer"}}, **_RATE_LIMIT_HEADERS}
    doc["responses"] = responses
    if op.permission is not None:
        doc["x-permission"] = op.permission.name
    return doc


def _path_names(path: str) -> list[str]:
    import re

    return re.findall(r"\{(\w+)\}", path)


HEALTH_SCHEMA: dict[str, Any] = {
    "title": "Health", "type": "object", "required": ["status", "service"],
    "additionalProperties": False,
    "properties": {"status": {"type": "string", "enum": ["ok"]},
                   "service": {"type": "string"}},
}
HEALTH_OPERATION: dict[str, Any] = {
    "operationId": "healthz", "summary": "Health check", "tags": ["Health"],
    "description": "The process answers (no dependency is checked: that is `/readyz`).",
    "responses": {"200": {"description": "Success", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Health"}}}}},
}


def build(api: Api, *, title: str = "etrans - Email Transactional API") -> dict[str, Any]:
    components: dict[str, Any] = {"Error": ERROR_SCHEMA, "Health": HEALTH_SCHEMA}
    paths: dict[str, Any] = {"/healthz": {"get": HEALTH_OPERATION}}
    for op in api.operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(
            op, components, rate_limited=api.rate_limiter is not None)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__,
                 "description": "See docs/api.md for authentication, errors and limits."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }

