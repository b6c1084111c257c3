"""Routes of a scheduled email's schedule (use cases: :mod:`etrans.app.schedules`):
``DELETE /emails/{message_id}/schedule`` cancels it, ``PATCH`` with a new ``scheduled_at``
moves it, both only while it is still Scheduled (else 409) and with ``full_access``, as the
other changes to a user's resources; another user's id is a 404.  ``docs/api.md``,
"Scheduled sending"."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.api.emails import SCHEDULED_AT
from etrans.api.schema import Object, Prop, String
from etrans.app.schedules import CancelSchedule, MoveSchedule
from etrans.domain.api_keys import Permission
from etrans.domain.status import display_label
from etrans.domain.timestamps import iso

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.records import ScheduleChange

TAG = "Emails"
MOVE = Object({"scheduled_at": Prop(SCHEDULED_AT, required=True)},
              name="MoveScheduleRequest")
SCHEDULE = Object(name="EmailSchedule", properties={
    "id": Prop(String(), required=True),
    "status": Prop(String(enum=("Scheduled", "Cancelled")), required=True),
    "scheduled_at": Prop(String(format="date-time"), required=True)})


def schedule_view(change: ScheduleChange) -> dict[str, Any]:
    return {"id": change.message_id, "status": display_label(change.status),
            "scheduled_at": iso(change.scheduled_at, whole_seconds=True)}


def register(api: Api) -> None:
    bus = api.services.bus

    @api.route("DELETE", "/emails/{message_id}/schedule", permission=Permission.full_access,
               summary="Cancel scheduled email", tag=TAG, response=SCHEDULE,
               errors=(401, 403, 404, 409),
               description="The email is never sent; its status becomes Cancelled.  Only a "
                           "Scheduled email (409 otherwise).  Its quota is not given back.")
    async def cancel_schedule(ctx: RequestContext) -> Any:
        return schedule_view(await bus.handle(CancelSchedule(ctx.user_id,
                                                             ctx.path["message_id"])))

    @api.route("PATCH", "/emails/{message_id}/schedule", permission=Permission.full_access,
               summary="Reschedule email", tag=TAG, body=MOVE, response=SCHEDULE,
               errors=(400, 401, 403, 404, 409),
               description="A new scheduled_at (the rules of POST /emails).  Only a Scheduled "
                           "email (409 otherwise).")
    async def reschedule_email(ctx: RequestContext) -> Any:
        return schedule_view(await bus.handle(MoveSchedule(
            ctx.user_id, ctx.path["message_id"], ctx.body["scheduled_at"])))
