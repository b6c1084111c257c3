"""Routes of /domains (use cases: :mod:`etrans.app.domains`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from etrans.api.schema import Boolean, Integer, Object, Prop, QueryParam, String
from etrans.app import domains as uc
from etrans.domain.api_keys import Permission
from etrans.domain.domains import parse_domain_id

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext

TAG = "Domains"
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def plain_text(value: str) -> str | None:
    """No control characters (NUL cannot be stored in PostgreSQL text) and no lone surrogates
    (not encodable as UTF-8): such input is a 400, never a 500."""
    if _UNSTORABLE.search(value):
        return "must not contain control characters or invalid Unicode"
    return None


TEXT = (plain_text,)
PAGE = {
    "page": QueryParam(Integer(minimum=1, maximum=1_000_000), default=1),
    "per_page": QueryParam(Integer(minimum=1, maximum=100), default=20),
}
CREATE = Object({"domain": Prop(String(min_length=1, max_length=253, checks=TEXT),
                                  required=True)},
                name="CreateDomainRequest")
TRACKING = Object({"click_tracking": Prop(Boolean(), nullable=True),
                   "open_tracking": Prop(Boolean(), nullable=True)},
                  name="UpdateDomainTrackingRequest")


def register(api: Api) -> None:
    s: uc.AccountServices | None = api.services.get("accounts")
    if s is None:  # an app built without the account services (e.g. a test of other routes)
        return

    @api.route("POST", "/domains", permission=Permission.full_access, summary="Create domain",
               tag=TAG, body=CREATE, errors=(400, 401, 403))
    async def create_domain(ctx: RequestContext) -> Any:
        return await uc.create_domain(s, ctx.user_id, ctx.body["domain"])

    @api.route("GET", "/domains", permission=Permission.read_only, summary="List domains",
               tag=TAG, query={**PAGE, "search": QueryParam(String(max_length=253, checks=TEXT),
                                                   default="")},
               errors=(400, 401))
    async def list_domains(ctx: RequestContext) -> Any:
        q = ctx.query
        return await uc.list_domains(s, ctx.user_id, page=q["page"], per_page=q["per_page"],
                                     search=q["search"])

    @api.route("GET", "/domains/{domain_id}", permission=Permission.read_only,
               summary="Get domain", tag=TAG, errors=(400, 401, 404))
    async def get_domain(ctx: RequestContext) -> Any:
        return await uc.get_domain(s, ctx.user_id, parse_domain_id(ctx.path["domain_id"]))

    @api.route("GET", "/domains/{domain_id}/quota", permission=Permission.read_only,
               summary="Get domain quota", tag=TAG, errors=(400, 401, 404))
    async def get_domain_quota(ctx: RequestContext) -> Any:
        return await uc.domain_quota(s, ctx.user_id, parse_domain_id(ctx.path["domain_id"]))

    @api.route("POST", "/domains/{domain_id}/verify", permission=Permission.full_access,
               summary="Verify domain DNS", tag=TAG, errors=(400, 401, 403, 404, 409))
    async def verify_domain(ctx: RequestContext) -> Any:
        return await uc.verify_domain(s, ctx.user_id, parse_domain_id(ctx.path["domain_id"]))

    @api.route("PATCH", "/domains/{domain_id}", permission=Permission.full_access,
               summary="Update domain tracking", tag=TAG, body=TRACKING,
               errors=(400, 401, 403, 404))
    async def update_domain_tracking(ctx: RequestContext) -> Any:
        body = ctx.body or {}
        return await uc.update_tracking(s, ctx.user_id, parse_domain_id(ctx.path["domain_id"]),
                                        body.get("click_tracking"), body.get("open_tracking"))

    @api.route("DELETE", "/domains/{domain_id}", permission=Permission.full_access,
               summary="Delete domain", tag=TAG, errors=(400, 401, 403, 404))
    async def delete_domain(ctx: RequestContext) -> Any:
        return await uc.delete_domain(s, ctx.user_id, parse_domain_id(ctx.path["domain_id"]))
