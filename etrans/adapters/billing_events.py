"""Subscription-change events on KAFKA_BILLING_TOPIC (format: ``docs/wire-formats.md``).

One JSON object per change, keyed by the domain id so that a domain's events stay in order.
With no KAFKA_BILLING_TOPIC configured, events are not published (logged at debug level).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.ports import EventPublisher

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


class KafkaBillingEvents:
    def __init__(self, producer: EventPublisher | None, topic: str | None) -> None:
        self._producer = producer
        self._topic = topic

    async def subscription_changed(self, *, event: str, user_id: int, domain_id: int,
                                   pack_code: str | None, previous_pack_code: str | None,
                                   kind: str) -> None:
        body = billing_event(event=event, user_id=user_id, domain_id=domain_id,
                             pack_code=pack_code, previous_pack_code=previous_pack_code, kind=kind)
        if self._producer is None or not self._topic:
            log.debug("billing event not published (no KAFKA_BILLING_TOPIC)", billing_event=body)
            return
        await self._producer.publish(
            self._topic, json.dumps(body, separators=(",", ":")).encode(),
            key=str(domain_id).encode())
