"""When a failed webhook delivery is tried again, and when an endpoint is given up on.

The default schedule (``docs/webhooks.md``, "Retries"): after the first attempt fails, the
event is tried again 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h and 6 h later, then every 6 h;
19 attempts in all, the last about 2 days 23 hours after the first.  An endpoint whose
attempts have all failed for longer than ``disable_after`` (default 3 days) is disabled.
Both are settings (``WEBHOOKS_RETRY_DELAYS``, ``WEBHOOKS_MAX_ATTEMPTS``,
``WEBHOOKS_DISABLE_AFTER_SECONDS``); the tests use fractions of a second.

Pure rules, standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600)
DEFAULT_MAX_ATTEMPTS = 19
DEFAULT_DISABLE_AFTER = 3 * 24 * 3600.0


@dataclass(frozen=True)
class RetrySchedule:
    """``delays[n-1]`` seconds after failed attempt ``n``; the last delay repeats; no attempt
    after ``max_attempts``."""

    delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    disable_after: float = DEFAULT_DISABLE_AFTER

    def __post_init__(self) -> None:
        if not self.delays or any(d <= 0 for d in self.delays):
            raise ValueError("retry delays must be positive, at least one")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay_after(self, attempt: int) -> float | None:
        """Seconds to wait after failed attempt ``attempt`` (1-based); None: give up."""
        if attempt >= self.max_attempts:
            return None
        return self.delays[min(attempt, len(self.delays)) - 1]

    def total_span(self) -> float:
        """Seconds from the first attempt to the last, when all fail."""
        return sum(self.delay_after(n) or 0.0 for n in range(1, self.max_attempts))

    def should_disable(self, failing_since: datetime, now: datetime) -> bool:
        """Whether an endpoint failing since ``failing_since`` (without a success) is given
        up on."""
        return now - failing_since > timedelta(seconds=self.disable_after)
