"""Webhook endpoints: the rules that need no I/O (issue 16).

- :func:`new_signing_secret`: ``whsec_`` + base64 of 24 random bytes (Standard Webhooks' form,
  :mod:`etrans.domain.webhook_signing`; the standardwebhooks libraries take it as it is);
- :func:`subscription`: the ``events`` of the API checked against
  :class:`etrans.domain.events.EventType` (no ``events`` = every type, stored as ``[]``);
- :data:`MAX_WEBHOOKS_PER_USER`; the public ids ``wh_<n>``.

The URL rules are in :mod:`etrans.domain.webhook_urls`.
"""

from __future__ import annotations

import base64
import re
import secrets

from etrans.domain.events import EventType
from etrans.domain.webhook_signing import SECRET_PREFIX
from etrans.errors import InvalidInput

SECRET_BYTES = 24
MAX_WEBHOOKS_PER_USER = 20
EVENT_TYPES = tuple(kind.value for kind in EventType)


class InvalidSubscription(ValueError):
    """An ``events`` list a webhook may not have; the message says why."""


def new_signing_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def subscription(events: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The event types to store, in :class:`EventType` order, each once; ``()`` (every type)
    when ``events`` is None.  An empty list or an unknown type is refused."""
    if events is None:
        return ()
    if not events:
        raise InvalidSubscription("events must not be empty: omit it to receive every type")
    unknown = sorted({e for e in events if e not in EVENT_TYPES})
    if unknown:
        shown = ", ".join(repr(e[:64]) for e in unknown[:5])
        raise InvalidSubscription(f"unknown event type {shown}; the types are "
                                  + ", ".join(EVENT_TYPES))
    wanted = set(events)
    return tuple(kind for kind in EVENT_TYPES if kind in wanted)


def format_webhook_id(number: int) -> str:
    return f"wh_{number}"


def parse_webhook_id(raw: str) -> int:
    """The number of ``wh_<n>``; InvalidInput (400) for anything else, as the other ids."""
    match = re.fullmatch(r"wh_([1-9][0-9]{0,17})", raw)
    if match is None:
        raise InvalidInput(f"invalid webhook id {raw[:64]!r}: expected wh_<number>")
    return int(match.group(1))
