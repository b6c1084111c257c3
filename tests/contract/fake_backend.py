"""The in-memory fakes of ``tests/unit/fakes_sending.py`` as a contract backend: one instance
of each per test, shared by every adapter asked for (as a Redis is shared by its clients)."""

from __future__ import annotations

from tests.unit.fakes_sending import (
    FakeApiKeyCache,
    FakeCredentialCache,
    FakeEmailStore,
    FakeIdempotencyStore,
    FakeQuota,
)


class FakeBackend:
    name = "fake"

    def __init__(self) -> None:
        self._quota = FakeQuota()
        self._keys = FakeApiKeyCache()
        self._idempotency = FakeIdempotencyStore()
        self._credentials = FakeCredentialCache()

    def quota(self) -> FakeQuota:
        return self._quota

    def api_key_cache(self) -> FakeApiKeyCache:
        return self._keys

    def idempotency(self) -> FakeIdempotencyStore:
        return self._idempotency

    def credential_cache(self) -> FakeCredentialCache:
        return self._credentials


class FakeUsendBackend:
    """The EmailStore fake (``.repo``), as :class:`tests.contract.usend_backends.UsendBackend`."""

    name = "fake"

    def __init__(self) -> None:
        self.repo = FakeEmailStore()
