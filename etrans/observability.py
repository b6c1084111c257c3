"""Structured logging: JSON lines for machines, readable lines on a terminal.

Every line carries ``service`` (the subcommand).  Worker code binds ``topic/partition/offset/
message_id`` once per message with :func:`structlog.contextvars.bound_contextvars`.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
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


def configure(service: str, *, level: str = "INFO", json: bool | None = None) -> None:
    """Configure structlog (and stdlib logging, for libraries) for one process."""
    if json is None:
        json = not sys.stdout.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
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
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries log through stdlib logging: send warnings and above to stderr, plainly.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name) if name else structlog.get_logger()
