"""Use case GET /logs: the delivery-log documents a user may see.

A user sees the events of their own messages (``user_id`` recorded on each document by fetchlog
at ingestion, from ``email_messages``) and the events of the domains they hold verified, from the
moment each was verified - never those of a domain name someone else held before
(``docs/delivery-logs.md``, "Who sees an event").  ``source`` ("API" when the message is a row of
``email_messages``, else "SMTP") is recorded at ingestion too, so a request is two indexed MongoDB
queries - one page, one count by (action, event, source) - and no USEND query, whatever the size
of the set.  Documents stored before those fields existed get them from the backfill
(:func:`etrans.workers.fetchlog.backfill_labels`); until then a page's unlabelled rows are looked
up in the USEND DB (at most ``per_page`` ids) and they count as SMTP in the stats.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

import trio

from etrans.app.emails import parse_iso
from etrans.app.records import LogFilter
from etrans.domain import status as status_rules
from etrans.domain.delivery_log import bare_message_id
from etrans.domain.timestamps import iso
from etrans.errors import InvalidInput

if TYPE_CHECKING:
    from etrans.app.ports import EmailStore, LogReader, SendingDomains
    from etrans.app.records import LogGroup

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
        verified = await self._domains.verified_since(cmd.user_id)
        query = LogFilter(
            owner=cmd.user_id, domains=tuple(sorted(verified.items())), before=before,
            after=after, actions=actions, sender=_opt(cmd.sender),
            recipient=_opt(cmd.recipient), message_id=_opt(cmd.message_id),
            source=next(iter(sources)) if len(sources) == 1 else None,
            sorts=parse_sorts(cmd.sorts),
        )
        groups: list[LogGroup] = []
        docs: list[dict[str, Any]] = []

        async def count() -> None:
            groups.extend(await self._logs.counts(query))

        async def fetch() -> None:
            docs.extend(await self._logs.page(query, skip=(cmd.page - 1) * cmd.per_page,
                                              limit=cmd.per_page))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(count)
            nursery.start_soon(fetch)

        status_counts: dict[str, int] = {}
        source_counts = {"API": 0, "SMTP": 0}
        for group in groups:
            label = status_rules.log_label(group.action, group.event)
            status_counts[label] = status_counts.get(label, 0) + group.count
            source_counts["API" if group.source == "API" else "SMTP"] += group.count
        total = sum(source_counts.values())

        # Rows stored before fetchlog recorded ``source`` (not yet backfilled): at most a page.
        unlabelled = [d.get("message_id") or "" for d in docs if d.get("source") is None]
        api_ids = await self._emails.existing_message_ids(
            sorted({bare_message_id(m) for m in unlabelled if m})) if unlabelled else set()
        for doc in docs:
            if doc.get("source") is None:
                api = bare_message_id(doc.get("message_id") or "") in api_ids
                doc["source"] = "API" if api else "SMTP"

        stats = status_rules.percentages(status_counts)
        stats += status_rules.percentages({k: v for k, v in source_counts.items() if v},
                                          order=("API", "SMTP"))
        return {
            "logs": [_log(doc) for doc in docs],
            "total": total,
            "page": cmd.page,
            "per_page": cmd.per_page,
            "stats": stats,
        }


def _opt(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


def _log(doc: dict[str, Any]) -> dict[str, Any]:
    timestamp = doc.get("timestamp")
    if timestamp is not None and getattr(timestamp, "tzinfo", None) is None \
            and hasattr(timestamp, "replace"):
        timestamp = timestamp.replace(tzinfo=UTC)
    response = doc.get("response") or ""
    return {
        "event": doc.get("event"),
        "timestamp": (iso(timestamp, whole_seconds=True) if hasattr(timestamp, "astimezone")
                      else timestamp),
        "status": status_rules.log_label(doc.get("action"), doc.get("event")),
        "action": status_rules.smtp_short_code(response) or (doc.get("action") or ""),
        "action_detail": response,
        "sender": doc.get("sender"),
        "recipient": doc.get("recipient"),
        "from_domain": doc.get("from_domain"),
        "to_domain": doc.get("to_domain"),
        "message_id": doc.get("message_id"),
        "source": doc["source"],
    }


def register(bus: Any, service: LogService) -> None:
    bus.register(ListLogs, service.list_logs)
