"""Ports: the Protocols that use cases and the API depend on; adapters implement them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from etrans.domain.delivery_log import StatusChange


class HealthProbe(Protocol):
    """A dependency that can say whether it answers.  ``check`` raises when it does not."""

    name: str

    async def check(self) -> None: ...


# -- fetchlog (delivery logs) ---------------------------------------------------------------------

class LogInsertResult(Protocol):
    inserted: int
    duplicates: int  # already stored: a replayed or retried event, not an error


class LogDocumentWriter(Protocol):
    """Stores delivery-log documents idempotently (unique ``event_id``).  Raises
    :class:`etrans.errors.RetryLater` when the store is unavailable: nothing may be committed."""

    async def ensure_indexes(self) -> list[str]: ...

    async def insert(self, documents: Sequence[Mapping[str, Any]]) -> LogInsertResult: ...


class EmailStatusStore(Protocol):
    """Advances ``email_messages.status`` monotonically; returns the number of rows changed."""

    async def apply(self, changes: Sequence[StatusChange]) -> int: ...


# -- sendmail -------------------------------------------------------------------------------------

class CredentialSource(Protocol):
    """The SMTP credentials of a user.  Raises ``CredentialsUnavailable`` (permanent) or
    :class:`etrans.errors.RetryLater` (the store is down)."""

    async def fetch(self, user_id: str) -> Any: ...


class DeliveryMarks(Protocol):
    """Which message ids were already delivered/rejected (``outcome`` -> None when not)."""

    async def outcome(self, message_id: str) -> str | None: ...

    async def record(self, message_id: str, outcome: str) -> None: ...


class MailTransport(Protocol):
    """Sends one message over SMTP; raises ``SmtpFailure`` (transient or permanent)."""

    async def send(self, credentials: Any, sender: str, recipients: Sequence[str],
                   data: bytes) -> Any: ...


class EventPublisher(Protocol):
    """Publishes one record and returns once the broker acknowledged it."""

    async def publish(self, topic: str, value: bytes | None, key: bytes | None = None,
                      headers: Any = None) -> None: ...
