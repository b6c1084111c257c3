"""In-memory fakes of the webhook delivery ports (same Protocols as the real adapters), for the
unit tests of :mod:`etrans.app.webhook_delivery`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import trio

from etrans.app.webhook_delivery_ports import DeliveryAttempt, PendingRetry, PostResult

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from etrans.app.webhook_records import WebhookEndpoint


@dataclass
class FakeDirectory:
    endpoints: list[WebhookEndpoint] = field(default_factory=list)

    async def subscribers(self, user_id: int, event_type: str) -> list[WebhookEndpoint]:
        return [e for e in self.endpoints if e.user_id == user_id
                and (not e.event_types or event_type in e.event_types)]


@dataclass
class FakeStore:
    attempts: list[DeliveryAttempt] = field(default_factory=list)
    retries: dict[tuple[int, str], PendingRetry] = field(default_factory=dict)
    failing_since: dict[int, datetime] = field(default_factory=dict)
    disabled: dict[int, str] = field(default_factory=dict)

    async def record_delivered(self, attempt: DeliveryAttempt) -> None:
        self.attempts.append(attempt)
        self.failing_since.pop(attempt.webhook_id, None)
        self.retries.pop((attempt.webhook_id, attempt.event_id), None)

    async def record_failed(self, attempt: DeliveryAttempt,
                            retry: PendingRetry | None) -> datetime | None:
        self.attempts.append(attempt)
        key = (attempt.webhook_id, attempt.event_id)
        if retry is None:
            self.retries.pop(key, None)
        else:
            self.retries[key] = retry
        if attempt.webhook_id in self.disabled:
            return None
        return self.failing_since.setdefault(attempt.webhook_id, attempt.attempted_at)

    async def postpone(self, retry: PendingRetry) -> None:
        self.retries[(retry.webhook_id, retry.event_id)] = retry

    async def claim_due(self, now: datetime, limit: int,
                        lease_seconds: float) -> Sequence[PendingRetry]:
        due = sorted((r for r in self.retries.values() if r.due_at <= now),
                     key=lambda r: r.due_at)[:limit]
        for retry in due:
            self.retries[(retry.webhook_id, retry.event_id)] = replace(
                retry, due_at=now + timedelta(seconds=lease_seconds))
        return due

    async def drop_retry(self, webhook_id: int, event_id: str) -> None:
        self.retries.pop((webhook_id, event_id), None)

    async def disable(self, webhook_id: int, reason: str) -> bool:
        if webhook_id in self.disabled:
            return False
        self.disabled[webhook_id] = reason
        for key in [k for k in self.retries if k[0] == webhook_id]:
            del self.retries[key]
        return True

    async def retry_backlog(self, now: datetime) -> tuple[int, float]:
        due = min((r.due_at for r in self.retries.values()), default=now)
        return len(self.retries), max(0.0, (now - due).total_seconds())

    async def aclose(self) -> None:
        pass


@dataclass
class FakeTransport:
    """Answers with ``answer(url)`` (a status code, or an error string); records each call.
    ``gate``, when set, holds every call until it is set."""

    answer: Callable[[str], int | str] = lambda url: 200
    calls: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    gate: trio.Event | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        self.calls.append((url, body, dict(headers)))
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answer(url)
        if isinstance(answer, str):
            return PostResult(None, answer, 3)
        return PostResult(answer, None, 3)


@dataclass
class FakePublisher:
    records: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)

    async def publish(self, topic: str, value: bytes | None, key: bytes | None = None,
                      headers: Any = None) -> None:
        self.records.append((topic, value, key))


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
