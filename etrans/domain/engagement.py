"""Opens and clicks: the ``email.opened`` / ``email.clicked`` events of the tracking endpoints
(``etrans/domain/events.py``), as fetchlog stores them (``docs/tracking.md``).

- :func:`engagement_of` - the :class:`Engagement` of one event, None for the other types;
- :func:`log_document` - its delivery-log document for MongoDB (GET /logs): the fields of
  :data:`etrans.domain.delivery_log.DOCUMENT_FIELDS`, ``event`` ``Open`` / ``Click``,
  ``action`` ``opened`` / ``clicked``, ``event_id`` the event's id (so a replay is a duplicate),
  ``response`` the URL of a click, and ``source`` ``API`` with the event's ``user_id`` (the
  tracking token is signed for that user, so GET /logs shows it to them only).

An open or a click never changes an email's status (``docs/delivery-logs.md``): they are counted
apart, in ``email_engagement_events``.  Pure rules, standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from etrans.domain.delivery_log import DOCUMENT_FIELDS, bare_message_id
from etrans.domain.events import EventType, InvalidEmailEvent

if TYPE_CHECKING:
    from datetime import datetime

    from etrans.domain.events import EmailEvent

OPEN, CLICK = "open", "click"
KINDS: dict[EventType, str] = {EventType.OPENED: OPEN, EventType.CLICKED: CLICK}
# The delivery-log ``event`` / ``action`` of each kind (GET /logs).
LOG_EVENTS = {OPEN: ("Open", "opened"), CLICK: ("Click", "clicked")}
LOG_EVENT_NAMES = frozenset(event for event, _ in LOG_EVENTS.values())
MAX_USER_AGENT = 512
MAX_URL = 4096


@dataclass(frozen=True)
class Engagement:
    """One open or click of an email: ``message_id`` without angle brackets, ``url`` of a click
    (None for an open), the mail client's ``user_agent`` and the time of the hit."""

    event_id: str
    user_id: int
    message_id: str
    kind: str  # OPEN or CLICK
    at: datetime
    url: str | None = None
    user_agent: str = ""


def engagement_of(event: EmailEvent) -> Engagement | None:
    """The open or click of ``event``; None for an event of another type.  Raises
    :class:`InvalidEmailEvent` for an open or click without a usable message id."""
    kind = KINDS.get(event.type)
    if kind is None:
        return None
    message_id = bare_message_id(event.message_id or "")
    if not message_id or len(message_id) > 255:
        raise InvalidEmailEvent(f"{event.type.value} without a usable message_id")
    url = event.data.get("url")
    if kind == CLICK and (not isinstance(url, str) or not url):
        raise InvalidEmailEvent("email.clicked without a url")
    agent = event.data.get("user_agent")
    return Engagement(
        event_id=event.id, user_id=event.user_id, message_id=message_id, kind=kind,
        # BSON dates hold milliseconds: the stored time is the same in both stores.
        at=event.timestamp.replace(microsecond=event.timestamp.microsecond // 1000 * 1000),
        url=url[:MAX_URL] if kind == CLICK and isinstance(url, str) else None,
        user_agent=agent[:MAX_USER_AGENT] if isinstance(agent, str) else "")


def log_document(engagement: Engagement) -> dict[str, Any]:
    """The delivery-log document of ``engagement`` (see the module docstring)."""
    event, action = LOG_EVENTS[engagement.kind]
    document: dict[str, Any] = dict.fromkeys(DOCUMENT_FIELDS, "")
    document.update(event=event, action=action, timestamp=engagement.at,
                    message_id=engagement.message_id, event_id=engagement.event_id,
                    response=engagement.url or "")
    return {**document, "source": "API", "user_id": engagement.user_id}
