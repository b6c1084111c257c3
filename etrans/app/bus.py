"""A small command bus: one dict maps each command type to the handler that executes it.

Handlers are plain async callables taking the command; dependencies are bound when the bus is
built (:mod:`etrans.bootstrap`), so tests can build a bus with fakes in a few lines.  A failed
command raises (an :class:`~etrans.errors.AppError` for the API to map).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[Any], Awaitable[Any]]


class MessageBus:
    def __init__(self, handlers: dict[type, Handler] | None = None) -> None:
        self._handlers: dict[type, Handler] = dict(handlers or {})

    def register(self, command_type: type, handler: Handler) -> None:
        if command_type in self._handlers:
            raise ValueError(f"{command_type.__name__} already has a handler")
        self._handlers[command_type] = handler

    async def handle(self, command: Any) -> Any:
        try:
            handler = self._handlers[type(command)]
        except KeyError:
            raise LookupError(f"no handler for {type(command).__name__}") from None
        return await handler(command)
