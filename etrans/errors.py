"""The exception hierarchy of etrans.

::

    EtransError
    ├── ConfigError             invalid or missing configuration (exit status 2)
    ├── AppError                a use case refused: mapped to an HTTP status by the API
    │   ├── InvalidInput        400
    │   ├── Unauthorized        401
    │   ├── Forbidden           403
    │   ├── NotFound            404
    │   ├── Conflict            409
    │   └── UpstreamUnavailable 502/503 (an external service failed)
    └── ProcessingError         a worker task failed on one message
        ├── RetryLater          transient: the same message may succeed later
        └── PoisonMessage       permanent: never retried, committed past (and dead-lettered)
"""

from __future__ import annotations


class EtransError(Exception):
    """Base of every error etrans raises on purpose."""


class ConfigError(EtransError):
    """Configuration problems, all of them at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))

    def render(self) -> str:
        lines = ["invalid configuration:"] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class AppError(EtransError):
    status_code = 400

    def __init__(self, detail: object) -> None:
        self.detail = detail
        super().__init__(str(detail))


class InvalidInput(AppError):
    status_code = 400


class Unauthorized(AppError):
    status_code = 401


class Forbidden(AppError):
    status_code = 403


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class UpstreamUnavailable(AppError):
    status_code = 503

    def __init__(self, detail: object, *, retry_after_seconds: int | None = None) -> None:
        super().__init__(detail)
        # Sent as Retry-After: the same request may succeed then (a dependency briefly down).
        self.retry_after_seconds = retry_after_seconds


class ProcessingError(EtransError):
    """A worker task could not process one message."""


class RetryLater(ProcessingError):
    """Transient failure: the message may succeed if tried again."""


class PoisonMessage(ProcessingError):
    """Permanent failure: the message is undecodable or invalid and must never be retried."""
