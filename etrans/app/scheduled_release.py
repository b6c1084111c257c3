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

The sending domain is checked again too (with ``domains``: the send path's
:class:`~etrans.app.ports.SendingDomains`): an email whose domain was deleted, or is no longer
verified, is not handed to the delivery queue - it fails (status ``failed`` with the reason, GET
/emails/{id} ``failure_reason``; an ``email.failed`` event; its row marked failed, never retried),
as acceptance would have refused it (400 "Domain not verified").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from etrans.app.records import SuppressedRecipient
from etrans.app.send_suppressions import recipients, suppressed_events
from etrans.domain.addresses import parse_address
from etrans.domain.events import encode_event
from etrans.domain.status_events import failed_event
from etrans.domain.suppressions import normalise_address

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from etrans.app.ports import SendingDomains, SuppressionLookup

# The email.failed event's reply code: the outbox relay's for an email it could never publish
# (etrans.adapters.sql.outbox.REJECT_CODE).
FAILED_CODE = "554 5.3.4"


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
    from_address: str = ""  # its sending domain's name is checked again (``domains``)


@dataclass(frozen=True)
class Release:
    """What releasing one due row does beyond making it pending (:class:`ReleaseScreen`)."""

    row_id: int
    message_id: str
    suppressed: tuple[SuppressedRecipient, ...]  # newly: outcomes ``suppressed`` to write
    events: tuple[tuple[str, bytes, bytes], ...]  # their email.suppressed outbox records
    nothing_left: bool  # status suppressed, the send request's row deleted
    # Not sent at all: status failed with this response, the row failed (``events``: its
    # email.failed).
    failure: str | None = None

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
    domains: SendingDomains | None = None  # None: the sending domain is not checked again

    async def screen(self, due: Sequence[DueEmail]) -> list[Release]:
        """The due rows that fail (their sending domain gone or unverified) or have recipients
        newly on their user's list (one lookup per user); the rows not returned are released as
        they are."""
        failed = await self._domain_failures(due)
        now = self.clock()
        releases = [self._failed(email, failed[email.row_id], now) for email in due
                    if email.row_id in failed]
        due = [email for email in due if email.row_id not in failed]
        addresses: dict[int, set[str]] = {}
        for email in due:
            addresses.setdefault(email.user_id, set()).update(
                a for a in recipients(_fields(email)) if a not in email.suppressed)
        listed = {user_id: await self.lookup.suppressed(user_id, sorted(wanted))
                  for user_id, wanted in addresses.items() if wanted}
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

    async def _domain_failures(self, due: Sequence[DueEmail]) -> dict[int, str]:
        """Row id -> why, for the emails whose sending domain is gone or unverified (one
        look-up per user and domain)."""
        if self.domains is None:
            return {}
        problems: dict[tuple[int, str], str | None] = {}
        failed = {}
        for email in due:
            name = parse_address(email.from_address).domain.lower()
            key = (email.user_id, name)
            if key not in problems:
                domain = await self.domains.find(email.user_id, name)
                problems[key] = (f"the sending domain {name} was deleted" if domain is None
                                 else f"the sending domain {name} is not verified"
                                 if not domain.verified else None)
            problem = problems[key]
            if problem is not None:
                failed[email.row_id] = problem
        return failed

    def _failed(self, email: DueEmail, problem: str, now: datetime) -> Release:
        response = f"etrans: not sent: {problem} while the email was scheduled"
        events: tuple[tuple[str, bytes, bytes], ...] = ()
        if self.events_topic is not None:
            events = ((self.events_topic, *encode_event(failed_event(
                email.message_id, email.user_id, f"{FAILED_CODE} {response}", now))),)
        return Release(email.row_id, email.message_id, (), events, nothing_left=False,
                       failure=response)


def _fields(email: DueEmail) -> dict[str, list[str]]:
    return {"to": list(email.to), "cc": list(email.cc), "bcc": list(email.bcc)}
