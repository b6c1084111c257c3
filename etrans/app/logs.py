"""Use case GET /logs: delivery-log documents of the user's own domains.

``source`` of a document is "API" when its message_id is an email sent through the API (a row of
``email_messages``), else "SMTP".  It is computed with ONE USEND query per request: the distinct
message ids of the filtered set (one MongoDB aggregation, which also gives the status counts) are
looked up together; the page, the ``source`` filter and the stats all use that answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

from etrans.app.emails import iso, parse_iso
from etrans.app.records import LogFilter
from etrans.domain import status as status_rules
from etrans.errors import InvalidInput

if TYPE_CHECKING:
    from etrans.app.ports import EmailStore, LogReader, SendingDomains

SORTABLE = ("timestamp", "event", "action", "sender", "recipient", "message_id", "from_domain",
            "to_domain")
SOURCES = {"api": "API", "smtp": "SMTP"}


@dataclass(frozen=True)
class ListLogs:
    user_id: int
    page: int = 1
    per_page: int = 20
    log_before: str | None = None
    log_after: str | None = None
    action: str | None = None
    sender: str | None = None
    recipient: str | None = None
    message_id: str | None = None
    source: str | None = None
    sorts: str | None = None


def parse_sorts(text: str | None) -> tuple[tuple[str, int], ...]:
    if text is None or not text.strip():
        return (("timestamp", -1),)
    sorts: list[tuple[str, int]] = []
    for part in text.split(","):
        name = part.strip()
        direction = -1 if name.startswith("-") else 1
        name = name.lstrip("+-").strip()
        if name not in SORTABLE:
            raise InvalidInput(f"invalid sort field {name!r}: use {', '.join(SORTABLE)} "
                               "(prefix - for descending)")
        if name not in (s for s, _ in sorts):
            sorts.append((name, direction))
    return tuple(sorts)


def parse_sources(text: str | None) -> set[str]:
    if text is None or not text.strip():
        return set(SOURCES.values())
    chosen = set()
    for part in text.split(","):
        name = part.strip().lower()
        if name not in SOURCES:
            raise InvalidInput(f"invalid source {part.strip()!r}: use api, smtp or both "
                               "comma-separated")
        chosen.add(SOURCES[name])
    return chosen


class LogService:
    def __init__(self, logs: LogReader, emails: EmailStore, domains: SendingDomains) -> None:
        self._logs = logs
        self._emails = emails
        self._domains = domains

    async def list_logs(self, cmd: ListLogs) -> dict[str, Any]:
        before = parse_iso(cmd.log_before, "log_before") if cmd.log_before else None
        after = parse_iso(cmd.log_after, "log_after") if cmd.log_after else None
        if before and after and after > before:
            raise InvalidInput("log_after must not be after log_before")
        sources = parse_sources(cmd.source)
        actions = None
        if cmd.action and cmd.action.strip():
            actions = tuple(a.strip() for a in cmd.action.split(",") if a.strip())
        query = LogFilter(
            domains=tuple(await self._domains.names(cmd.user_id)), before=before, after=after,
            actions=actions, sender=_opt(cmd.sender), recipient=_opt(cmd.recipient),
            message_id=_opt(cmd.message_id), sorts=parse_sorts(cmd.sorts),
        )
        groups = await self._logs.groups(query)
        api_ids = await self._emails.existing_message_ids(
            [g.message_id for g in groups if g.message_id])

        status_counts: dict[str, int] = {}
        source_counts = {"API": 0, "SMTP": 0}
        for group in groups:
            source = "API" if group.message_id in api_ids else "SMTP"
            if source not in sources:
                continue
            label = status_rules.log_label(group.action, group.event)
            status_counts[label] = status_counts.get(label, 0) + group.count
            source_counts[source] += group.count
        total = sum(source_counts.values())

        include = exclude = None
        if sources == {"API"}:
            include = sorted(api_ids)
        elif sources == {"SMTP"}:
            exclude = sorted(api_ids)
        docs = await self._logs.page(query, include_ids=include, exclude_ids=exclude,
                                     skip=(cmd.page - 1) * cmd.per_page, limit=cmd.per_page)
        stats = status_rules.percentages(status_counts)
        stats += status_rules.percentages({k: v for k, v in source_counts.items() if v},
                                          order=("API", "SMTP"))
        return {
            "logs": [_log(doc, api_ids) for doc in docs],
            "total": total,
            "page": cmd.page,
            "per_page": cmd.per_page,
            "stats": stats,
        }


def _opt(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


def _log(doc: dict[str, Any], api_ids: set[str]) -> dict[str, Any]:
    timestamp = doc.get("timestamp")
    if timestamp is not None and getattr(timestamp, "tzinfo", None) is None \
            and hasattr(timestamp, "replace"):
        timestamp = timestamp.replace(tzinfo=UTC)
    response = doc.get("response") or ""
    return {
        "event": doc.get("event"),
        "timestamp": iso(timestamp) if hasattr(timestamp, "astimezone") else timestamp,
        "status": status_rules.log_label(doc.get("action"), doc.get("event")),
        "action": status_rules.smtp_short_code(response) or (doc.get("action") or ""),
        "action_detail": response,
        "sender": doc.get("sender"),
        "recipient": doc.get("recipient"),
        "from_domain": doc.get("from_domain"),
        "to_domain": doc.get("to_domain"),
        "message_id": doc.get("message_id"),
        "source": "API" if doc.get("message_id") in api_ids else "SMTP",
    }


def register(bus: Any, service: LogService) -> None:
    bus.register(ListLogs, service.list_logs)
