"""In-memory fakes of the ports the sending use cases depend on (:mod:`etrans.app.ports`).

Each implements the same Protocol as the real adapter and the ``etrans dev`` stand-in, and the
cheap ones pass the same contract suites (``tests/contract``: quota, idempotency, API-key cache,
credential cache, email store, log reader), so a rule tested here against a fake holds against
Redis, PostgreSQL and MongoDB too.  They keep no clock of their own: what expires in Redis
(claims, cache entries) never expires here, which no use-case rule depends on.

``build_email_bus`` wires :mod:`etrans.app.emails` and :mod:`etrans.app.logs` on a
:class:`~etrans.app.bus.MessageBus` with these fakes, as the bootstrap does with the real ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from etrans.app.ports import SendCheckNeeded
from etrans.app.records import MISSING, REVOKED, EmailPage, LogGroup, SuppressionPage
from etrans.domain.quota import QuotaUsage, windows
from etrans.domain.suppressions import normalise_address
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from etrans.app.bus import MessageBus
    from etrans.app.records import (
        ApiKeyRecord,
        EmailFilter,
        LogFilter,
        NewEmail,
        SendingDomain,
        Suppression,
        SuppressionFilter,
    )
    from etrans.domain.delivery_log import RecipientOutcome
    from etrans.domain.quota import QuotaLimits


class FakeSendingDomains:
    """SendingDomains: the domains given, by (user, name); ``verified_since`` as given."""

    def __init__(self, domains: Sequence[SendingDomain] = (),
                 since: dict[int, dict[str, datetime]] | None = None) -> None:
        self.domains = {(d.user_id, d.name): d for d in domains}
        self.since = since or {}
        self.forgotten: list[tuple[int, str]] = []

    async def find(self, user_id: int, name: str) -> SendingDomain | None:
        await trio.lowlevel.checkpoint()
        return self.domains.get((user_id, name.lower()))

    async def verified_since(self, user_id: int) -> dict[str, datetime]:
        await trio.lowlevel.checkpoint()
        return dict(self.since.get(user_id, {}))

    def forget(self, user_id: int, name: str) -> None:
        self.forgotten.append((user_id, name))


class FakeSenderCredentials:
    """SenderCredentials: user -> {domain: cache value}; the domain's first, else any."""

    def __init__(self, values: dict[int, dict[str, str]] | None = None) -> None:
        self.values = values or {}

    async def cache_value(self, user_id: int, domain: str) -> str | None:
        await trio.lowlevel.checkpoint()
        mine = self.values.get(user_id, {})
        if domain in mine:
            return mine[domain]
        return next(iter(mine.values()), None)


class FakeCredentialCache:
    """CredentialCache: the hash ``auth`` as a dict (user id -> value)."""

    def __init__(self) -> None:
        self.values: dict[int, str] = {}

    async def store(self, user_id: int, value: str) -> None:
        await trio.lowlevel.checkpoint()
        self.values[user_id] = value

    async def forget(self, user_id: int, values: Collection[str]) -> bool:
        await trio.lowlevel.checkpoint()
        if self.values.get(user_id) not in set(values):
            return False
        del self.values[user_id]
        return True


class FakeQuota:
    """QuotaCounter: counters per (domain, window) in a dict; check-and-count has no await in
    between, so it is atomic as Redis's script is."""

    def __init__(self) -> None:
        self.counters: dict[tuple[int, str, str], int] = {}
        self.released: list[tuple[int, int]] = []

    @staticmethod
    def _keys(domain_id: int, now: datetime) -> list[tuple[int, str, str]]:
        w = windows(now)
        return [(domain_id, "d", w.day), (domain_id, "h", w.hour), (domain_id, "m", w.month)]

    async def reserve(self, domain_id: int, limits: QuotaLimits, count: int,
                      now: datetime) -> str | None:
        await trio.lowlevel.checkpoint()
        keys = self._keys(domain_id, now)
        for name, key, limit in zip(("daily", "hourly", "monthly"), keys,
                                    (limits.daily, limits.hourly, limits.monthly), strict=True):
            if limit is not None and self.counters.get(key, 0) + count > limit:
                return name
        for key in keys:
            self.counters[key] = self.counters.get(key, 0) + count
        return None

    async def release(self, domain_id: int, count: int, now: datetime) -> None:
        await trio.lowlevel.checkpoint()
        self.released.append((domain_id, count))
        for key in self._keys(domain_id, now):
            if key in self.counters:
                self.counters[key] = max(0, self.counters[key] - count)

    async def usage(self, domain_id: int, now: datetime) -> QuotaUsage:
        await trio.lowlevel.checkpoint()
        daily, hourly, monthly = (self.counters.get(k, 0) for k in self._keys(domain_id, now))
        return QuotaUsage(daily=daily, hourly=hourly, monthly=monthly)


class FakeIdempotencyStore:
    """IdempotencyStore: scope -> (fingerprint, None while in flight | (status, body))."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[str, tuple[int, Any] | None]] = {}

    async def begin(self, scope: str, fingerprint: str) -> tuple[str, Any]:
        await trio.lowlevel.checkpoint()
        record = self.records.get(scope)
        if record is None:
            self.records[scope] = (fingerprint, None)
            return "started", None
        if record[0] != fingerprint:
            return "mismatch", None
        if record[1] is not None:
            return "replay", record[1]
        return "in_flight", None

    async def complete(self, scope: str, fingerprint: str, status: int, body: Any) -> None:
        await trio.lowlevel.checkpoint()
        # Stored as Redis stores it: JSON, so the replayed body is a copy.
        self.records[scope] = (fingerprint, (status, json.loads(json.dumps(body))))

    async def abandon(self, scope: str) -> None:
        await trio.lowlevel.checkpoint()
        self.records.pop(scope, None)


class FakeApiKeyCache:
    """ApiKeyCache: entries are written only when absent, a revocation always."""

    def __init__(self) -> None:
        self.entries: dict[str, ApiKeyRecord | str] = {}

    async def get(self, key_hash: str) -> ApiKeyRecord | str | None:
        await trio.lowlevel.checkpoint()
        return self.entries.get(key_hash)

    async def put(self, key_hash: str, record: ApiKeyRecord | None) -> None:
        await trio.lowlevel.checkpoint()
        self.entries.setdefault(key_hash, MISSING if record is None else record)

    async def revoke(self, key_hash: str) -> None:
        await trio.lowlevel.checkpoint()
        self.entries[key_hash] = REVOKED


_EMAIL_COLUMNS = ("message_id", "user_id", "domain_id", "from_address", "reply_to", "subject",
                  "html", "text", "headers", "tags", "attachments", "template_id",
                  "template_data", "created_at")


class FakeEmailStore:
    """EmailStore: rows in a list.  ``fail_next`` makes the next ``save`` raise it (nothing
    stored), ``block_saves`` makes saves wait until it is set (to cancel a request mid-commit)."""

    def __init__(self, suppressions: FakeSuppressions | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.outbox: list[tuple[str, bytes, bytes]] = []
        self.outcomes: dict[str, list[dict[str, Any]]] = {}  # message_id -> recipients
        self.fail_next: BaseException | None = None
        self.block_saves: trio.Event | None = None
        # The list a guarded email is checked against (NewEmail.guard); none: nothing listed.
        self.suppressions = suppressions
        self.templates: Any = None  # a FakeTemplateStore: the templates a version is checked in
        self.refused = 0  # calls refused by a guard

    async def save(self, emails: Sequence[NewEmail]) -> None:
        if self.block_saves is not None:
            await self.block_saves.wait()
        await trio.lowlevel.checkpoint()
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        known = {row["message_id"] for row in self.rows}
        if len({e.message_id for e in emails} | known) != len(known) + len(emails):
            raise ValueError("duplicate message_id")  # as the unique index: nothing stored
        listed = self.suppressions.entries if self.suppressions is not None else {}
        if any((e.user_id, a) in listed for e in emails for a in e.guard or ()) or any(
                e.template_version and self._template_changed(e) for e in emails):
            self.refused += 1
            raise SendCheckNeeded  # nothing stored
        for e in emails:
            row = {name: getattr(e, name) for name in _EMAIL_COLUMNS}
            row.update(id=len(self.rows) + 1, to_addresses=list(e.to), cc_addresses=list(e.cc),
                       bcc_addresses=list(e.bcc), status=e.status, sent_at=None,
                       delivered_at=None, response=None, last_event=None,
                       updated_at=e.created_at)
            self.rows.append(row)
            self.outcomes[e.message_id] = sorted(
                ({"recipient": normalise_address(s.email), "outcome": "suppressed",
                  "bounce_class": None, "response": s.reason, "event_at": e.created_at}
                 for s in e.suppressed), key=lambda r: r["recipient"])
            if e.published:
                self.outbox.append((e.topic, e.kafka_key, e.kafka_value))

    def _template_changed(self, e: NewEmail) -> bool:
        assert e.template_version is not None
        template_id, version = e.template_version
        rows = self.templates.rows if self.templates is not None else {}
        row = rows.get(template_id)
        return row is None or row.user_id != e.user_id or row.updated_at != version

    async def list(self, query: EmailFilter) -> EmailPage:
        await trio.lowlevel.checkpoint()
        chosen = [r for r in self.rows if r["user_id"] == query.user_id
                  and (query.raw_statuses is None or r["status"] in query.raw_statuses)
                  and (query.created_from is None or r["created_at"] >= query.created_from)
                  and (query.created_to is None or r["created_at"] <= query.created_to)]
        counts: dict[str, int] = {}
        for row in chosen:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        chosen.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        start = (query.page - 1) * query.per_page
        rows = [{k: r[k] for k in ("message_id", "from_address", "to_addresses", "subject",
                                   "status", "created_at")}
                for r in chosen[start:start + query.per_page]]
        return EmailPage(rows=rows, status_counts=counts)

    async def get(self, user_id: int, message_id: str) -> dict[str, Any] | None:
        await trio.lowlevel.checkpoint()
        for row in self.rows:
            if row["user_id"] == user_id and row["message_id"] == message_id:
                return {**row, "recipients": list(self.outcomes.get(message_id, ()))}
        return None

    async def existing_message_ids(self, message_ids: Sequence[str]) -> set[str]:
        await trio.lowlevel.checkpoint()
        return {r["message_id"] for r in self.rows} & set(message_ids)


class FakeSuppressions:
    """SuppressionStore: each user's list in a dict (normalised address -> entry); ``down``
    makes every call raise RetryLater, as the adapters do when the database does not answer."""

    def __init__(self) -> None:
        self.entries: dict[tuple[int, str], Suppression] = {}
        self.lookups = 0
        self.down = False

    async def _checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.down:
            raise RetryLater("suppression list unavailable")

    async def suppressed(self, user_id: int, addresses: Sequence[str]) -> dict[str, Suppression]:
        await self._checkpoint()
        self.lookups += 1
        return {a: self.entries[user_id, a] for a in addresses if (user_id, a) in self.entries}

    async def add(self, entries: Sequence[Suppression]) -> int:
        await self._checkpoint()
        new = [e for e in entries if (e.user_id, e.address) not in self.entries]
        for entry in new:
            self.entries[entry.user_id, entry.address] = entry
        return len(new)

    async def add_hard_bounces(self, outcomes: Sequence[RecipientOutcome]) -> int:
        raise NotImplementedError("not used by the sending use cases")

    async def remove(self, user_id: int, address: str) -> bool:
        await self._checkpoint()
        return self.entries.pop((user_id, address), None) is not None

    async def list(self, query: SuppressionFilter) -> SuppressionPage:
        await self._checkpoint()
        rows = [e for (user, _), e in self.entries.items() if user == query.user_id]
        start = (query.page - 1) * query.per_page
        return SuppressionPage(rows=rows[start:start + query.per_page], total=len(rows))


@dataclass
class FakeOutboxNotifier:
    notified: int = 0

    def notify(self) -> None:
        self.notified += 1


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What GET /logs reads of a document (MongoLogReader's projection).
_READ_FIELDS = ("event", "timestamp", "action", "response", "sender", "recipient", "from_domain",
                "to_domain", "message_id", "source")


@dataclass
class FakeLogReader:
    """LogReader over a list of delivery-log documents (as fetchlog stores them), with the
    visibility rule and filters of :class:`~etrans.app.records.LogFilter`."""

    documents: list[dict[str, Any]] = field(default_factory=list)

    def _visible(self, query: LogFilter, doc: dict[str, Any]) -> bool:
        moment = _ms(doc["timestamp"])
        if query.owner is not None and doc.get("user_id") == query.owner:
            return True
        return any(doc.get("from_domain") == name and moment >= _ms(since)
                   for name, since in query.domains)

    def _matches(self, query: LogFilter, doc: dict[str, Any]) -> bool:
        moment = _ms(doc["timestamp"])
        return (self._visible(query, doc)
                and (query.after is None or moment > _ms(query.after))
                and (query.before is None or moment < _ms(query.before))
                and (not query.actions or doc.get("action") in query.actions)
                and all(getattr(query, name) is None or doc.get(name) == getattr(query, name)
                        for name in ("sender", "recipient", "message_id"))
                and (query.source is None
                     or (doc.get("source") == "API") == (query.source == "API")))

    async def counts(self, query: LogFilter) -> list[LogGroup]:
        await trio.lowlevel.checkpoint()
        groups: dict[tuple[Any, Any, Any], int] = {}
        for doc in self.documents:
            if not query.empty and self._matches(query, doc):
                key = (doc.get("action"), doc.get("event"), doc.get("source"))
                groups[key] = groups.get(key, 0) + 1
        return [LogGroup(action=a, event=e, source=s, count=n) for (a, e, s), n in groups.items()]

    async def page(self, query: LogFilter, *, skip: int, limit: int) -> list[dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        if query.empty:
            return []
        chosen = [doc for doc in self.documents if self._matches(query, doc)]
        for name, direction in reversed(query.sorts):  # stable sorts, last key first
            chosen.sort(key=lambda d, n=name: _sort_key(d.get(n)), reverse=direction < 0)
        return [{k: _ms(doc[k]) if k == "timestamp" else doc[k] for k in _READ_FIELDS if k in doc}
                for doc in chosen[skip:skip + limit]]


def _ms(moment: datetime) -> datetime:
    """A time as MongoDB keeps it: a BSON date, in milliseconds."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _sort_key(value: Any) -> Any:
    if isinstance(value, datetime):
        return (_ms(value) - _EPOCH).total_seconds()
    return "" if value is None else value


def build_email_bus(*, domains: FakeSendingDomains, credentials: FakeSenderCredentials,
                    credential_cache: FakeCredentialCache | None = None,
                    quota: FakeQuota | None = None, store: FakeEmailStore | None = None,
                    outbox: FakeOutboxNotifier | None = None, logs: FakeLogReader | None = None,
                    suppressions: FakeSuppressions | None = None, clock: Any = None,
                    topic: str = "sendmail",
                    max_record_bytes: int | None = None,
                    templates: Any = None, guarded_saves: bool = False) -> MessageBus:
    """A MessageBus with the email, log and template use cases on fakes (the ones not given are
    new; templates: the real engine, which needs no service, on an in-memory store)."""
    from etrans.adapters.jinja.engine import JinjaTemplateEngine
    from etrans.app import emails as email_cases
    from etrans.app import logs as log_cases
    from etrans.app import templates as template_cases
    from etrans.app.bus import MessageBus
    from tests.unit.fakes_templates import FakeTemplateStore

    if templates is None:
        templates = template_cases.TemplateDeps(FakeTemplateStore(), JinjaTemplateEngine())

    store = store if store is not None else FakeEmailStore()
    suppressions = suppressions if suppressions is not None else FakeSuppressions()
    if guarded_saves:  # the store checks the list and templates, as serve's and dev's do
        store.suppressions = suppressions
        store.templates = templates.store
    deps = email_cases.EmailDeps(
        domains=domains, credentials=credentials,
        credential_cache=(credential_cache if credential_cache is not None
                          else FakeCredentialCache()),
        quota=quota if quota is not None else FakeQuota(), store=store,
        suppressions=suppressions, outbox=outbox, topic=topic,
        max_record_bytes=max_record_bytes, templates=templates, guarded_saves=guarded_saves)
    if clock is not None:
        deps = replace(deps, clock=clock)
    bus = MessageBus()
    template_cases.register(bus, templates)
    email_cases.register(bus, deps)
    log_cases.register(bus, log_cases.LogDeps(logs if logs is not None else FakeLogReader(),
                                              store, domains))
    return bus
