"""The variables of ``etrans webhooks`` (KAFKA_EVENTS_TOPIC, WEBHOOKS_*; ``docs/webhooks.md``,
"Settings"), read for ``webhooks`` and ``dev``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from etrans.settings.reader import Reader

DEFAULT_EVENTS_TOPIC = "email-events"
DEFAULT_WEBHOOKS_GROUP_ID = "etrans-webhooks"
# The schedule of etrans.domain.webhook_retries (settings may not import the domain; a unit test
# keeps the two equal): 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h, then every 6 h.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600)
DEFAULT_MAX_ATTEMPTS = 19
DEFAULT_DISABLE_AFTER = 3 * 24 * 3600.0


@dataclass(frozen=True)
class WebhooksOptions:
    events_topic: str = DEFAULT_EVENTS_TOPIC  # KAFKA_EVENTS_TOPIC
    group_id: str = DEFAULT_WEBHOOKS_GROUP_ID  # WEBHOOKS_GROUP_ID
    workers: int = 10  # WEBHOOKS_WORKERS: events attempted at once from the topic
    timeout_seconds: float = 10.0  # connect, write and read, each
    endpoint_concurrency: int = 4  # attempts in flight per endpoint
    busy_retry_seconds: float = 1.0  # an event refused by a busy endpoint waits this long
    retry_delays: tuple[float, ...] = field(default=DEFAULT_RETRY_DELAYS)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    disable_after_seconds: float = DEFAULT_DISABLE_AFTER
    retry_poll_seconds: float = 1.0  # how often the retry queue is looked at
    allow_private_urls: bool = False


def read_webhooks(r: Reader) -> WebhooksOptions:
    return WebhooksOptions(
        events_topic=r.text("KAFKA_EVENTS_TOPIC", DEFAULT_EVENTS_TOPIC),
        group_id=r.text("WEBHOOKS_GROUP_ID", DEFAULT_WEBHOOKS_GROUP_ID),
        workers=r.integer("WEBHOOKS_WORKERS", 10, minimum=1, maximum=1000),
        timeout_seconds=r.number("WEBHOOKS_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        endpoint_concurrency=r.integer("WEBHOOKS_ENDPOINT_CONCURRENCY", 4, minimum=1,
                                       maximum=1000),
        busy_retry_seconds=r.number("WEBHOOKS_BUSY_RETRY_SECONDS", 1.0, minimum=0.01),
        retry_delays=_delays(r),
        max_attempts=r.integer("WEBHOOKS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, minimum=1,
                               maximum=1000),
        disable_after_seconds=r.number("WEBHOOKS_DISABLE_AFTER_SECONDS", DEFAULT_DISABLE_AFTER,
                                       minimum=0.0),
        retry_poll_seconds=r.number("WEBHOOKS_RETRY_POLL_SECONDS", 1.0, minimum=0.01),
        allow_private_urls=r.boolean("WEBHOOKS_ALLOW_PRIVATE_URLS", False),
    )


def _delays(r: Reader) -> tuple[float, ...]:
    raw = r.raw("WEBHOOKS_RETRY_DELAYS")
    if raw is None:
        return DEFAULT_RETRY_DELAYS
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        delays = ()
    if not delays or any(d <= 0 for d in delays):
        r.problems.append("WEBHOOKS_RETRY_DELAYS must be positive seconds separated by commas, "
                          f"got {raw!r}")
        return DEFAULT_RETRY_DELAYS
    return delays
