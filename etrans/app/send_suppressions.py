"""The suppression list on the send path (:mod:`etrans.app.emails`): which recipients of an email
are listed (one lookup, :func:`suppressed_recipients`), the email as it is sent without them
(:func:`without`), their ``email.suppressed`` events (:func:`suppressed_events`), and the
addresses a store checks itself when it saves (:func:`guard_addresses`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.app.records import SuppressedRecipient
from etrans.domain.addresses import parse_address
from etrans.domain.events import encode_event
from etrans.domain.status_events import suppressed_event
from etrans.domain.suppressions import normalise_address
from etrans.errors import RetryLater, UpstreamUnavailable
from etrans.observability import get_logger

if TYPE_CHECKING:
    from datetime import datetime

    from etrans.app.ports import SuppressionLookup

log = get_logger(__name__)


def recipients(email: dict[str, Any]) -> dict[str, str]:
    """Normalised address -> the bare address as given (the first one), over to, cc and bcc."""
    addresses: dict[str, str] = {}
    for text in (*email["to"], *(email.get("cc") or ()), *(email.get("bcc") or ())):
        bare = parse_address(text).email
        addresses.setdefault(normalise_address(bare), bare)
    return addresses


def guard_addresses(email: dict[str, Any]) -> tuple[str, ...]:
    """What a store that checks the list itself (``NewEmail.guard``) looks up: the normalised
    recipients."""
    return tuple(recipients(email))


def suppressed_events(topic: str | None, message_id: str, user_id: int,
                      suppressed: tuple[SuppressedRecipient, ...], now: datetime
                      ) -> tuple[tuple[str, bytes, bytes], ...]:
    """The outbox records of the ``email.suppressed`` events (none in the common send)."""
    if topic is None or not suppressed:
        return ()
    return tuple((topic, *encode_event(suppressed_event(
        message_id, user_id, normalise_address(s.email), s.reason, now))) for s in suppressed)


async def suppressed_recipients(lookup: SuppressionLookup, user_id: int, email: dict[str, Any]
                                ) -> tuple[SuppressedRecipient, ...]:
    """The recipients (to, cc, bcc) on the user's suppression list: one lookup."""
    addresses = recipients(email)
    try:
        listed = await lookup.suppressed(user_id, list(addresses))
    except RetryLater as exc:
        log.error("suppression lookup failed", error=str(exc))
        raise UpstreamUnavailable("Could not check the suppression list, please retry",
                                  retry_after_seconds=5) from None
    return tuple(SuppressedRecipient(bare, listed[key].reason)
                 for key, bare in addresses.items() if key in listed)


def without(email: dict[str, Any], suppressed: tuple[SuppressedRecipient, ...]
            ) -> dict[str, Any] | None:
    """The email as it is sent: to, cc and bcc without the suppressed addresses (each field
    keeps its role: a cc is never promoted to to, so an email whose every to is suppressed
    goes out with an empty ``recipients``); None when no recipient is left."""
    if not suppressed:
        return email
    left_out = {normalise_address(s.email) for s in suppressed}
    kept = {name: [a for a in email.get(name) or ()
                   if normalise_address(parse_address(a).email) not in left_out]
            for name in ("to", "cc", "bcc")}
    if not any(kept.values()):
        return None
    return {**email, **kept}
