"""Routes of /domains (use cases: :mod:`etrans.app.domains`), and what every account router
shares: the text checks, the paging parameters.

Each route turns the request into a command for the bus and the record it answers into the
JSON of ``docs/api.md``; the shaping is here, the rules are in the use cases.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from etrans.api.responses import (
    DATE_TIME,
    DELETED,
    page_of,
    present,
    present_or_null,
)
from etrans.api.schema import Array, Boolean, Integer, Object, Prop, QueryParam, String
from etrans.app.domains import (
    CreateDomain,
    DeleteDomain,
    GetDomain,
    GetDomainQuota,
    ListDomains,
    UpdateDomainTracking,
    VerifyDomain,
)
from etrans.domain.api_keys import Permission
from etrans.domain.domains import format_domain_id, parse_domain_id, quota_view
from etrans.domain.timestamps import iso

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.account_records import (
        DomainDetails,
        DomainQuotaReport,
        DomainRow,
        DomainTracking,
    )

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

# -- answers (docs/api.md, "Domains") --
_ID = String(description="dom_<n>", example="dom_42")
DNS_RECORD = Object(name="DnsRecord", properties={
    "type": present(String(enum=("TXT", "MX"))),
    "name": present(String(description="@ or the DKIM record's name")),
    "value": present(String()),
    "purpose": present(String(enum=("spf", "mx", "dkim"))),
    "priority": Prop(Integer(description="MX records only")),
    "verified": Prop(Boolean(description="after POST /domains/{domain_id}/verify")),
    "error": Prop(String(description="why the record was not found (verified false)")),
})
_DNS_RECORDS = present(Array(DNS_RECORD, description="SPF, MX and (with a DKIM key) DKIM"))
_STATUS = String(description="pending, verified, ...")
DOMAIN_SUMMARY = Object(name="DomainSummary", properties={
    "id": present(_ID), "domain": present(String()), "status": present(_STATUS),
    "created_at": present_or_null(DATE_TIME)})
DOMAIN_DETAIL = Object(name="DomainDetail", properties={
    **DOMAIN_SUMMARY.properties, "dns_records": _DNS_RECORDS,
    "verified_at": present_or_null(DATE_TIME)})
DOMAIN_CREATED = Object(name="DomainCreated", properties={
    "id": present(_ID), "domain": present(String()), "status": present(_STATUS),
    "dns_records": _DNS_RECORDS, "created_at": present_or_null(DATE_TIME)})
DOMAIN_VERIFIED = Object(name="DomainVerified", properties={
    "id": present(_ID), "domain": present(String()), "status": present(_STATUS),
    "dns_records": _DNS_RECORDS, "verified_at": present_or_null(DATE_TIME)})
DOMAIN_LIST = page_of("DomainList", DOMAIN_SUMMARY, total_verified=present(Integer()))
DOMAIN_TRACKING = Object(name="DomainTracking", properties={
    "id": present(_ID), "domain": present(String()),
    "click_tracking": present(Boolean()), "open_tracking": present(Boolean())})
# The nine fields of quota_view: null limit (and remaining) = unlimited.
QUOTA_FIELDS = {f"{period}_{what}": present_or_null(Integer())
                for period in ("daily", "hourly", "monthly")
                for what in ("limit", "used", "remaining")}
DOMAIN_QUOTA = Object(name="DomainQuota", properties={
    "domain": present(String()), **QUOTA_FIELDS,
    "pack_code": present_or_null(String()), "pack_name": present_or_null(String())})


def domain_summary(row: DomainRow) -> dict[str, Any]:
    return {"id": format_domain_id(row.id), "domain": row.name, "status": row.status,
            "created_at": iso(row.created_at)}


def _details(d: DomainDetails) -> dict[str, Any]:
    return {**domain_summary(d.domain), "dns_records": d.dns_records,
            "verified_at": iso(d.domain.verified_at)}


def _created(d: DomainDetails) -> dict[str, Any]:
    row = d.domain
    return {"id": format_domain_id(row.id), "domain": row.name, "status": row.status,
            "dns_records": d.dns_records, "created_at": iso(row.created_at)}


def _verified(d: DomainDetails) -> dict[str, Any]:
    row = d.domain
    return {"id": format_domain_id(row.id), "domain": row.name, "status": row.status,
            "dns_records": d.dns_records, "verified_at": iso(row.verified_at)}


def _tracking(t: DomainTracking) -> dict[str, Any]:
    return {"id": format_domain_id(t.domain.id), "domain": t.domain.name,
            "click_tracking": t.click_tracking, "open_tracking": t.open_tracking}


def _quota(q: DomainQuotaReport) -> dict[str, Any]:
    return {"domain": q.domain.name, **quota_view(q.limits, q.usage),
            "pack_code": q.pack_code, "pack_name": q.pack_name}


def register(api: Api) -> None:
    bus = api.services.bus

    @api.route("POST", "/domains", permission=Permission.full_access, summary="Create domain",
               tag=TAG, body=CREATE, response=DOMAIN_CREATED, errors=(400, 401, 403))
    async def create_domain(ctx: RequestContext) -> Any:
        return _created(await bus.handle(CreateDomain(ctx.user_id, ctx.body["domain"])))

    @api.route("GET", "/domains", permission=Permission.read_only, summary="List domains",
               tag=TAG, query={**PAGE, "search": QueryParam(String(max_length=253, checks=TEXT),
                                                   default="")},
               response=DOMAIN_LIST, errors=(400, 401))
    async def list_domains(ctx: RequestContext) -> Any:
        q = ctx.query
        page = await bus.handle(ListDomains(ctx.user_id, page=q["page"], per_page=q["per_page"],
                                            search=q["search"]))
        return {"data": [domain_summary(r) for r in page.rows], "total": page.total,
                "total_verified": page.total_verified, "page": page.page,
                "per_page": page.per_page}

    @api.route("GET", "/domains/{domain_id}", permission=Permission.read_only,
               summary="Get domain", tag=TAG, response=DOMAIN_DETAIL, errors=(400, 401, 404))
    async def get_domain(ctx: RequestContext) -> Any:
        domain_id = parse_domain_id(ctx.path["domain_id"])
        return _details(await bus.handle(GetDomain(ctx.user_id, domain_id)))

    @api.route("GET", "/domains/{domain_id}/quota", permission=Permission.read_only,
               summary="Get domain quota", tag=TAG, response=DOMAIN_QUOTA,
               errors=(400, 401, 404))
    async def get_domain_quota(ctx: RequestContext) -> Any:
        domain_id = parse_domain_id(ctx.path["domain_id"])
        return _quota(await bus.handle(GetDomainQuota(ctx.user_id, domain_id)))

    @api.route("POST", "/domains/{domain_id}/verify", permission=Permission.full_access,
               summary="Verify domain DNS", tag=TAG, response=DOMAIN_VERIFIED,
               errors=(400, 401, 403, 404, 409))
    async def verify_domain(ctx: RequestContext) -> Any:
        domain_id = parse_domain_id(ctx.path["domain_id"])
        return _verified(await bus.handle(VerifyDomain(ctx.user_id, domain_id)))

    @api.route("PATCH", "/domains/{domain_id}", permission=Permission.full_access,
               summary="Update domain tracking", tag=TAG, body=TRACKING,
               response=DOMAIN_TRACKING, errors=(400, 401, 403, 404))
    async def update_domain_tracking(ctx: RequestContext) -> Any:
        body = ctx.body or {}
        return _tracking(await bus.handle(UpdateDomainTracking(
            ctx.user_id, parse_domain_id(ctx.path["domain_id"]),
            click_tracking=body.get("click_tracking"),
            open_tracking=body.get("open_tracking"))))

    @api.route("DELETE", "/domains/{domain_id}", permission=Permission.full_access,
               summary="Delete domain", tag=TAG, response=DELETED, errors=(400, 401, 403, 404))
    async def delete_domain(ctx: RequestContext) -> Any:
        row = await bus.handle(DeleteDomain(ctx.user_id, parse_domain_id(ctx.path["domain_id"])))
        return {"id": format_domain_id(row.id), "deleted": True}
