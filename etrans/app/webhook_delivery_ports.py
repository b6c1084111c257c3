"""Ports and records of webhook *delivery* (``etrans webhooks``): what the worker writes about
each attempt and how it reaches an endpoint.  The webhooks themselves (who subscribes to what)
are read through :class:`etrans.app.webhook_ports.WebhookDirectory`, which the API side owns.

Adapters: :mod:`etrans.adapters.sql.webhook_deliveries` (PostgreSQL and, in ``etrans dev``,
SQLite: the same SQLAlchemy Core statements; claiming uses ``FOR UPDATE SKIP LOCKED`` where the
database has it) and :mod:`etrans.adapters.http.webhook_client` (httpx).  Both pass
``tests/contract/test_webhook_delivery_store_contract.py`` / the integration tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime


@dataclass(frozen=True)
class DeliveryAttempt:
    """One POST to an endpoint (a ``webhook_deliveries`` row).  ``status_code`` None: no
    answer (timeout, connection refused, refused address); ``error`` says why it failed."""

    webhook_id: int
    event_id: str
    event_type: str
    attempt: int  # 1 for the first attempt of this event at this endpoint
    status_code: int | None
    error: str | None
    latency_ms: int | None
    attempted_at: datetime


@dataclass(frozen=True)
class PendingRetry:
    """An event waiting to be tried again at one endpoint (a ``webhook_retries`` row).
    ``attempt`` counts the attempts made so far; ``event`` is the events-topic record value, so
    a retry needs nothing else to be delivered."""

    webhook_id: int
    event_id: str
    event: bytes
    attempt: int
    due_at: datetime
    last_error: str | None = None


@dataclass(frozen=True)
class PostResult:
    """What an endpoint answered: a status code, or an error and no status code."""

    status_code: int | None
    error: str | None
    latency_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookTransport(Protocol):
    """POSTs one body to one URL; never raises for what the endpoint or the network did (a
    timeout, a refused connection, a non-public address: :class:`PostResult` with the error)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult: ...


class EmailTraces(Protocol):
    """The trace context of an email (``email_messages.traceparent``), for the retries: the
    retry queue keeps an event's value but not its record's headers."""

    async def traceparent(self, user_id: int, message_id: str) -> str | None:
        """The ``traceparent`` the user's email was sent with; None: unknown, or none."""
        ...


class WebhookDeliveryStore(Protocol):
    """The worker's writes: attempts, the retry queue, and each endpoint's health.

    Every method raises :class:`etrans.errors.RetryLater` when the database is unavailable.
    """

    async def record_delivered(self, attempt: DeliveryAttempt) -> None:
        """The attempt, and the endpoint is healthy again (``failing_since`` cleared); the
        retry of this event at this endpoint, if any, is gone."""

    async def record_failed(self, attempt: DeliveryAttempt,
                            retry: PendingRetry | None) -> datetime | None:
        """The attempt; the retry (``None``: given up, the retry row is removed) replaces any
        retry of the same event at the same endpoint; the endpoint is failing since now unless
        it already was.  Returns since when it fails (None: the webhook no longer exists or is
        disabled)."""

    async def postpone(self, retry: PendingRetry) -> None:
        """Schedule ``retry`` without an attempt (the endpoint was busy)."""

    async def claim_due(self, now: datetime, limit: int,
                        lease_seconds: float) -> Sequence[PendingRetry]:
        """Up to ``limit`` retries due at ``now``, oldest first, made invisible to other
        claimers for ``lease_seconds`` (their ``due_at`` moves; a process that dies holding
        them lets them come back then).  Concurrent claimers never get the same row."""

    async def drop_retry(self, webhook_id: int, event_id: str) -> None:
        """Forget a retry (its webhook is gone, disabled or no longer subscribed)."""

    async def disable(self, webhook_id: int, reason: str) -> bool:
        """Disable an enabled endpoint and drop its retries; True when this call disabled it
        (False: already disabled, or gone)."""

    async def retry_backlog(self, now: datetime) -> tuple[int, float]:
        """The retries waiting, and how many seconds before ``now`` the earliest is due (0:
        none is due yet): the metrics' read, two index lookups and an index count."""

    async def aclose(self) -> None:
        """Close the store's own connections (not the database's pool)."""
