"""Routes of /api-keys (use cases: :mod:`etrans.app.api_keys`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from etrans.api.responses import DATE_TIME, DELETED, page_of, present, present_or_null
from etrans.api.routes_domains import PAGE, TEXT
from etrans.api.schema import Boolean, Integer, Object, Prop, String
from etrans.app.api_keys import CreateApiKey, DeleteApiKey, GetApiKey, ListApiKeys
from etrans.domain.api_keys import ALLOWED_EXPIRY_DAYS, Permission, is_expired
from etrans.domain.domains import format_key_id, parse_key_id
from etrans.domain.timestamps import iso

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.account_records import ApiKey, NewApiKey

TAG = "API Keys"
CREATE = Object({
    "name": Prop(String(min_length=1, max_length=255, pattern=r"^[^\r\n]*$", checks=TEXT),
                 required=True),
    "permission": Prop(String(enum=tuple(Permission.__members__)), nullable=True),
    "expires_in_days": Prop(Integer(description="one of "
                                    + ", ".join(map(str, ALLOWED_EXPIRY_DAYS))), nullable=True),
}, name="CreateApiKeyRequest")

# -- answers (docs/api.md, "API keys") --
_ID = String(description="key_<n>", example="key_7")
_PERMISSION = String(enum=tuple(Permission.__members__))
_EXPIRES_AT = present_or_null(DATE_TIME)  # null: never expires
API_KEY = Object(name="ApiKey", properties={
    "id": present(_ID), "name": present(String()), "permission": present(_PERMISSION),
    "expires_at": _EXPIRES_AT, "is_expired": present(Boolean()),
    "created_at": present_or_null(DATE_TIME)})
API_KEY_DETAIL = Object(name="ApiKeyDetail", properties={
    **API_KEY.properties, "active": present(Boolean()),
    "updated_at": present_or_null(DATE_TIME)})
API_KEY_CREATED = Object(name="ApiKeyCreated", properties={
    "id": present(_ID), "name": present(String()),
    "key": present(String(description="the key itself: shown once, never again")),
    "permission": present(_PERMISSION), "expires_at": _EXPIRES_AT,
    "created_at": present_or_null(DATE_TIME)})
API_KEY_LIST = page_of("ApiKeyList", API_KEY)


def key_view(row: ApiKey, now: datetime) -> dict[str, Any]:
    return {"id": format_key_id(row.id), "name": row.name, "permission": row.permission,
            "expires_at": iso(row.expires_at), "is_expired": is_expired(row.expires_at, now),
            "created_at": iso(row.created_at)}


def _created(new: NewApiKey) -> dict[str, Any]:
    row = new.record
    return {"id": format_key_id(row.id), "name": row.name, "key": new.key,
            "permission": row.permission, "expires_at": iso(row.expires_at),
            "created_at": iso(row.created_at)}


def register(api: Api) -> None:
    bus = api.services.bus

    @api.route("POST", "/api-keys", permission=Permission.full_access, summary="Create API key",
               tag=TAG, body=CREATE, response=API_KEY_CREATED, errors=(400, 401, 403))
    async def create_api_key(ctx: RequestContext) -> Any:
        b = ctx.body
        assert ctx.principal is not None
        return _created(await bus.handle(CreateApiKey(
            ctx.user_id, name=b["name"], permission=b.get("permission"),
            expires_in_days=b.get("expires_in_days"), created_by_key_id=ctx.principal.key_id)))

    @api.route("GET", "/api-keys", permission=Permission.read_only, summary="List API keys",
               tag=TAG, query=PAGE, response=API_KEY_LIST, errors=(400, 401))
    async def list_api_keys(ctx: RequestContext) -> Any:
        page = await bus.handle(ListApiKeys(ctx.user_id, page=ctx.query["page"],
                                            per_page=ctx.query["per_page"]))
        now = datetime.now(UTC)
        return {"data": [key_view(r, now) for r in page.rows], "total": page.total,
                "page": page.page, "per_page": page.per_page}

    @api.route("GET", "/api-keys/{key_id}", permission=Permission.read_only,
               summary="Get API key", tag=TAG, response=API_KEY_DETAIL, errors=(400, 401, 404))
    async def get_api_key(ctx: RequestContext) -> Any:
        row = await bus.handle(GetApiKey(ctx.user_id, parse_key_id(ctx.path["key_id"])))
        return {**key_view(row, datetime.now(UTC)), "active": row.active,
                "updated_at": iso(row.updated_at)}

    @api.route("DELETE", "/api-keys/{key_id}", permission=Permission.full_access,
               summary="Delete API key", tag=TAG, response=DELETED, errors=(400, 401, 403, 404))
    async def delete_api_key(ctx: RequestContext) -> Any:
        key_id = parse_key_id(ctx.path["key_id"])
        await bus.handle(DeleteApiKey(ctx.user_id, key_id))
        return {"id": format_key_id(key_id), "deleted": True}
