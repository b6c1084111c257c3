"""The email events of the outbox relay (``docs/wire-formats.md``, "Email events"): the
``email.queued`` of a send request it publishes, the ``email.failed`` of one it gives up on.

Both are read from the send request's JSON (the row's payload: ``docs/wire-formats.md``, "Send
requests"); a payload that is not one gives no event.  ``(key, value)`` as
:func:`~etrans.domain.events.encode_event` gives them.
"""

from __future__ import annotations

import json
from typing import Any

from etrans.domain.events import encode_event
from etrans.domain.status_events import failed_event, queued_event
from etrans.observability import get_logger

log = get_logger(__name__)


def _request(payload: bytes) -> dict[str, Any] | None:
    try:
        request = json.loads(payload)
    except ValueError:
        return None
    return request if isinstance(request, dict) else None


def queued_record(payload: bytes) -> tuple[bytes, bytes] | None:
    request = _request(payload)
    event = queued_event(request) if request is not None else None
    if event is None:
        return None
    try:
        return encode_event(event)
    except ValueError:  # more than 64 KiB of addresses: the request goes without its event
        log.warning("email.queued event too large, not published", message_id=event.message_id)
        return None


def failed_record(payload: bytes, response: str) -> tuple[bytes, bytes] | None:
    request = _request(payload)
    queued = queued_event(request) if request is not None else None
    if queued is None or queued.message_id is None:
        return None
    return encode_event(failed_event(queued.message_id, queued.user_id, response))
