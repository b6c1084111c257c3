"""Routes of /billing (use cases: :mod:`etrans.app.billing`): requests to commands, records to
the JSON of ``docs/api.md``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from etrans.api.routes_domains import TEXT
from etrans.api.schema import Integer, Object, Prop, String
from etrans.app.billing import (
    CancelPaygSubscription,
    CreatePaygSubscription,
    CreateSubscription,
    GetCurrentPack,
    GetPaygPackage,
    GetPaygSubscription,
    ListPacks,
)
from etrans.domain.api_keys import Permission
from etrans.domain.domains import format_domain_id, quota_view
from etrans.domain.timestamps import iso
from etrans.errors import InvalidInput

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.account_records import CurrentPack, Pack, Subscription

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


def pack_view(p: Pack) -> dict[str, Any]:
    return {"pack_code": p.pack_code, "pack_name": p.pack_name, "pack_type": p.pack_type,
            "daily_email_limit": p.daily_email_limit, "domain_limit": p.domain_limit,
            "price": p.price, "is_active": p.is_active}


def _subscription(sub: Subscription) -> dict[str, Any]:
    return {"id": sub.id, "domain_id": sub.domain_id, "pack_code": sub.pack_code,
            "kind": sub.kind, "status": sub.status,
            "previous_pack_code": sub.previous_pack_code, "started_at": iso(sub.started_at)}


def _current(c: CurrentPack) -> dict[str, Any]:
    return {
        "pack_code": c.pack_code,
        "pack_name": c.pack_name,
        "pack_type": c.pack.pack_type if c.pack else None,
        "daily_email_limit": c.daily_email_limit,
        "domain_limit": c.domain_limit,
        "quota": quota_view(c.limits, c.usage),
        "domains": [{"domain_id": format_domain_id(r.id), "domain_name": r.name,
                     "status": r.status} for r in c.domains],
    }


def register(api: Api) -> None:
    bus = api.services.bus

    @api.route("GET", "/billing/subscription/packs", permission=Permission.read_only,
               summary="List packages", tag=TAG, errors=(401,))
    async def list_packs(ctx: RequestContext) -> Any:
        packs = await bus.handle(ListPacks())
        return {"success": True, "packages": [pack_view(p) for p in packs]}

    @api.route("GET", "/billing/subscription/current-pack", permission=Permission.read_only,
               summary="Get current pack", tag=TAG, errors=(401,))
    async def current_pack(ctx: RequestContext) -> Any:
        return _current(await bus.handle(GetCurrentPack(ctx.user_id)))

    @api.route("POST", "/billing/subscription/subs", permission=Permission.full_access,
               summary="Create subscription", tag=TAG, body=SUBS,
               errors=(400, 401, 403, 404, 502, 503))
    async def create_subscription(ctx: RequestContext) -> Any:
        pack_code = ctx.body["pack_code"]
        row = await bus.handle(CreateSubscription(ctx.user_id, pack_code=pack_code,
                                                  domain_id=ctx.body["domain_id"]))
        return {"success": True, "message": "Subscription created successfully",
                "domain_id": row.id, "pack_code": pack_code}

    @api.route("GET", "/billing/payg/packages", permission=Permission.read_only,
               summary="Get PAYG package", tag=TAG, errors=(401, 404))
    async def payg_package(ctx: RequestContext) -> Any:
        pack = await bus.handle(GetPaygPackage())
        return {"pack_code": pack.pack_code, "pack_name": pack.pack_name,
                "pack_type": pack.pack_type, "pricing": pack.pricing or {}}

    @api.route("POST", "/billing/payg/subscriptions", permission=Permission.full_access,
               summary="Create PAYG subscription", tag=TAG, body=PAYG,
               errors=(400, 401, 403, 404, 502, 503))
    async def create_payg_subscription(ctx: RequestContext) -> Any:
        made = await bus.handle(CreatePaygSubscription(ctx.user_id, ctx.body["domain_id"]))
        return {"success": True, "message": "PAYG subscription created",
                "subscription": _subscription(made.subscription) if made.subscription else {},
                "previous_pack": made.previous_pack}

    @api.route("GET", "/billing/payg/subscriptions/{domain_id}", permission=Permission.read_only,
               summary="Get current PAYG subscription", tag=TAG, errors=(400, 401, 404))
    async def get_payg_subscription(ctx: RequestContext) -> Any:
        sub = await bus.handle(GetPaygSubscription(ctx.user_id,
                                                   _domain_id(ctx.path["domain_id"])))
        return {"subscription": _subscription(sub)}

    @api.route("DELETE", "/billing/payg/subscriptions/{domain_id}",
               permission=Permission.full_access, summary="Cancel PAYG subscription", tag=TAG,
               errors=(400, 401, 403, 404, 502, 503))
    async def cancel_payg_subscription(ctx: RequestContext) -> Any:
        await bus.handle(CancelPaygSubscription(ctx.user_id, _domain_id(ctx.path["domain_id"])))
        return {"success": True, "message": "PAYG subscription cancelled"}
