"""Use case GET /logs: the delivery-log documents a user may see.

A user sees the events of their own messages (``user_id`` recorded on each document by fetchlog
at ingestion, from ``email_messages``) and the events of the domains they hold verified, from the
moment each was verified - never those of a domain name someone else held before
(``docs/delivery-logs.md``, "Who sees an event").  ``source`` ("API" when the message is a row of
``email_messages``, else "SMTP") is recorded at ingestion too, so a request is two indexed MongoDB
queries - one page, one count by (action, event, source) - and no USEND query, whatever the size
of the set.  Documents stored before those fields existed get them from the backfill
(:func:`etrans.workers.log_labels.backfill_labels`); until then a page's unlabelled rows are looked
up in the USEND DB (at most ``per_page`` ids) and they count as SMTP in the stats.

The handler takes :class:`LogDeps` (ports only) and answers a :class:`~etrans.app.records.LogList`
of :class:`~etrans.app.records.LogEntry` records; :mod:`etrans.api.logs` shapes the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from etrans.app.records import LogEntry, LogFilter, LogList
from etrans.domain import status as status_rules
from etrans.domain.delivery_log import bare_message_id
from etrans.domain.engagement import LOG_EVENT_NAMES
from etrans.domain.timestamps import parse_timestamp_field
from etrans.errors import InvalidInput

if TYPE_CHECKING:
    from etrans.app.bus import MessageBus
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


@dataclass(frozen=True)
class LogDeps:
    """Built by :mod:`etrans.bootstrap`: the delivery log, the emails sent through the API (to
    label documents stored before ``source`` was) and the user's verified domains."""

    logs: LogReader
    emails: EmailStore
    domains: SendingDomains


async def list_logs(deps: LogDeps, cmd: ListLogs) -> LogList:
    query = await _log_filter(deps, cmd)
    groups: list[LogGroup] = []
    docs: list[dict[str, Any]] = []

    async def count() -> None:
        groups.extend(await deps.logs.counts(query))

    skip = (cmd.page - 1) * cmd.per_page

    async def fetch() -> None:
        docs.extend(await deps.logs.page(query, skip=skip, limit=cmd.per_page))

    if skip == 0:  # the first page: both queries at once
        async with trio.open_nursery() as nursery:
            nursery.start_soon(count)
            nursery.start_soon(fetch)
    else:
        # The counts first: a page past the last document is empty without a find that would
        # make MongoDB walk every document it skips (page 1000000 is a skip of 99,999,900).
        await count()
        if skip < sum(group.count for group in groups):
            await fetch()

    status_counts: dict[str, int] = {}
    source_counts = {"API": 0, "SMTP": 0}
    for group in groups:
        label = status_rules.log_label(group.action, group.event)
        status_counts[label] = status_counts.get(label, 0) + group.count
        source_counts["API" if group.source == "API" else "SMTP"] += group.count

    api_ids = await _api_message_ids(deps, docs)
    stats = status_rules.percentages(status_counts)
    stats += status_rules.percentages({k: v for k, v in source_counts.items() if v},
                                      order=("API", "SMTP"))
    return LogList(logs=[_entry(doc, api_ids) for doc in docs],
                   total=sum(source_counts.values()), page=cmd.page, per_page=cmd.per_page,
                   stats=stats)


async def _log_filter(deps: LogDeps, cmd: ListLogs) -> LogFilter:
    """The documents ``cmd`` asks for among those the user may see (400 on a bad filter)."""
    before = parse_timestamp_field(cmd.log_before, "log_before") if cmd.log_before else None
    after = parse_timestamp_field(cmd.log_after, "log_after") if cmd.log_after else None
    if before and after and after > before:
        raise InvalidInput("log_after must not be after log_before")
    sources = parse_sources(cmd.source)
    actions = None
    if cmd.action and cmd.action.strip():
        actions = tuple(a.strip() for a in cmd.action.split(",") if a.strip())
    verified = await deps.domains.verified_since(cmd.user_id)
    return LogFilter(
        owner=cmd.user_id, domains=tuple(sorted(verified.items())), before=before,
        after=after, actions=actions, sender=_opt(cmd.sender),
        recipient=_opt(cmd.recipient), message_id=_opt(cmd.message_id),
        source=next(iter(sources)) if len(sources) == 1 else None,
        sorts=parse_sorts(cmd.sorts),
    )


async def _api_message_ids(deps: LogDeps, docs: list[dict[str, Any]]) -> set[str]:
    """Of the page's documents stored before fetchlog recorded ``source`` (not yet backfilled;
    at most a page), the bare message ids that are rows of ``email_messages``."""
    unlabelled = [d.get("message_id") or "" for d in docs if d.get("source") is None]
    if not unlabelled:
        return set()
    return await deps.emails.existing_message_ids(
        sorted({bare_message_id(m) for m in unlabelled if m}))


def _opt(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


def _entry(doc: dict[str, Any], api_ids: set[str]) -> LogEntry:
    timestamp = doc.get("timestamp")
    if isinstance(timestamp, datetime) and timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    source = doc.get("source")
    if source is None:
        api = bare_message_id(doc.get("message_id") or "") in api_ids
        source = "API" if api else "SMTP"
    response = doc.get("response") or ""
    # An Open / Click has no SMTP response: its action is "opened" / "clicked", its
    # action_detail the URL of a click.
    short = "" if doc.get("event") in LOG_EVENT_NAMES else status_rules.smtp_short_code(response)
    return LogEntry(
        event=doc.get("event"), timestamp=timestamp,
        status=status_rules.log_label(doc.get("action"), doc.get("event")),
        action=short or (doc.get("action") or ""),
        action_detail=response, sender=doc.get("sender"), recipient=doc.get("recipient"),
        from_domain=doc.get("from_domain"), to_domain=doc.get("to_domain"),
        message_id=doc.get("message_id"), source=source,
    )


def register(bus: MessageBus, deps: LogDeps) -> None:
    bus.register(ListLogs, partial(list_logs, deps))
