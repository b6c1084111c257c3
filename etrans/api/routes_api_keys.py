"""Routes of /api-keys (use cases: :mod:`etrans.app.api_keys`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.api.routes_domains import PAGE, TEXT
from etrans.api.schema import Integer, Object, Prop, String
from etrans.app import api_keys as uc
from etrans.domain.api_keys import ALLOWED_EXPIRY_DAYS, Permission
from etrans.domain.domains import parse_key_id

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.domains import AccountServices

TAG = "API Keys"
CREATE = Object({
    "name": Prop(String(min_length=1, max_length=255, pattern=r"^[^\r\n]*$", checks=TEXT),
                 required=True),
    "permission": Prop(String(enum=tuple(Permission.__members__)), nullable=True),
    "expires_in_days": Prop(Integer(description="one of "
                                    + ", ".join(map(str, ALLOWED_EXPIRY_DAYS))), nullable=True),
}, name="CreateApiKeyRequest")


def register(api: Api) -> None:
    s: AccountServices | None = api.services.get("accounts")
    if s is None:  # an app built without the account services (e.g. a test of other routes)
        return

    @api.route("POST", "/api-keys", permission=Permission.full_access, summary="Create API key",
               tag=TAG, body=CREATE, errors=(400, 401, 403))
    async def create_api_key(ctx: RequestContext) -> Any:
        b = ctx.body
        assert ctx.principal is not None
        return await uc.create_api_key(s, ctx.user_id, name=b["name"],
                                       permission=b.get("permission"),
                                       expires_in_days=b.get("expires_in_days"),
                                       created_by_key_id=ctx.principal.key_id)

    @api.route("GET", "/api-keys", permission=Permission.read_only, summary="List API keys",
               tag=TAG, query=PAGE, errors=(400, 401))
    async def list_api_keys(ctx: RequestContext) -> Any:
        return await uc.list_api_keys(s, ctx.user_id, page=ctx.query["page"],
                                      per_page=ctx.query["per_page"])

    @api.route("GET", "/api-keys/{key_id}", permission=Permission.read_only,
               summary="Get API key", tag=TAG, errors=(400, 401, 404))
    async def get_api_key(ctx: RequestContext) -> Any:
        return await uc.get_api_key(s, ctx.user_id, parse_key_id(ctx.path["key_id"]))

    @api.route("DELETE", "/api-keys/{key_id}", permission=Permission.full_access,
               summary="Delete API key", tag=TAG, errors=(400, 401, 403, 404))
    async def delete_api_key(ctx: RequestContext) -> Any:
        return await uc.delete_api_key(s, ctx.user_id, parse_key_id(ctx.path["key_id"]))
