"""Error reporting to Sentry when ``SENTRY_DSN`` is set (sentry-sdk: the optional extra ``sentry``).

sentry-sdk is imported only when a DSN is given; without the package a warning says how to
install it and errors are only logged.  :class:`ErrorReporter` is safe to call in every case.
"""

from __future__ import annotations

import time
from typing import Any

from etrans.observability import get_logger

log = get_logger(__name__)


class ErrorReporter:
    """``capture(exc, **context)`` sends to Sentry when it was initialised, else does nothing.

    An outage makes every batch fail the same way on every retry: one event per exception type
    per ``repeat_seconds`` reaches Sentry, the rest are only logged (by the pipeline).
    """

    def __init__(self, repeat_seconds: float = 60.0) -> None:
        self._sdk: Any = None
        self.repeat_seconds = repeat_seconds
        self._last_sent: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self._sdk is not None

    @classmethod
    def start(cls, dsn: str | None, *, service: str, release: str | None = None) -> ErrorReporter:
        reporter = cls()
        if not dsn:
            return reporter
        try:
            import sentry_sdk
        except ImportError:
            log.warning("SENTRY_DSN is set but sentry-sdk is not installed; errors are only logged",
                        hint="pip install 'etrans[sentry]'")
            return reporter
        sentry_sdk.init(dsn=dsn, release=release, server_name=None, traces_sample_rate=0.0,
                        default_integrations=True)
        sentry_sdk.set_tag("service", service)
        reporter._sdk = sentry_sdk
        log.info("sentry enabled", service=service)
        return reporter

    def capture(self, exc: BaseException, **context: object) -> bool:
        """Send ``exc`` (with ``context`` as extras); False when disabled or throttled."""
        if self._sdk is None:
            return False
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        now = time.monotonic()
        last = self._last_sent.get(kind)
        if last is not None and now - last < self.repeat_seconds:
            return False
        self._last_sent[kind] = now
        with self._sdk.new_scope() as scope:
            for key, value in context.items():
                scope.set_extra(key, value)
            self._sdk.capture_exception(exc)
        return True

    def flush(self, timeout: float = 2.0) -> None:
        if self._sdk is not None:
            self._sdk.flush(timeout=timeout)
