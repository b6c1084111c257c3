"""Route GET /logs (use case :mod:`etrans.app.logs`): the query to a command for the bus, the
:class:`~etrans.app.records.LogList` it answers to the JSON of ``docs/api.md``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from etrans.api.schema import (
    TIMESTAMP,
    AnyJson,
    Array,
    Integer,
    Object,
    Prop,
    QueryParam,
    String,
)
from etrans.app.logs import ListLogs
from etrans.domain.api_keys import Permission
from etrans.domain.timestamps import iso

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.records import LogEntry, LogList

_TEXT = String(max_length=320)
LOGS_QUERY = {
    "page": QueryParam(Integer(minimum=1, maximum=1_000_000), default=1,
                       description="Page number (1..1000000)"),
    "per_page": QueryParam(Integer(minimum=1, maximum=100), default=20,
                           description="Items per page (1-100)"),
    "log_before": QueryParam(TIMESTAMP, description="ISO-8601: logs before"),
    "log_after": QueryParam(TIMESTAMP, description="ISO-8601: logs after"),
    "action": QueryParam(String(max_length=200),
                         description="Raw actions (comma-separated): delivered, deferred..."),
    "sender": QueryParam(_TEXT, description="Sender email"),
    "recipient": QueryParam(_TEXT, description="Recipient email"),
    "message_id": QueryParam(_TEXT, description="Message id"),
    "source": QueryParam(String(max_length=20), description="api, smtp or api,smtp"),
    "sorts": QueryParam(String(max_length=200), default="-timestamp",
                        description="Comma-separated fields, - prefix = descending"),
}
_S = String()
LOG_ENTRY = Object(name="LogEntry", properties={
    key: Prop(AnyJson()) for key in (
        "event", "timestamp", "status", "action", "action_detail", "sender", "recipient",
        "from_domain", "to_domain", "message_id", "source")})
LOGS_RESPONSE = Object(name="LogList", properties={
    "logs": Prop(Array(LOG_ENTRY), required=True), "total": Prop(Integer(), required=True),
    "page": Prop(Integer(), required=True), "per_page": Prop(Integer(), required=True),
    "stats": Prop(Array(Object(properties={"label": Prop(_S, required=True),
                                           "count": Prop(Integer(), required=True),
                                           "percentage": Prop(AnyJson(), required=True)})),
                  required=True)})


def entry_view(e: LogEntry) -> dict[str, Any]:
    timestamp = e.timestamp
    return {
        "event": e.event,
        "timestamp": (iso(timestamp, whole_seconds=True) if isinstance(timestamp, datetime)
                      else timestamp),
        "status": e.status, "action": e.action, "action_detail": e.action_detail,
        "sender": e.sender, "recipient": e.recipient, "from_domain": e.from_domain,
        "to_domain": e.to_domain, "message_id": e.message_id, "source": e.source,
    }


def list_view(listed: LogList) -> dict[str, Any]:
    return {"logs": [entry_view(e) for e in listed.logs], "total": listed.total,
            "page": listed.page, "per_page": listed.per_page, "stats": listed.stats}


def register(api: Api) -> None:
    bus = api.services.bus

    @api.route("GET", "/logs", permission=Permission.read_only, summary="Get transaction logs",
               tag="Logs", query=LOGS_QUERY, response=LOGS_RESPONSE)
    async def list_logs(ctx: RequestContext) -> Any:
        q = ctx.query
        return list_view(await bus.handle(ListLogs(
            user_id=ctx.user_id, page=q["page"], per_page=q["per_page"],
            log_before=q["log_before"], log_after=q["log_after"], action=q["action"],
            sender=q["sender"], recipient=q["recipient"], message_id=q["message_id"],
            source=q["source"], sorts=q["sorts"])))
