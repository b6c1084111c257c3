"""Releasing scheduled emails: the suppression list is checked again when their time comes.

A scheduled email was checked against its user's suppression list when it was accepted
(:mod:`etrans.app.emails`); an address that bounced hard, complained or was added by hand while
it waited must not be mailed either.  When the outbox store releases due rows
(:meth:`~etrans.adapters.sql.outbox_store.OutboxStore.release_due`), within the transaction
that holds them, it asks :class:`ReleaseScreen` what each becomes, by the same rules as
acceptance (:mod:`etrans.app.send_suppressions`: the same normalisation, one lookup per user):

- nothing newly listed: released as it is (the common case: no payload is read);
- some recipients listed: released without them (each field keeps its role), and each gets a
  recipient outcome ``suppressed`` with the reason and an ``email.suppressed`` event;
- every recipient listed: status ``suppressed``, the send request's outbox row deleted (never
  published), the outcomes and events as above.

A lookup that fails raises (:class:`~etrans.errors.RetryLater`): the store rolls back, the rows
stay due and the next release tries again; nothing is sent unchecked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from etrans.app.records import SuppressedRecipient
from etrans.app.send_suppressions import recipients, suppressed_events
from etrans.domain.addresses import parse_address
from etrans.domain.suppressions import normalise_address

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from etrans.app.ports import SuppressionLookup


@dataclass(frozen=True)
class DueEmail:
    """A due outbox row of a scheduled email, as its ``email_messages`` row has it."""

    row_id: int
    message_id: str
    user_id: int
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    # The normalised recipients already left out when it was accepted (their outcomes exist).
    suppressed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Release:
    """What releasing one due row does beyond making it pending (:class:`ReleaseScreen`)."""

    row_id: int
    message_id: str
    suppressed: tuple[SuppressedRecipient, ...]  # newly: outcomes ``suppressed`` to write
    events: tuple[tuple[str, bytes, bytes], ...]  # their email.suppressed outbox records
    nothing_left: bool  # status suppressed, the send request's row deleted

    def payload(self, sent: bytes) -> bytes:
        """The send request (``docs/wire-formats.md``) without the suppressed recipients."""
        left_out = {normalise_address(s.email) for s in self.suppressed}
        message = json.loads(sent)
        request = message["payload"]
        for name in ("recipients", "cc", "bcc"):
            request[name] = [a for a in request.get(name) or ()
                             if normalise_address(parse_address(a).email) not in left_out]
        # As etrans.app.emails writes it.
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ReleaseScreen:
    """Built by :mod:`etrans.bootstrap` with the send path's lookup and events topic."""

    lookup: SuppressionLookup
    events_topic: str | None = None  # KAFKA_EVENTS_TOPIC (None: no email.suppressed events)
    clock: Callable[[], datetime] = field(default=_utcnow)

    async def screen(self, due: Sequence[DueEmail]) -> list[Release]:
        """The due rows with recipients newly on their user's list (one lookup per user); the
        rows not returned are released as they are."""
        addresses: dict[int, set[str]] = {}
        for email in due:
            addresses.setdefault(email.user_id, set()).update(
                a for a in recipients(_fields(email)) if a not in email.suppressed)
        listed = {user_id: await self.lookup.suppressed(user_id, sorted(wanted))
                  for user_id, wanted in addresses.items() if wanted}
        now = self.clock()
        releases = []
        for email in due:
            found = listed.get(email.user_id) or {}
            every = recipients(_fields(email))
            newly = tuple(SuppressedRecipient(bare, found[key].reason)
                          for key, bare in every.items()
                          if key in found and key not in email.suppressed)
            if not newly:
                continue
            left = set(every) - email.suppressed - {normalise_address(s.email) for s in newly}
            releases.append(Release(
                email.row_id, email.message_id, newly,
                suppressed_events(self.events_topic, email.message_id, email.user_id, newly,
                                  now),
                nothing_left=not left))
        return releases


def _fields(email: DueEmail) -> dict[str, list[str]]:
    return {"to": list(email.to), "cc": list(email.cc), "bcc": list(email.bcc)}
