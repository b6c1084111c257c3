"""Routes of /suppressions, each user's suppression list (use cases: :mod:`etrans.app.
suppressions`): read with ``read_only``, changed with ``full_access``, as the other account
resources."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response

from etrans.api.routes_domains import PAGE, TEXT
from etrans.api.schema import TIMESTAMP, Array, Integer, Object, Prop, QueryParam, String
from etrans.app.suppressions import (
    ADDABLE_REASONS,
    AddSuppression,
    ListSuppressions,
    RemoveSuppression,
)
from etrans.domain.api_keys import Permission
from etrans.domain.suppressions import MAX_ADDRESS_LENGTH, SuppressionReason
from etrans.domain.timestamps import iso

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.records import Suppression

TAG = "Suppressions"
REASONS = tuple(r.value for r in SuppressionReason)
ADD = Object({
    "email": Prop(String(min_length=1, max_length=MAX_ADDRESS_LENGTH, checks=TEXT),
                  required=True),
    "reason": Prop(String(enum=tuple(r.value for r in ADDABLE_REASONS),
                          description="default manual"), nullable=True),
}, name="AddSuppressionRequest")
_TEXT_OR_NULL = Prop(String(), nullable=True)
ENTRY = Object(name="Suppression", properties={
    "email": Prop(String(), required=True),
    "reason": Prop(String(enum=REASONS), required=True),
    "message_id": _TEXT_OR_NULL,
    "response": _TEXT_OR_NULL,
    "created_at": Prop(String(), required=True),
})
LIST_RESPONSE = Object(name="SuppressionList", properties={
    "data": Prop(Array(ENTRY), required=True), "total": Prop(Integer(), required=True),
    "page": Prop(Integer(), required=True), "per_page": Prop(Integer(), required=True)})
LIST_QUERY = {
    **PAGE,
    "reason": QueryParam(String(enum=REASONS), description=", ".join(REASONS)),
    "address": QueryParam(String(max_length=MAX_ADDRESS_LENGTH, checks=TEXT),
                          description="a part of the address (case-insensitive)"),
    "created_at_from": QueryParam(TIMESTAMP, description="ISO-8601 UTC lower bound"),
    "created_at_to": QueryParam(TIMESTAMP, description="ISO-8601 UTC upper bound"),
}


def entry_view(row: Suppression) -> dict[str, Any]:
    return {"email": row.address, "reason": row.reason, "message_id": row.message_id,
            "response": row.response, "created_at": iso(row.created_at)}


def register(api: Api) -> None:
    bus = api.services.bus

    @api.route("GET", "/suppressions", permission=Permission.read_only,
               summary="List suppressed addresses", tag=TAG, query=LIST_QUERY,
               response=LIST_RESPONSE, errors=(400, 401))
    async def list_suppressions(ctx: RequestContext) -> Any:
        q = ctx.query
        page = await bus.handle(ListSuppressions(
            ctx.user_id, page=q["page"], per_page=q["per_page"], reason=q["reason"] or None,
            address=q["address"] or None, created_at_from=q["created_at_from"] or None,
            created_at_to=q["created_at_to"] or None))
        return {"data": [entry_view(r) for r in page.rows], "total": page.total,
                "page": q["page"], "per_page": q["per_page"]}

    @api.route("POST", "/suppressions", permission=Permission.full_access,
               summary="Suppress an address", tag=TAG, body=ADD, response=ENTRY,
               errors=(400, 401, 403), success=(201, 200),
               description="201 with the new entry; 200 with the existing one when the address "
                           "is listed already.")
    async def add_suppression(ctx: RequestContext) -> Any:
        body = ctx.body
        added = await bus.handle(AddSuppression(
            ctx.user_id, body["email"], body.get("reason") or SuppressionReason.MANUAL))
        return entry_view(added.entry), 201 if added.created else 200

    @api.route("DELETE", "/suppressions/{address:path}", permission=Permission.full_access,
               summary="Remove a suppressed address", tag=TAG, errors=(400, 401, 403, 404),
               success=(204,),
               description="The address URL-encoded in the path; compared case-insensitively. "
                           "204 when removed.")
    async def remove_suppression(ctx: RequestContext) -> Any:
        await bus.handle(RemoveSuppression(ctx.user_id, ctx.path["address"]))
        return Response(b"", status=204)
