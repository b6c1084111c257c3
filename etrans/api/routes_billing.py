"""Routes of /billing (use cases: :mod:`etrans.app.billing`): requests to commands, records to
the JSON of ``docs/api.md``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from etrans.api.responses import (
    DATE_TIME,
    EMPTY_OBJECT,
    AnyOf,
    Number,
    present,
    present_or_null,
)
from etrans.api.routes_domains import QUOTA_FIELDS, TEXT
from etrans.api.schema import AnyJson, Array, Boolean, Integer, MapOf, Object, Prop, String
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

# -- answers (the spec's billing shapes; docs/api.md, "Billing") --
_TRUE = Boolean(description="always true")
PACK = Object(name="Pack", properties={
    "pack_code": present(String()), "pack_name": present(String()),
    "pack_type": present(String()), "daily_email_limit": present(Integer()),
    "domain_limit": present(Integer()), "price": present(Number()),
    "is_active": present(Boolean())})
PACK_LIST = Object(name="PackList", properties={"success": present(_TRUE),
                                                "packages": present(Array(PACK))})
CURRENT_PACK = Object(name="CurrentPack", properties={
    "pack_code": present_or_null(String()), "pack_name": present_or_null(String()),
    "pack_type": present_or_null(String()),
    "daily_email_limit": present_or_null(Integer()), "domain_limit": present(Integer()),
    "quota": present(Object(name="Quota", properties=QUOTA_FIELDS,
                            description="summed over the user's domains; null: unlimited")),
    "domains": present(Array(Object(name="PackDomain", properties={
        "domain_id": present(String(description="dom_<n>")),
        "domain_name": present(String()), "status": present(String())})))})
SUBSCRIBED = Object(name="SubscriptionCreated", properties={
    "success": present(_TRUE), "message": present(String()),
    "domain_id": present(Integer()), "pack_code": present(String())})
PAYG_PACKAGE = Object(name="PaygPackage", properties={
    "pack_code": present(String()), "pack_name": present(String()),
    "pack_type": present(String()),
    "pricing": present(MapOf(AnyJson(), description="the pack's pricing ({} when none)"))})
SUBSCRIPTION = Object(name="PaygSubscription", properties={
    "id": present(Integer()), "domain_id": present(Integer()), "pack_code": present(String()),
    "kind": present(String(enum=("subscription", "payg"))), "status": present(String()),
    "previous_pack_code": present_or_null(String()),
    "started_at": present_or_null(DATE_TIME)})
PAYG_CREATED = Object(name="PaygSubscriptionCreated", properties={
    "success": present(_TRUE), "message": present(String()),
    "subscription": present(AnyOf((SUBSCRIPTION, EMPTY_OBJECT),
                                  description="{} when it cannot be read back yet")),
    "previous_pack": present_or_null(String())})
PAYG_CURRENT = Object(name="PaygSubscriptionCurrent",
                      properties={"subscription": present(SUBSCRIPTION)})
DONE = Object(name="Done", properties={"success": present(_TRUE),
                                       "message": present(String())})


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
               summary="List packages", tag=TAG, response=PACK_LIST, errors=(401,))
    async def list_packs(ctx: RequestContext) -> Any:
        packs = await bus.handle(ListPacks())
        return {"success": True, "packages": [pack_view(p) for p in packs]}

    @api.route("GET", "/billing/subscription/current-pack", permission=Permission.read_only,
               summary="Get current pack", tag=TAG, response=CURRENT_PACK, errors=(401,))
    async def current_pack(ctx: RequestContext) -> Any:
        return _current(await bus.handle(GetCurrentPack(ctx.user_id)))

    @api.route("POST", "/billing/subscription/subs", permission=Permission.full_access,
               summary="Create subscription", tag=TAG, body=SUBS, response=SUBSCRIBED,
               errors=(400, 401, 403, 404, 502, 503))
    async def create_subscription(ctx: RequestContext) -> Any:
        pack_code = ctx.body["pack_code"]
        row = await bus.handle(CreateSubscription(ctx.user_id, pack_code=pack_code,
                                                  domain_id=ctx.body["domain_id"]))
        return {"success": True, "message": "Subscription created successfully",
                "domain_id": row.id, "pack_code": pack_code}

    @api.route("GET", "/billing/payg/packages", permission=Permission.read_only,
               summary="Get PAYG package", tag=TAG, response=PAYG_PACKAGE, errors=(401, 404))
    async def payg_package(ctx: RequestContext) -> Any:
        pack = await bus.handle(GetPaygPackage())
        return {"pack_code": pack.pack_code, "pack_name": pack.pack_name,
                "pack_type": pack.pack_type, "pricing": pack.pricing or {}}

    @api.route("POST", "/billing/payg/subscriptions", permission=Permission.full_access,
               summary="Create PAYG subscription", tag=TAG, body=PAYG, response=PAYG_CREATED,
               errors=(400, 401, 403, 404, 502, 503))
    async def create_payg_subscription(ctx: RequestContext) -> Any:
        made = await bus.handle(CreatePaygSubscription(ctx.user_id, ctx.body["domain_id"]))
        return {"success": True, "message": "PAYG subscription created",
                "subscription": _subscription(made.subscription) if made.subscription else {},
                "previous_pack": made.previous_pack}

    @api.route("GET", "/billing/payg/subscriptions/{domain_id}", permission=Permission.read_only,
               summary="Get current PAYG subscription", tag=TAG, response=PAYG_CURRENT,
               errors=(400, 401, 404))
    async def get_payg_subscription(ctx: RequestContext) -> Any:
        sub = await bus.handle(GetPaygSubscription(ctx.user_id,
                                                   _domain_id(ctx.path["domain_id"])))
        return {"subscription": _subscription(sub)}

    @api.route("DELETE", "/billing/payg/subscriptions/{domain_id}",
               permission=Permission.full_access, summary="Cancel PAYG subscription", tag=TAG,
               response=DONE, errors=(400, 401, 403, 404, 502, 503))
    async def cancel_payg_subscription(ctx: RequestContext) -> Any:
        await bus.handle(CancelPaygSubscription(ctx.user_id, _domain_id(ctx.path["domain_id"])))
        return {"success": True, "message": "PAYG subscription cancelled"}
