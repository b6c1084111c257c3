"""Structured logging: JSON lines for machines, readable lines on a terminal.

Every line carries ``service`` (the subcommand).  Worker code binds ``topic/partition/offset/
message_id`` once per message with :func:`structlog.contextvars.bound_contextvars`.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import EventDict, WrappedLogger

# Keys whose values are never written, whatever logs them.
SECRET_KEYS = frozenset(
    {"password", "token", "token_secret", "token_iv", "api_key", "key", "secret", "authorization",
     "smtp_password", "jwt", "cookie"}
)


def _redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for name in list(event):
        if name.lower() in SECRET_KEYS:
            event[name] = "**********"
    return event


class ErrorSink(Protocol):
    """Where a task boundary reports an exception besides logging it (the Sentry reporter,
    etrans.adapters.http.sentry_reporter, implements it); workers depend on this, not on it."""

    def capture(self, exc: BaseException, **context: object) -> bool:
        """Report ``exc`` with ``context``; False when not sent (disabled or throttled)."""
        ...


# Where error lines with an exception are also sent (the Sentry reporter when SENTRY_DSN is set).
_error_sinks: list[Callable[..., object]] = []


def forward_errors(sink: Callable[..., object]) -> None:
    """Also hand every ``error``/``critical`` line that carries an exception to
    ``sink(exc, event=..., **fields)`` (after redaction): the API's "unhandled error" and the
    workers' task-boundary failures reach Sentry without each call site knowing about it."""
    _error_sinks.append(sink)


def _forward_errors(_: WrappedLogger, method: str, event: EventDict) -> EventDict:
    if _error_sinks and method in ("error", "critical", "exception"):
        exc = event.get("exc_info")
        if isinstance(exc, BaseException):
            fields = {k: v for k, v in event.items()
                      if k not in ("exc_info", "event") and isinstance(v, str | int | float)}
            for sink in _error_sinks:
                sink(exc, event=str(event.get("event")), **fields)
    return event


def configure(service: str, *, level: str = "INFO", json: bool | None = None,
              process: int | None = None) -> None:
    """Configure structlog (and stdlib logging, for libraries) for one process; ``process``:
    its index among the processes of one subcommand (``--processes``), on every line."""
    if json is None:
        json = not sys.stdout.isatty()

    def add_service(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        # Also on lines logged from threads and by libraries, where no contextvar is bound.
        event.setdefault("service", service)
        if process is not None:
            event.setdefault("process", process)
        return event

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_service,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        _forward_errors,
    ]
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per line (the line and its newline together; print() writes them apart
        # when stdout is unbuffered), so the lines of processes sharing stdout stay whole.
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries log through stdlib logging: warnings and above go to stderr, rendered like our
    # own lines (JSON with "service" when not on a terminal).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = (
        structlog.get_logger(name) if name else structlog.get_logger())
    return logger
