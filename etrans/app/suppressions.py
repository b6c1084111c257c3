"""Use cases of the suppression list (``/suppressions``): list, add by hand, remove.

Each user has their own list (:class:`~etrans.app.ports.SuppressionStore`): every command names
its user, and no command reaches another user's entries.  Addresses are validated with the rules
of the email API (:func:`etrans.domain.addresses.validate_email`) and stored normalised
(:func:`etrans.domain.suppressions.normalise_address`).  Entries for hard bounces come from
fetchlog (:meth:`~etrans.app.ports.SuppressionStore.add_hard_bounces`); by hand a user adds
``manual`` or ``complaint`` entries.  A database that does not answer is a 503.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from etrans.app.records import Suppression, SuppressionFilter
from etrans.domain.addresses import AddressError, validate_email
from etrans.domain.suppressions import MAX_ADDRESS_LENGTH, SuppressionReason, normalise_address
from etrans.domain.timestamps import parse_timestamp_field
from etrans.errors import InvalidInput, NotFound, RetryLater, UpstreamUnavailable
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from etrans.app.bus import MessageBus
    from etrans.app.ports import SuppressionStore
    from etrans.app.records import SuppressionPage

log = get_logger(__name__)
T = TypeVar("T")

# What a user may add by hand: hard bounces are the delivery logs' to report.
ADDABLE_REASONS = (SuppressionReason.MANUAL, SuppressionReason.COMPLAINT)
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True)
class ListSuppressions:
    user_id: int
    page: int = 1
    per_page: int = 20
    reason: str | None = None
    address: str | None = None  # a substring, compared normalised
    created_at_from: str | None = None
    created_at_to: str | None = None


@dataclass(frozen=True)
class AddSuppression:
    user_id: int
    email: str
    reason: str = SuppressionReason.MANUAL


@dataclass(frozen=True)
class RemoveSuppression:
    user_id: int
    email: str  # as given in the path (URL-decoded), normalised here


@dataclass(frozen=True)
class AddedSuppression:
    entry: Suppression
    created: bool  # False: the address was listed already, ``entry`` is the existing one


@dataclass(frozen=True)
class SuppressionDeps:
    store: SuppressionStore


async def _answer(call: Awaitable[T]) -> T:
    try:
        return await call
    except RetryLater as exc:
        log.warning("suppression list unavailable", error=str(exc))
        raise UpstreamUnavailable("The suppression list is unavailable, try again",
                                  retry_after_seconds=5) from None


def listed_address(text: str) -> str:
    """The key a caller's address is listed under (validated as the email API does)."""
    address = text.strip()
    try:
        validate_email(address)
    except AddressError as exc:
        raise InvalidInput(f"email: {exc}") from None
    return normalise_address(address)


async def list_suppressions(deps: SuppressionDeps, cmd: ListSuppressions) -> SuppressionPage:
    if cmd.reason is not None and cmd.reason not in SuppressionReason.__members__.values():
        raise InvalidInput("reason must be one of "
                           + ", ".join(r.value for r in SuppressionReason))
    start = (parse_timestamp_field(cmd.created_at_from, "created_at_from")
             if cmd.created_at_from else None)
    end = parse_timestamp_field(cmd.created_at_to, "created_at_to") if cmd.created_at_to else None
    if start and end and start > end:
        raise InvalidInput("created_at_from must not be after created_at_to")
    address = normalise_address(cmd.address) if cmd.address else None
    return await _answer(deps.store.list(SuppressionFilter(
        user_id=cmd.user_id, reason=cmd.reason, address=address or None, created_from=start,
        created_to=end, page=cmd.page, per_page=cmd.per_page)))


async def add_suppression(deps: SuppressionDeps, cmd: AddSuppression) -> AddedSuppression:
    if cmd.reason not in ADDABLE_REASONS:
        raise InvalidInput("reason must be one of " + ", ".join(ADDABLE_REASONS))
    address = listed_address(cmd.email)
    entry = Suppression(user_id=cmd.user_id, address=address, reason=cmd.reason)
    created = await _answer(deps.store.add([entry])) == 1
    stored = (await _answer(deps.store.suppressed(cmd.user_id, [address]))).get(address)
    if stored is None:  # removed again in between: answer what was added
        return AddedSuppression(entry, created)
    if created:
        log.info("suppression added", user_id=cmd.user_id, reason=cmd.reason)
    return AddedSuppression(stored, created)


async def remove_suppression(deps: SuppressionDeps, cmd: RemoveSuppression) -> str:
    address = normalise_address(cmd.email)
    if not address or len(address) > MAX_ADDRESS_LENGTH or _UNSTORABLE.search(address):
        # Not syntax-checked beyond this: an entry listed under older rules can still go.
        raise InvalidInput(f"address must be 1..{MAX_ADDRESS_LENGTH} characters without "
                           "control characters")
    if not await _answer(deps.store.remove(cmd.user_id, address)):
        raise NotFound(f"{address} is not on the suppression list")
    log.info("suppression removed", user_id=cmd.user_id)
    return address


def register(bus: MessageBus, deps: SuppressionDeps) -> None:
    bus.register(ListSuppressions, partial(list_suppressions, deps))
    bus.register(AddSuppression, partial(add_suppression, deps))
    bus.register(RemoveSuppression, partial(remove_suppression, deps))
