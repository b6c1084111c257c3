"""Email events: one record per status change of an email, on ``KAFKA_EVENTS_TOPIC`` (default
``email-events``), the stream webhooks are delivered from (``docs/wire-formats.md``, "Email
events").

Each event is written by the component that learns it (the outbox relay: queued, failed;
``etrans sendmail``: sent; fetchlog: delivered, delayed, bounced; the API: suppressed; the tracking
endpoints: opened, clicked; ``etrans webhooks``: webhook.disabled), keyed by the message id, at
least once.  The value is the Standard Webhooks payload (``type``, ``timestamp``, ``data``) plus
the event ``id`` (the ``webhook-id`` of every delivery of it) and the ``user_id`` it belongs to.

An event that can be learnt twice (a replayed delivery-log event, a retried send) gets the same
id both times: :func:`derived_event_id` hashes what identifies the fact, so consumers and webhook
receivers deduplicate by id.  Facts that can happen many times (an open, a click) take
:func:`random_event_id`.

Pure rules, standard library only.
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EVENT_ID_PREFIX = "evt_"
MAX_EVENT_BYTES = 64 * 1024  # an event never carries a body or attachments


class EventType(enum.StrEnum):
    QUEUED = "email.queued"
    SENT = "email.sent"
    DELIVERED = "email.delivered"
    DELAYED = "email.delayed"
    BOUNCED = "email.bounced"
    SUPPRESSED = "email.suppressed"
    OPENED = "email.opened"
    CLICKED = "email.clicked"
    FAILED = "email.failed"
    WEBHOOK_DISABLED = "webhook.disabled"


class InvalidEmailEvent(ValueError):
    """A record of the events topic that is not an event of this format."""


@dataclass(frozen=True)
class EmailEvent:
    """One event.  ``data`` holds ``message_id`` for every ``email.*`` event and the fields of
    its type (``docs/wire-formats.md``): ``recipient``, ``bounce_class``, ``response``,
    ``reason``, ``url``, ``user_agent``, ``webhook_id`` ... only JSON values."""

    id: str
    type: EventType
    timestamp: datetime  # aware, UTC
    user_id: int
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def message_id(self) -> str | None:
        value = self.data.get("message_id")
        return value if isinstance(value, str) else None


def derived_event_id(*parts: str) -> str:
    """The id of a fact identified by ``parts`` (e.g. the delivery-log event id and the type):
    the same parts always give the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return EVENT_ID_PREFIX + digest[:32]


def random_event_id() -> str:
    return EVENT_ID_PREFIX + secrets.token_hex(16)


def _timestamp_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def webhook_payload(event: EmailEvent) -> dict[str, Any]:
    """What a webhook endpoint receives as its JSON body (Standard Webhooks' structure)."""
    return {"type": event.type.value, "timestamp": _timestamp_text(event.timestamp),
            "data": event.data}


def encode_event(event: EmailEvent) -> tuple[bytes, bytes]:
    """The Kafka key (the message id, else the event id) and value (compact UTF-8 JSON)."""
    value = {"id": event.id, "user_id": str(event.user_id), **webhook_payload(event)}
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    if len(body) > MAX_EVENT_BYTES:
        raise ValueError(f"event {event.id} is {len(body)} bytes, more than {MAX_EVENT_BYTES}")
    return (event.message_id or event.id).encode(), body


def decode_event(raw: bytes | None) -> EmailEvent:
    """The event of a record's value; :class:`InvalidEmailEvent` for anything else."""
    if not raw:
        raise InvalidEmailEvent("empty record")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEmailEvent(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidEmailEvent("not a JSON object")
    event_id, user_id, data = value.get("id"), value.get("user_id"), value.get("data")
    if not isinstance(event_id, str) or not event_id.startswith(EVENT_ID_PREFIX):
        raise InvalidEmailEvent("missing or malformed id")
    if not isinstance(user_id, str) or not user_id.isascii() or not user_id.isdigit():
        raise InvalidEmailEvent("missing or malformed user_id")
    if not isinstance(data, dict):
        raise InvalidEmailEvent("missing data object")
    try:
        kind = EventType(str(value.get("type")))
    except ValueError:
        raise InvalidEmailEvent(f"unknown type {value.get('type')!r}") from None
    stamp = value.get("timestamp")
    try:
        moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEmailEvent(f"malformed timestamp {stamp!r}") from None
    if moment.tzinfo is None:
        raise InvalidEmailEvent("timestamp without a time zone")
    return EmailEvent(id=event_id, type=kind, timestamp=moment.astimezone(UTC),
                      user_id=int(user_id), data=data)
