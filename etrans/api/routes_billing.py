"""Routes of /billing (use cases: :mod:`etrans.app.billing`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from etrans.api.routes_domains import TEXT
from etrans.api.schema import Integer, Object, Prop, String
from etrans.app import billing as uc
from etrans.domain.api_keys import Permission
from etrans.errors import InvalidInput

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.domains import AccountServices

TAG = "Billing"
DOMAIN_ID = Integer(minimum=1, maximum=2**63 - 1)
CODE = String(min_length=1, max_length=64, checks=TEXT)
SUBS = Object({"pack_code": Prop(CODE, required=True),
               "domain_id": Prop(DOMAIN_ID, required=True)}, name="CreateSubscriptionRequest")
PAYG = Object({"domain_id": Prop(DOMAIN_ID, required=True)}, name="CreatePaygRequest")


def _domain_id(raw: str) -> int:
    # ASCII digits only: "\u00b2".isdigit() is true but int() refuses it (that was a 500).
    if re.fullmatch(r"[0-9]{1,19}", raw) is None or not 0 < int(raw) < 2**63:
        raise InvalidInput(f"invalid domain_id {raw!r}: expected a positive integer")
    return int(raw)


def register(api: Api) -> None:
    s: AccountServices | None = api.services.get("accounts")
    if s is None:  # an app built without the account services (e.g. a test of other routes)
        return

    @api.route("GET", "/billing/subscription/packs", permission=Permission.read_only,
               summary="List packages", tag=TAG, errors=(401,))
    async def list_packs(ctx: RequestContext) -> Any:
        return await uc.list_packs(s)

    @api.route("GET", "/billing/subscription/current-pack", permission=Permission.read_only,
               summary="Get current pack", tag=TAG, errors=(401,))
    async def current_pack(ctx: RequestContext) -> Any:
        return await uc.current_pack(s, ctx.user_id)

    @api.route("POST", "/billing/subscription/subs", permission=Permission.full_access,
               summary="Create subscription", tag=TAG, body=SUBS,
               errors=(400, 401, 403, 404, 502, 503))
    async def create_subscription(ctx: RequestContext) -> Any:
        return await uc.create_subscription(s, ctx.user_id, pack_code=ctx.body["pack_code"],
                                            domain_id=ctx.body["domain_id"])

    @api.route("GET", "/billing/payg/packages", permission=Permission.read_only,
               summary="Get PAYG package", tag=TAG, errors=(401, 404))
    async def payg_package(ctx: RequestContext) -> Any:
        return await uc.payg_package(s)

    @api.route("POST", "/billing/payg/subscriptions", permission=Permission.full_access,
               summary="Create PAYG subscription", tag=TAG, body=PAYG,
               errors=(400, 401, 403, 404, 502, 503))
    async def create_payg_subscription(ctx: RequestContext) -> Any:
        return await uc.create_payg(s, ctx.user_id, ctx.body["domain_id"])

    @api.route("GET", "/billing/payg/subscriptions/{domain_id}", permission=Permission.read_only,
               summary="Get current PAYG subscription", tag=TAG, errors=(400, 401, 404))
    async def get_payg_subscription(ctx: RequestContext) -> Any:
        return await uc.get_payg(s, ctx.user_id, _domain_id(ctx.path["domain_id"]))

    @api.route("DELETE", "/billing/payg/subscriptions/{domain_id}",
               permission=Permission.full_access, summary="Cancel PAYG subscription", tag=TAG,
               errors=(400, 401, 403, 404, 502, 503))
    async def cancel_payg_subscription(ctx: RequestContext) -> Any:
        return await uc.cancel_payg(s, ctx.user_id, _domain_id(ctx.path["domain_id"]))
