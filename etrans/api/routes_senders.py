"""Route POST /senders (use case: :mod:`etrans.app.senders`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.api.responses import DATE_TIME, present, present_or_null
from etrans.api.routes_domains import TEXT
from etrans.api.schema import Boolean, Integer, Object, Prop, String
from etrans.app.senders import MIN_PASSWORD_LENGTH, CreateSender
from etrans.domain.api_keys import Permission
from etrans.domain.domains import format_sender_id
from etrans.domain.timestamps import iso

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext

CREATE = Object({
    "account": Prop(String(min_length=3, max_length=320, pattern=r"^[^\s@]+@[^\s@]+$",
                           checks=TEXT),
                    required=True),
    "domain": Prop(String(min_length=1, max_length=253, checks=TEXT), required=True),
    "password": Prop(String(min_length=MIN_PASSWORD_LENGTH, max_length=256, checks=TEXT),
                     required=True),
}, name="CreateSenderRequest")
SENDER = Object(name="Sender", properties={
    "id": present(String(description="sender_<n>")), "account": present(String()),
    "domain": present(String()), "active": present(Boolean()),
    "daily_limit": present(Integer()), "hourly_limit": present(Integer()),
    "created_at": present_or_null(DATE_TIME)})


def register(api: Api) -> None:
    bus = api.services.bus

    @api.route("POST", "/senders", permission=Permission.full_access, summary="Create SMTP sender",
               tag="Senders", body=CREATE, response=SENDER, errors=(400, 401, 403))
    async def create_sender(ctx: RequestContext) -> Any:
        b = ctx.body
        row = await bus.handle(CreateSender(ctx.user_id, account=b["account"],
                                            domain=b["domain"], password=b["password"]))
        return {"id": format_sender_id(row.id), "account": row.account, "domain": row.domain,
                "active": row.active, "daily_limit": row.daily_limit,
                "hourly_limit": row.hourly_limit, "created_at": iso(row.created_at)}
