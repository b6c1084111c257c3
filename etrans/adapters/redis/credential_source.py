"""Reads a user's SMTP credentials from the Redis cache the API writes (hash ``auth``).

Format: :mod:`etrans.adapters.crypto.credentials` and ``docs/wire-formats.md``.  A missing field
or an undecryptable value raises :class:`CredentialsUnavailable` (permanent for that email); Redis
itself being unreachable raises :class:`etrans.errors.RetryLater`.

Decrypted credentials are kept in memory for ``cache_seconds`` (default
:data:`DEFAULT_CACHE_SECONDS`): credentials rotated in Redis are used by the sendmail worker
at most that many seconds later.  Missing or undecryptable values are never kept: the next
message of that user reads Redis again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from etrans.adapters.crypto.credentials import AUTH_HASH, CredentialError
from etrans.app.sendmail import CredentialsUnavailable
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from etrans.adapters._net.redis_trio import TrioRedis
    from etrans.adapters.crypto.credentials import CredentialCipher, SmtpCredentials

DEFAULT_CACHE_SECONDS = 5.0
_MAX_CACHED_USERS = 10_000


class RedisCredentialSource:
    """Implements :class:`etrans.app.ports.CredentialSource`."""

    def __init__(self, redis: TrioRedis, cipher: CredentialCipher, *,
                 hash_name: str = AUTH_HASH,
                 cache_seconds: float = DEFAULT_CACHE_SECONDS) -> None:
        self._redis = redis
        self._cipher = cipher
        self.hash_name = hash_name
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, SmtpCredentials]] = {}

    async def fetch(self, user_id: str) -> SmtpCredentials:
        if not user_id:
            raise CredentialsUnavailable("530 5.7.0 etrans: the request names no user_id, "
                                         "so no SMTP credentials")
        now = time.monotonic()
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            value = await self._redis.execute("HGET", self.hash_name, user_id)
        except Exception as exc:
            raise RetryLater(f"redis unavailable reading credentials: {exc!r}") from exc
        if value is None:
            self._cache.pop(user_id, None)
            raise CredentialsUnavailable(
                f"530 5.7.0 etrans: no SMTP credentials cached for user_id {user_id}")
        try:
            credentials = self._cipher.decrypt(value)
        except CredentialError:
            self._cache.pop(user_id, None)
            raise CredentialsUnavailable(
                f"535 5.7.8 etrans: cached SMTP credentials of user_id {user_id} cannot be "
                "decrypted (TOKEN_SECRET/TOKEN_IV mismatch or corrupt value)") from None
        if self.cache_seconds > 0:
            if len(self._cache) >= _MAX_CACHED_USERS:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= _MAX_CACHED_USERS:
                    self._cache.clear()
            self._cache[user_id] = (now + self.cache_seconds, credentials)
        return credentials
