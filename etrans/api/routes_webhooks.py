"""Routes of /webhooks (use cases: :mod:`etrans.app.webhooks`): endpoints that receive the
account's email events, signed (``docs/api.md``, "Webhooks").  The signing secret is in the
answer of the creation only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response

from etrans.api.responses import DATE_TIME, page_of, present, present_or_null
from etrans.api.routes_domains import PAGE, TEXT
from etrans.api.schema import NO_LINE_BREAKS, Array, Boolean, Integer, Object, Prop, String
from etrans.app.webhooks import (
    CreateWebhook,
    DeleteWebhook,
    GetWebhook,
    ListWebhookDeliveries,
    ListWebhooks,
    UpdateWebhook,
)
from etrans.domain.api_keys import Permission
from etrans.domain.timestamps import iso
from etrans.domain.webhook_urls import MAX_URL_LENGTH
from etrans.domain.webhooks import EVENT_TYPES, format_webhook_id, parse_webhook_id

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.webhook_records import DeliveryAttempt, NewWebhook, Webhook

TAG = "Webhooks"
URL = String(min_length=1, max_length=MAX_URL_LENGTH, checks=TEXT,
             description="https URL of a public host", example="https://example.com/hooks")
EVENTS = Array(String(enum=EVENT_TYPES), min_items=1, max_items=2 * len(EVENT_TYPES),
               description="event types to receive; omitted: every type")
DESCRIPTION = String(max_length=255, pattern=NO_LINE_BREAKS, checks=TEXT)
CREATE = Object({
    "url": Prop(URL, required=True),
    "events": Prop(EVENTS, nullable=True),
    "description": Prop(DESCRIPTION, nullable=True),
}, name="CreateWebhookRequest")
UPDATE = Object({
    "url": Prop(URL, nullable=True),
    "events": Prop(EVENTS, nullable=True),
    "enabled": Prop(Boolean(), nullable=True),
    "description": Prop(DESCRIPTION, nullable=True),
}, name="UpdateWebhookRequest")

# -- answers (docs/api.md, "Webhooks") --
_WEBHOOK_FIELDS = {
    "id": present(String(description="wh_<n>")), "url": present(String()),
    "description": present_or_null(String()),
    "events": present_or_null(Array(String(enum=EVENT_TYPES),
                                     description="null: every event type")),
    "enabled": present(Boolean()),
    "disabled_reason": present_or_null(String()),
    "failing_since": present_or_null(DATE_TIME),
    "created_at": present(DATE_TIME), "updated_at": present(DATE_TIME),
}
WEBHOOK = Object(name="Webhook", properties=_WEBHOOK_FIELDS)
WEBHOOK_CREATED = Object(name="WebhookCreated", properties={
    **_WEBHOOK_FIELDS,
    "secret": present(String(description="the signing secret (whsec_...): shown once"))})
WEBHOOK_LIST = page_of("WebhookList", WEBHOOK)
DELIVERY = Object(name="WebhookDelivery", properties={
    "event_id": present(String()), "event_type": present(String()),
    "attempt": present(Integer()), "status_code": present_or_null(Integer()),
    "error": present_or_null(String()), "latency_ms": present_or_null(Integer()),
    "attempted_at": present(DATE_TIME)})
DELIVERY_LIST = page_of("WebhookDeliveryList", DELIVERY)


def webhook_view(row: Webhook) -> dict[str, Any]:
    return {"id": format_webhook_id(row.id), "url": row.url, "description": row.description,
            "events": list(row.event_types) or None, "enabled": row.enabled,
            "disabled_reason": row.disabled_reason, "failing_since": iso(row.failing_since),
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}


def _created(new: NewWebhook) -> dict[str, Any]:
    return {**webhook_view(new.record), "secret": new.secret}


def _attempt(row: DeliveryAttempt) -> dict[str, Any]:
    return {"event_id": row.event_id, "event_type": row.event_type, "attempt": row.attempt,
            "status_code": row.status_code, "error": row.error, "latency_ms": row.latency_ms,
            "attempted_at": iso(row.attempted_at)}


def _events(body: dict[str, Any]) -> tuple[str, ...] | None:
    events = body.get("events")
    return tuple(events) if events is not None else None


def register(api: Api) -> None:
    bus = api.services.bus

    @api.route("POST", "/webhooks", permission=Permission.full_access, summary="Create webhook",
               tag=TAG, body=CREATE, response=WEBHOOK_CREATED, errors=(400, 401, 403),
               success=(201,))
    async def create_webhook(ctx: RequestContext) -> Any:
        b = ctx.body
        return _created(await bus.handle(CreateWebhook(
            ctx.user_id, url=b["url"], events=_events(b), description=b.get("description")))), 201

    @api.route("GET", "/webhooks", permission=Permission.read_only, summary="List webhooks",
               tag=TAG, query=PAGE, response=WEBHOOK_LIST, errors=(400, 401))
    async def list_webhooks(ctx: RequestContext) -> Any:
        page = await bus.handle(ListWebhooks(ctx.user_id, page=ctx.query["page"],
                                             per_page=ctx.query["per_page"]))
        return {"data": [webhook_view(r) for r in page.rows], "total": page.total,
                "page": page.page, "per_page": page.per_page}

    @api.route("GET", "/webhooks/{webhook_id}", permission=Permission.read_only,
               summary="Get webhook", tag=TAG, response=WEBHOOK, errors=(400, 401, 404))
    async def get_webhook(ctx: RequestContext) -> Any:
        webhook_id = parse_webhook_id(ctx.path["webhook_id"])
        return webhook_view(await bus.handle(GetWebhook(ctx.user_id, webhook_id)))

    @api.route("PATCH", "/webhooks/{webhook_id}", permission=Permission.full_access,
               summary="Update webhook", tag=TAG, body=UPDATE, response=WEBHOOK,
               errors=(400, 401, 403, 404))
    async def update_webhook(ctx: RequestContext) -> Any:
        webhook_id = parse_webhook_id(ctx.path["webhook_id"])
        b = ctx.body or {}
        return webhook_view(await bus.handle(UpdateWebhook(
            ctx.user_id, webhook_id, url=b.get("url"), events=_events(b),
            enabled=b.get("enabled"), description=b.get("description"))))

    @api.route("DELETE", "/webhooks/{webhook_id}", permission=Permission.full_access,
               summary="Delete webhook", tag=TAG, errors=(400, 401, 403, 404), success=(204,))
    async def delete_webhook(ctx: RequestContext) -> Any:
        await bus.handle(DeleteWebhook(ctx.user_id, parse_webhook_id(ctx.path["webhook_id"])))
        return Response(b"", status=204)

    @api.route("GET", "/webhooks/{webhook_id}/deliveries", permission=Permission.read_only,
               summary="List webhook deliveries", tag=TAG, query=PAGE, response=DELIVERY_LIST,
               errors=(400, 401, 404))
    async def list_webhook_deliveries(ctx: RequestContext) -> Any:
        webhook_id = parse_webhook_id(ctx.path["webhook_id"])
        page = await bus.handle(ListWebhookDeliveries(
            ctx.user_id, webhook_id, page=ctx.query["page"], per_page=ctx.query["per_page"]))
        return {"data": [_attempt(r) for r in page.rows], "total": page.total,
                "page": page.page, "per_page": page.per_page}
