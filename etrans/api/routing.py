"""Route declarations: authentication, permission, request validation and the OpenAPI registry.

Every endpoint is declared once with :meth:`Api.route`::

    @api.route("GET", "/emails/{message_id}", permission=Permission.read_only,
               summary="Get email", tag="Emails", response=EMAIL_DETAIL)
    async def get_email(ctx: RequestContext) -> dict: ...

The wrapper, in this order: authenticates (401), checks the permission (403), checks the path
parameters, parses the query string and the JSON body with the declared specs (400: see
:mod:`etrans.api.request_input` for what any request is held to), then calls the handler with a
:class:`RequestContext`.  A handler returns a JSON-able value (200) or ``(value, status)`` or a
Quart response.  The same declarations produce ``/openapi.json`` (:mod:`etrans.api.openapi`).
Routers of other resources (domains, api-keys, ...) use the same :class:`Api` instance, and find
what they call in :class:`ApiServices` (``api.services``): typed and complete, so an app whose
routes miss a dependency fails when it is built, not with a route that is silently absent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from quart import Response, g, request

from etrans.api.asgi_body import admit_body
from etrans.api.request_input import check_path, decode_json, parse_query
from etrans.api.schema import SchemaError
from etrans.errors import AppError, InvalidInput, Unauthorized, UpstreamUnavailable

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from etrans.api.auth import Authenticator, Principal
    from etrans.api.rate_limit import RateLimiter
    from etrans.api.schema import QueryParam, Spec
    from etrans.app.bus import MessageBus
    from etrans.app.ports import IdempotencyStore
    from etrans.domain.api_keys import Permission

Handler = Callable[["RequestContext"], Awaitable[Any]]


class ValidationFailed(InvalidInput):
    """400 with FastAPI's list shape: ``{"detail": [{"loc", "msg", "type"}, ...]}``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)


@dataclass
class RequestContext:
    principal: Principal | None
    query: dict[str, Any]
    body: Any
    path: dict[str, str]
    headers: Mapping[str, str]
    raw_body: bytes = b""  # only when the request has an Idempotency-Key header

    @property
    def user_id(self) -> int:
        assert self.principal is not None, "public routes have no user"
        return self.principal.user_id


@dataclass
class Operation:
    method: str
    path: str  # OpenAPI form: /emails/{message_id}
    summary: str
    tag: str
    permission: Permission | None
    query: Mapping[str, QueryParam] = field(default_factory=dict)
    body: Spec | None = None
    body_required: bool = True
    response: Spec | None = None
    errors: tuple[int, ...] = ()
    headers: Mapping[str, QueryParam] = field(default_factory=dict)
    description: str | None = None
    operation_id: str = ""
    success: tuple[int, ...] = (200,)  # the success statuses (204: no body)
    validate_body: bool = True  # False: the handler validates (e.g. per batch item)


@dataclass(frozen=True)
class ApiServices:
    """What the routes use (built by :func:`etrans.bootstrap.api.api_services`)."""

    bus: MessageBus  # every use case: emails, logs, domains, API keys, senders, billing
    idempotency: IdempotencyStore  # Idempotency-Key of POST /emails
    testing_routes: bool = False  # ETRANS_ENABLE_TESTING_ROUTES: POST /testing/set-pack


def _quart_path(path: str) -> str:
    """``{name}``: one path segment; ``{name:path}``: the rest of the path, slashes included
    (an address may have a ``/``, which arrives decoded from ``%2F``)."""
    return re.sub(r"\{(\w+)\}", r"<\1>", re.sub(r"\{(\w+):path\}", r"<path:\1>", path))


class Api:
    """The route registry of one application (what :func:`etrans.api.app.create_app` builds)."""

    def __init__(self, app: QuartTrio, authenticator: Authenticator | None,
                 services: ApiServices | None = None, *,
                 rate_limiter: RateLimiter | None = None) -> None:
        self.app = app
        self.authenticator = authenticator
        self.rate_limiter = rate_limiter
        self._services = services
        self.operations: list[Operation] = []

    @property
    def services(self) -> ApiServices:
        """What the routes call; an app built without it has no routes that need it."""
        if self._services is None:
            raise TypeError("these routes need ApiServices: create_app(ApiDependencies("
                            "services=...)) (etrans.bootstrap.api.api_services builds it)")
        return self._services

    def route(
        self,
        method: str,
        path: str,
        *,
        permission: Permission | None,
        summary: str,
        tag: str,
        query: Mapping[str, QueryParam] | None = None,
        body: Spec | None = None,
        body_required: bool = True,
        response: Spec | None = None,
        errors: tuple[int, ...] = (),
        headers: Mapping[str, QueryParam] | None = None,
        description: str | None = None,
        validate_body: bool = True,
        success: tuple[int, ...] = (200,),
    ) -> Callable[[Handler], Handler]:
        if response is None and [code for code in success if code != 204]:
            # /openapi.json promises every answer's shape: a client generated from it is typed.
            raise TypeError(f"{method} {path}: declare the answer's schema (response=...)")

        def decorate(handler: Handler) -> Handler:
            op = Operation(
                method=method.upper(), path=re.sub(r"\{(\w+):path\}", r"{\1}", path),
                summary=summary, tag=tag, permission=permission,
                query=query or {}, body=body, body_required=body_required, response=response,
                errors=errors, headers=headers or {}, description=description,
                operation_id=handler.__name__, validate_body=validate_body, success=success,
            )
            self.operations.append(op)

            async def endpoint(**path_args: str) -> Any:
                ctx = await self._prepare(op, path_args)
                result = await handler(ctx)
                return _to_response(result)

            endpoint.__name__ = f"{op.method.lower()}_{handler.__name__}"
            self.app.add_url_rule(_quart_path(path), endpoint=endpoint.__name__,
                                  view_func=endpoint, methods=[op.method])
            return handler

        return decorate

    async def _prepare(self, op: Operation, path_args: dict[str, str]) -> RequestContext:
        principal = None
        if op.permission is not None:
            if self.authenticator is None:
                raise UpstreamUnavailable("authentication is not configured")
            try:
                principal = await self.authenticator.authenticate(
                    _headers(), request.cookies, method=request.method,
                    scheme=request.scheme)
            except Unauthorized:
                await self._count_request(None)  # guessing keys costs the address's budget
                raise
            await self._count_request(principal)
            principal.require(op.permission)
        else:
            await self._count_request(None)
        try:
            path_args = check_path(path_args)
            query = parse_query(op.query, request.args) if op.query else {}
        except SchemaError as exc:
            raise ValidationFailed(exc.errors) from None
        body: Any = None
        raw = b""
        if op.body is not None:
            limit = self.app.config.get("MAX_CONTENT_LENGTH")
            raw = await read_body(limit)
            body = parse_json_body(raw, required=op.body_required, max_bytes=limit)
            if op.validate_body and (body is not None or op.body_required):
                try:
                    body = op.body.validate(body, ("body",))
                except SchemaError as exc:
                    raise ValidationFailed(exc.errors) from None
        # The raw bytes are kept only for the Idempotency-Key fingerprint (api.emails), their
        # one reader: without the header a body is held once (parsed), not twice.
        if "Idempotency-Key" not in request.headers:
            raw = b""
        return RequestContext(principal=principal, query=query, body=body, path=path_args,
                              headers=_headers(), raw_body=raw)

    async def _count_request(self, principal: Principal | None) -> None:
        """Rate limits (:mod:`etrans.api.rate_limit`): 429 over the budget; the decision goes to
        ``g.rate_limit``, whose headers :func:`etrans.api.app.create_app` adds to the response."""
        if self.rate_limiter is None:
            return
        client = self.rate_limiter.client_address(request.remote_addr,
                                                  request.headers.get("X-Forwarded-For"))
        try:
            g.rate_limit = await self.rate_limiter.check(principal, client)
        except AppError as exc:
            g.rate_limit = getattr(exc, "decision", None)
            raise


def _headers() -> Mapping[str, str]:
    """The request's headers (werkzeug's ``Headers``: a case-insensitive str -> str mapping)."""
    return cast("Mapping[str, str]", request.headers)


class BodyTooLarge(InvalidInput):
    pass


# What a chunked body reserves of the memory budget when the app sets no MAX_CONTENT_LENGTH.
DEFAULT_LARGEST_BODY = 36 * 1024 * 1024


async def read_body(limit: int | None) -> bytes:
    """The request body, refusing early (before reading) when Content-Length is over ``limit``
    or the body memory budget is full (503, :mod:`etrans.api.body_budget`); Quart's
    MAX_CONTENT_LENGTH stops a chunked body at the limit while it streams."""
    length = request.content_length
    if limit is not None and length is not None and length > limit:
        raise BodyTooLarge(f"Request body too large: {length} bytes, the limit is {limit}")
    admit_body(cast("dict[str, Any]", request.scope),
               limit if limit is not None else DEFAULT_LARGEST_BODY)
    try:
        # cache=False: Quart drops its own buffer once the bytes are returned (one copy less
        # of every body, the whole request long).
        return await request.get_data(cache=False, as_text=False, parse_form_data=False)
    except Exception as exc:  # werkzeug's RequestEntityTooLarge while streaming
        if getattr(exc, "code", None) == 413:
            raise BodyTooLarge(f"Request body too large: the limit is {limit} bytes") from None
        raise


def parse_json_body(raw: bytes, *, required: bool, max_bytes: int | None = None) -> Any:
    if not raw.strip():
        if required:
            raise ValidationFailed([{"loc": ["body"], "msg": "Request body is required",
                                     "type": "missing"}])
        return None
    try:
        return decode_json(raw, max_bytes=max_bytes)
    except SchemaError as exc:
        raise ValidationFailed(exc.errors) from None


def json_response(value: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    response = Response(body, status=status, content_type="application/json")
    for name, val in (headers or {}).items():
        response.headers[name] = val
    return response


def _to_response(result: Any) -> Any:
    if isinstance(result, Response):
        return result
    if isinstance(result, tuple):
        value, status = result
        return json_response(value, status)
    return json_response(result)
