"""POST /testing/set-pack: registered only when ETRANS_ENABLE_TESTING_ROUTES=true.

When disabled the route does not exist, so it answers 404 like any unknown path and is absent
from ``/openapi.json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.api.routes_domains import TEXT
from etrans.api.schema import Object, Prop, String
from etrans.app import billing as uc
from etrans.domain.api_keys import Permission

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.domains import AccountServices

CODE = String(min_length=1, max_length=64, checks=TEXT)
SET_PACK = Object({"pack_code": Prop(CODE, required=True)},
                  name="SetPackRequest")


def register(api: Api) -> None:
    s: AccountServices | None = api.services.get("accounts")
    if s is None or not s.enable_testing_routes:
        return

    @api.route("POST", "/testing/set-pack", permission=Permission.full_access,
               summary="Set pack for testing", tag="Testing", body=SET_PACK,
               errors=(400, 401, 403))
    async def set_pack(ctx: RequestContext) -> Any:
        return await uc.set_pack_for_testing(s, ctx.user_id, ctx.body["pack_code"])
