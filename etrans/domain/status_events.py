"""Which :class:`~etrans.domain.events.EmailEvent` each status change of an email becomes, as
the component that learns it builds it (``docs/wire-formats.md``, "Email events").

Every event here can be learnt twice (a replayed delivery-log event, a send retried after a
crash, an outbox row published again), so every id is a :func:`derived_event_id` of what
identifies the fact: a repeat has the same id.

Pure rules, standard library only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from etrans.domain.delivery_log import (
    BOUNCED,
    DEFERRED,
    DELIVERED,
    bare_message_id,
    status_for_event,
)
from etrans.domain.events import EmailEvent, EventType, derived_event_id

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# The statuses a delivery-log document proves that fetchlog reports as events.
_LOG_EVENT_TYPES: Mapping[str, EventType] = {
    DELIVERED: EventType.DELIVERED, DEFERRED: EventType.DELAYED, BOUNCED: EventType.BOUNCED}


def delivery_log_event(document: Mapping[str, Any]) -> EmailEvent | None:
    """The ``email.delivered`` / ``email.delayed`` / ``email.bounced`` event of one stored
    delivery-log document (with ``user_id``: an API email), or None when it proves none of
    them.  id = derived_event_id(log event id, type, recipient)."""
    user_id = document.get("user_id")
    recipient = str(document.get("recipient") or "").strip().lower()
    message_id = bare_message_id(str(document.get("message_id") or ""))
    status = status_for_event(document.get("event", ""), document.get("action", ""))
    kind = _LOG_EVENT_TYPES.get(status or "")
    if kind is None or not isinstance(user_id, int) or not recipient or not message_id:
        return None
    log_event_id = str(document.get("event_id") or "")
    data: dict[str, Any] = {"message_id": message_id, "recipient": recipient,
                            "response": str(document.get("response") or ""),
                            "log_event_id": log_event_id}
    if kind is EventType.BOUNCED:
        data["bounce_class"] = document.get("bounce_class")
    return EmailEvent(id=derived_event_id(log_event_id, kind.value, recipient), type=kind,
                      timestamp=document["timestamp"], user_id=user_id, data=data)


def sent_event(message_id: str, user_id: int, recipients: Sequence[str], response: str,
               at: datetime | None = None) -> EmailEvent:
    """``email.sent``: the relay answered 250; id derived from the message id + "sent"."""
    return EmailEvent(id=derived_event_id(message_id, EventType.SENT.value),
                      type=EventType.SENT, timestamp=at or datetime.now(UTC), user_id=user_id,
                      data={"message_id": message_id, "recipients": list(recipients),
                            "response": response})


def queued_event(request: Mapping[str, Any], at: datetime | None = None) -> EmailEvent | None:
    """``email.queued`` of a send request (its KAFKA_TOPIC JSON, ``docs/wire-formats.md``:
    ``payload`` or the top-level object): None when it names no message id or user."""
    payload = request.get("payload", request)
    if not isinstance(payload, dict):
        return None
    message_id, user_id = payload.get("message_id"), str(payload.get("user_id") or "")
    if not isinstance(message_id, str) or not message_id or not user_id.isdigit():
        return None
    sender = payload.get("sender")
    data = {"message_id": message_id,
            "from": sender.get("email") if isinstance(sender, dict) else sender,
            "to": payload.get("recipients") or [], "cc": payload.get("cc") or [],
            "bcc": payload.get("bcc") or [], "subject": payload.get("subject") or "",
            "tags": payload.get("tags") or []}
    return EmailEvent(id=derived_event_id(message_id, EventType.QUEUED.value),
                      type=EventType.QUEUED, timestamp=at or datetime.now(UTC),
                      user_id=int(user_id), data=data)


def failed_event(message_id: str, user_id: int, response: str,
                 at: datetime | None = None) -> EmailEvent:
    """``email.failed``: the outbox row of the email can never be published."""
    return EmailEvent(id=derived_event_id(message_id, EventType.FAILED.value),
                      type=EventType.FAILED, timestamp=at or datetime.now(UTC), user_id=user_id,
                      data={"message_id": message_id, "response": response})


def suppressed_event(message_id: str, user_id: int, recipient: str, reason: str,
                     at: datetime) -> EmailEvent:
    """``email.suppressed``: ``recipient`` (normalised) was left out, on the suppression list
    for ``reason``; id derived from the message id, the type and the recipient."""
    return EmailEvent(id=derived_event_id(message_id, EventType.SUPPRESSED.value, recipient),
                      type=EventType.SUPPRESSED, timestamp=at, user_id=user_id,
                      data={"message_id": message_id, "recipient": recipient, "reason": reason})
