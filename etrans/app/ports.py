"""Ports: the Protocols that use cases and the API depend on; adapters implement them."""

from __future__ import annotations

from typing import Protocol


class HealthProbe(Protocol):
    """A dependency that can say whether it answers.  ``check`` raises when it does not."""

    name: str

    async def check(self) -> None: ...
