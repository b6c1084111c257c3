"""Route POST /senders (use case: :mod:`etrans.app.senders`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.api.routes_domains import TEXT
from etrans.api.schema import Object, Prop, String
from etrans.app import senders as uc
from etrans.domain.api_keys import Permission

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.domains import AccountServices

CREATE = Object({
    "account": Prop(String(min_length=3, max_length=320, pattern=r"^[^\s@]+@[^\s@]+$",
                           checks=TEXT),
                    required=True),
    "domain": Prop(String(min_length=1, max_length=253, checks=TEXT), required=True),
    "password": Prop(String(min_length=uc.MIN_PASSWORD_LENGTH, max_length=256, checks=TEXT),
                     required=True),
}, name="CreateSenderRequest")


def register(api: Api) -> None:
    s: AccountServices | None = api.services.get("accounts")
    if s is None:  # an app built without the account services (e.g. a test of other routes)
        return

    @api.route("POST", "/senders", permission=Permission.full_access, summary="Create SMTP sender",
               tag="Senders", body=CREATE, errors=(400, 401, 403))
    async def create_sender(ctx: RequestContext) -> Any:
        b = ctx.body
        return await uc.create_sender(s, ctx.user_id, account=b["account"], domain=b["domain"],
                                      password=b["password"])
