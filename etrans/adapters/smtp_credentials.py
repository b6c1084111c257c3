"""Reads a user's SMTP credentials from the Redis cache the API writes (hash ``auth``).

Format: :mod:`etrans.adapters.credentials` and ``docs/wire-formats.md``.  A missing field or an
undecryptable value raises :class:`CredentialsUnavailable` (permanent for that email); Redis
itself being unreachable raises :class:`etrans.errors.RetryLater`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.adapters.credentials import AUTH_HASH, CredentialError
from etrans.app.sendmail import CredentialsUnavailable
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from etrans.adapters.credentials import CredentialCipher, SmtpCredentials
    from etrans.adapters.redis_store import RedisClient


class RedisCredentialSource:
    """Implements :class:`etrans.app.ports.CredentialSource`."""

    def __init__(self, redis: RedisClient, cipher: CredentialCipher, *,
                 hash_name: str = AUTH_HASH) -> None:
        self._redis = redis
        self._cipher = cipher
        self.hash_name = hash_name

    async def fetch(self, user_id: str) -> SmtpCredentials:
        if not user_id:
            raise CredentialsUnavailable("530 5.7.0 etrans: the request names no user_id, "
                                         "so no SMTP credentials")
        try:
            value = await self._redis.run(self._redis.client.hget, self.hash_name, user_id)
        except Exception as exc:
            raise RetryLater(f"redis unavailable reading credentials: {exc!r}") from exc
        if value is None:
            raise CredentialsUnavailable(
                f"530 5.7.0 etrans: no SMTP credentials cached for user_id {user_id}")
        try:
            return self._cipher.decrypt(value)
        except CredentialError:
            raise CredentialsUnavailable(
                f"535 5.7.8 etrans: cached SMTP credentials of user_id {user_id} cannot be "
                "decrypted (TOKEN_SECRET/TOKEN_IV mismatch or corrupt value)") from None
