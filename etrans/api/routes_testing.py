"""POST /testing/set-pack: registered only when ETRANS_ENABLE_TESTING_ROUTES=true.

When disabled the route does not exist, so it answers 404 like any unknown path and is absent
from ``/openapi.json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.api.responses import present
from etrans.api.routes_domains import TEXT
from etrans.api.schema import Integer, Object, Prop, String
from etrans.app.billing import SetPackForTesting
from etrans.domain.api_keys import Permission

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext

CODE = String(min_length=1, max_length=64, checks=TEXT)
SET_PACK = Object({"pack_code": Prop(CODE, required=True)},
                  name="SetPackRequest")
PACK_SET = Object(name="PackSet", properties={
    "pack_code": present(String()), "pack_name": present(String()),
    "domain_limit": present(Integer()), "daily_email_limit": present(Integer()),
    "domains_updated": present(Integer())})


def register(api: Api) -> None:
    if not api.services.testing_routes:
        return
    bus = api.services.bus

    @api.route("POST", "/testing/set-pack", permission=Permission.full_access,
               summary="Set pack for testing", tag="Testing", body=SET_PACK, response=PACK_SET,
               errors=(400, 401, 403))
    async def set_pack(ctx: RequestContext) -> Any:
        done = await bus.handle(SetPackForTesting(ctx.user_id, ctx.body["pack_code"]))
        pack = done.pack
        return {"pack_code": pack.pack_code, "pack_name": pack.pack_name,
                "domain_limit": pack.domain_limit, "daily_email_limit": pack.daily_email_limit,
                "domains_updated": done.domains_updated}
