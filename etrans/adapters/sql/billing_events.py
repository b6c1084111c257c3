"""Subscription-change events on KAFKA_BILLING_TOPIC (format: ``docs/wire-formats.md``).

An event is an ``email_outbox`` row written in the SAME transaction as the subscription change
(:class:`BillingEventOutbox`, used by
:class:`etrans.adapters.sql.subscriptions_repo.SqlSubscriptions`); the outbox relay
(:mod:`etrans.adapters.sql.outbox`, any topic) publishes it.  So a committed change is announced
even when the broker is down at that moment (published once it is back), and no event announces a
change that was rolled back.  One JSON object per change, keyed by the domain id so
that a domain's events stay in order.  With no KAFKA_BILLING_TOPIC, no row is written.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import insert

from etrans.adapters.sql.usend import EmailOutbox
from etrans.observability import get_logger

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = get_logger(__name__)

EVENT_VERSION = 1


def billing_event(*, event: str, user_id: int, domain_id: int, pack_code: str | None,
                  previous_pack_code: str | None, kind: str, now: datetime | None = None
                  ) -> dict[str, object]:
    return {
        "version": EVENT_VERSION,
        "event_id": uuid.uuid4().hex,
        "event": event,
        "occurred_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat()
        .replace("+00:00", "Z"),
        "user_id": str(user_id),
        "domain_id": domain_id,
        "kind": kind,
        "pack_code": pack_code,
        "previous_pack_code": previous_pack_code,
    }


@dataclass(frozen=True)
class BillingEventOutbox:
    topic: str | None = None

    def add(self, session: Session, *, event: str, user_id: int, domain_id: int,
            pack_code: str | None, previous_pack_code: str | None, kind: str) -> None:
        """Queue the event in ``session``'s transaction (committed, or not, with the change)."""
        body = billing_event(event=event, user_id=user_id, domain_id=domain_id,
                             pack_code=pack_code, previous_pack_code=previous_pack_code, kind=kind)
        if not self.topic:
            log.debug("billing event not published (no KAFKA_BILLING_TOPIC)", billing_event=body)
            return
        session.execute(insert(EmailOutbox).values(
            topic=self.topic, key=str(domain_id),
            payload=json.dumps(body, separators=(",", ":")).encode(),
            message_id=None, created_at=datetime.now(UTC)))
