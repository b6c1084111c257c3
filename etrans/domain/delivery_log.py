"""Delivery-log events: which to store, the MongoDB document for each, and email status rules.

Pure rules, standard library only.  The fetchlog worker (:mod:`etrans.workers.fetchlog`) decodes
Filebeat events (the spec's "Log Event Format"), asks :class:`EventFilter` whether to store
them, maps them with :func:`to_document` and advances ``email_messages.status`` with the
transition table of :func:`status_for_event` / :data:`STATUS_RANK`.  ``docs/delivery-logs.md``
states the same rules for operators.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from etrans.domain import timestamps
from etrans.domain.bounces import BounceClass, classify

if TYPE_CHECKING:
    from datetime import datetime

DEFAULT_STORE_EVENT_TYPES = ("Sender", "Queue", "Deferred", "Reject")
DEFAULT_SKIP_MESSAGE_ID_PATTERN = "bizfly.vn"

# The document written to MongoDB, field -> the event's field (the spec's "MongoDB Document").
# ``timestamp`` (a BSON date from ``@timestamp``) and the ``agent_*`` fields are handled apart.
_STRING_FIELDS: tuple[tuple[str, str], ...] = (
    ("event", "Event"),
    ("action", "SMTP_Action"),
    ("sender", "from"),
    ("recipient", "recipient"),
    ("response", "response"),
    ("from_domain", "from_domain"),
    ("message_id", "message_id"),
    ("to_domain", "to_domain"),
)
_AGENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("agent_type", "type"),
    ("agent_name", "name"),
    ("agent_hostname", "hostname"),
)
DOCUMENT_FIELDS: tuple[str, ...] = (
    "event", "timestamp", "action", "sender", "recipient", "response", "from_domain",
    "message_id", "to_domain", "event_id", "agent_type", "agent_name", "agent_hostname",
)


class InvalidEvent(ValueError):
    """The event cannot be stored: not a JSON object, or no usable ``@timestamp``."""


class Verdict(enum.Enum):
    STORE = "store"
    FILTERED = "filtered"  # its Event is not one of STORE_EVENT_TYPES
    SKIPPED = "skipped"  # its message_id matches SKIP_MESSAGE_ID_PATTERN (internal mail)


@dataclass(frozen=True)
class EventFilter:
    """STORE_EVENT_TYPES and SKIP_MESSAGE_ID_PATTERN, applied to one decoded event."""

    store_event_types: frozenset[str] = frozenset(DEFAULT_STORE_EVENT_TYPES)
    skip_message_id: re.Pattern[str] | None = re.compile(DEFAULT_SKIP_MESSAGE_ID_PATTERN)

    @classmethod
    def from_settings(cls, store_event_types: Iterable[str], skip_pattern: str) -> EventFilter:
        # An empty pattern would match every message id: it means "skip nothing".
        return cls(frozenset(store_event_types), re.compile(skip_pattern) if skip_pattern else None)

    def verdict(self, event: Mapping[str, Any]) -> Verdict:
        if _text(event.get("Event")) not in self.store_event_types:
            return Verdict.FILTERED
        # Like the Go worker's regexp.MatchString: the pattern may match anywhere in the id.
        if self.skip_message_id is not None and self.skip_message_id.search(
            _text(event.get("message_id"))
        ):
            return Verdict.SKIPPED
        return Verdict.STORE


def decode_event(raw: bytes | str | None) -> dict[str, Any]:
    """The event as a dict; InvalidEvent when it is not a JSON object."""
    if raw is None:
        raise InvalidEvent("empty message (no value)")
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise InvalidEvent(f"not a JSON object but {type(event).__name__}")
    return event


def parse_timestamp(value: object) -> datetime:
    """``@timestamp`` (ISO-8601, ``Z`` or an offset) -> aware UTC datetime at BSON's millisecond
    precision.  A timestamp without zone is taken as UTC (Filebeat always writes ``Z``)."""
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"@timestamp missing or not a string: {value!r}")
    try:
        moment = timestamps.parse_timestamp(value)
    except ValueError as exc:
        raise InvalidEvent(f"@timestamp: {exc}") from None
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def event_id_of(event: Mapping[str, Any]) -> str:
    """``Event_ID``; when Filebeat gave none, a stable id derived from the event's content, so
    that replays still find the document already stored (``sha256:<hex>``)."""
    given = _text(event.get("Event_ID"))
    if given:
        return given
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def to_document(event: Mapping[str, Any]) -> dict[str, Any]:
    """The MongoDB document of one event: exactly the fields of :data:`DOCUMENT_FIELDS`.

    Missing string fields become ``""`` (as the Go worker's struct did); non-string scalars are
    written as text.  Raises InvalidEvent when ``@timestamp`` is unusable.
    """
    document: dict[str, Any] = {name: _text(event.get(source)) for name, source in _STRING_FIELDS}
    document["timestamp"] = parse_timestamp(event.get("@timestamp"))
    document["event_id"] = event_id_of(event)
    agent = event.get("agent")
    agent = agent if isinstance(agent, Mapping) else {}
    for name, source in _AGENT_FIELDS:
        document[name] = _text(agent.get(source))
    return {name: document[name] for name in DOCUMENT_FIELDS}


def add_bounce_class(document: dict[str, Any], given: object = None) -> None:
    """etrans addition: a document whose event proves ``bounced`` gets ``bounce_class``
    (:mod:`etrans.domain.bounces`), in place.  ``given``: the event's own ``bounce_class`` (the
    Reject events of ``etrans sendmail`` carry one), kept when it is a known class; otherwise the
    class is read from the document's ``response``.  Other documents get no such field."""
    if status_for_event(document.get("event", ""), document.get("action", "")) != BOUNCED:
        return
    known = {member.value for member in BounceClass}
    document["bounce_class"] = (given if isinstance(given, str) and given in known
                                else classify(document.get("response", "")).value)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# -- email_messages.status ------------------------------------------------------------------------
#
# Statuses only move forward along this order; delivered and bounced are both final, and whichever
# is stored first stays (equal rank: neither overwrites the other).  A late Deferred (rank 2) never
# overwrites delivered/bounced (rank 3), a late Sender/Queue (rank 1) never overwrites deferred.
# failed is set by the outbox relay of an email that never reached Kafka; no event moves it (the
# Reject events the relay publishes for it would otherwise make it bounced).

QUEUED, SENT, DEFERRED, DELIVERED, BOUNCED = "queued", "sent", "deferred", "delivered", "bounced"
FAILED = "failed"

STATUS_RANK: Mapping[str, int] = {QUEUED: 0, SENT: 1, DEFERRED: 2, DELIVERED: 3, BOUNCED: 3,
                                  FAILED: 4}

# SMTP_Action values (lower-cased) that name an outcome, -> the email status they mean.
_ACTION_STATUS: Mapping[str, str] = {
    "sent": SENT,
    "sender": SENT,
    "delivered": DELIVERED,
    "delivery": DELIVERED,
    "deferred": DEFERRED,
    "bounced": BOUNCED,
    "bounce": BOUNCED,
    "reject": BOUNCED,
    "rejected": BOUNCED,
}


def status_for_event(event: str, action: str) -> str | None:
    """The email status an event proves, or None when it proves nothing.

    ==========  ================================  ===========
    Event       SMTP_Action                       status
    ==========  ================================  ===========
    Reject      any                               bounced
    Deferred    any                               deferred
    Sender      delivered / delivery              delivered
    Sender      deferred                          deferred
    Sender      bounced / reject / rejected       bounced
    Sender      anything else (or empty)          sent
    Queue       (same rules as Sender)            ...
    other       -                                 None
    ==========  ================================  ===========
    """
    if event == "Reject":
        return BOUNCED
    if event == "Deferred":
        return DEFERRED
    if event in ("Sender", "Queue"):
        return _ACTION_STATUS.get(action.strip().lower(), SENT)
    return None


@dataclass(frozen=True)
class StatusChange:
    """Advance one email to ``status`` (if it is behind).  ``at``, ``event`` and ``response`` are
    those of the event that proves it; ``message_id`` is without angle brackets, as the USEND DB
    stores it."""

    message_id: str
    status: str
    at: datetime
    event: str = ""
    response: str = ""

    @property
    def rank(self) -> int:
        return STATUS_RANK[self.status]


def status_changes(documents: Iterable[Mapping[str, Any]]) -> list[StatusChange]:
    """One change per message id: the furthest status its events prove (order-independent).

    Among several events of the same rank the earliest wins, so a batch gives the same result
    whatever order its events came in.  Across batches the database update only ever moves a
    status forward, so the final status is the furthest one proven, whatever the arrival order
    (between delivered and bounced, both final, the first one stored stays).
    """
    best: dict[str, StatusChange] = {}
    for document in documents:
        message_id = bare_message_id(document.get("message_id") or "")
        status = status_for_event(document.get("event", ""), document.get("action", ""))
        if not message_id or status is None:
            continue
        change = StatusChange(message_id, status, document["timestamp"],
                              document.get("event", ""), document.get("response", ""))
        current = best.get(message_id)
        if current is None or _precedence(change) > _precedence(current):
            best[message_id] = change
    return list(best.values())


def _precedence(change: StatusChange) -> tuple[int, float, bool, str, str]:
    # Furthest status first, then the earliest event; an exact tie between delivered and bounced
    # at the same instant goes to bounced.  The last keys only make every tie order-independent.
    return (change.rank, -change.at.timestamp(), change.status == BOUNCED, change.event,
            change.response)


def bare_message_id(message_id: str) -> str:
    """``<id@host>`` -> ``id@host`` (SMTP logs may keep the brackets; the USEND DB does not)."""
    text = message_id.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


# -- per-recipient outcomes (email_recipient_outcomes) ---------------------------------------------

@dataclass(frozen=True)
class RecipientOutcome:
    """Advance one recipient of one email to ``outcome`` (a status of :data:`STATUS_RANK`), with
    the ``bounce_class`` of a bounce (else None) and the event's ``response`` and time.
    ``recipient`` is lower-cased, ``message_id`` without angle brackets."""

    message_id: str
    recipient: str
    outcome: str
    at: datetime
    bounce_class: str | None = None
    response: str = ""

    @property
    def rank(self) -> int:
        return STATUS_RANK[self.outcome]


def recipient_outcomes(documents: Iterable[Mapping[str, Any]]) -> list[RecipientOutcome]:
    """One outcome per (message id, recipient): the furthest its events prove, earliest first
    among equals (as :func:`status_changes`, per recipient).  Documents without a recipient
    prove nothing here."""
    best: dict[tuple[str, str], RecipientOutcome] = {}
    for document in documents:
        message_id = bare_message_id(document.get("message_id") or "")
        recipient = str(document.get("recipient") or "").strip().lower()
        status = status_for_event(document.get("event", ""), document.get("action", ""))
        if not message_id or not recipient or status is None:
            continue
        outcome = RecipientOutcome(message_id, recipient, status, document["timestamp"],
                                   document.get("bounce_class"), document.get("response", ""))
        current = best.get((message_id, recipient))
        if current is None or _outcome_precedence(outcome) > _outcome_precedence(current):
            best[(message_id, recipient)] = outcome
    return list(best.values())


def _outcome_precedence(outcome: RecipientOutcome) -> tuple[int, float, bool, str]:
    return (outcome.rank, -outcome.at.timestamp(), outcome.outcome == BOUNCED, outcome.response)
