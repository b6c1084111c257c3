"""Redis records of emails already handed to the SMTP server (or finally rejected).

Key ``etrans:sendmail:done:<message_id>`` -> ``delivered`` or ``rejected``, with a TTL (default 7
days, see ``SENDMAIL_DELIVERED_TTL_SECONDS``).  The sendmail task writes the record after the
SMTP server accepted the message (or after the Reject event was published) and *before* it
returns, so before the pipeline can commit the offset; a redelivered message whose record exists
is skipped.  After a crash, only messages sent but not yet recorded can go out twice: at most the
ones in flight.  ``docs/wire-formats.md`` documents the keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.adapters._net.redis_trio import encode_command
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from etrans.adapters._net.redis_trio import TrioRedis

KEY_PREFIX = "etrans:sendmail:done:"
DEFAULT_TTL_SECONDS = 7 * 24 * 3600

DELIVERED = "delivered"
REJECTED = "rejected"


class RedisDeliveryMarks:
    """Implements :class:`etrans.app.ports.DeliveryMarks` on Redis.

    One command per call, on the Trio-native client: the commands of concurrent workers share a
    round trip (automatic pipelining), and each worker still waits for its own reply, so a mark
    is stored when :meth:`record` returns."""

    def __init__(self, redis: TrioRedis, *, ttl_seconds: int = DEFAULT_TTL_SECONDS,
                 prefix: str = KEY_PREFIX) -> None:
        if ttl_seconds < 1:
            raise ValueError("ttl_seconds must be positive")
        self._redis = redis
        self.ttl_seconds = ttl_seconds
        self.prefix = prefix
        # The commands in RESP, built around the key: two per message, always the same shape.
        self._prefix = prefix.encode()
        self._ttl_tail = encode_command(("EX", ttl_seconds)).partition(b"\r\n")[2]

    def key(self, message_id: str) -> str:
        return self.prefix + message_id

    def _key_argument(self, message_id: str) -> bytes:
        key = self._prefix + message_id.encode()
        return b"$%d\r\n%s\r\n" % (len(key), key)

    async def outcome(self, message_id: str) -> str | None:
        """``delivered``/``rejected`` when this message was finished before, else None."""
        command = b"*2\r\n$3\r\nGET\r\n" + self._key_argument(message_id)
        try:
            value = await self._redis.execute_encoded(command)
        except Exception as exc:
            raise RetryLater(f"redis unavailable reading delivery mark: {exc!r}") from exc
        return None if value is None else value.decode()

    async def record(self, message_id: str, outcome: str) -> None:
        """Store the outcome (SET key outcome EX ttl); returns once Redis confirmed it."""
        value = outcome.encode()
        command = (b"*5\r\n$3\r\nSET\r\n" + self._key_argument(message_id)
                   + b"$%d\r\n%s\r\n" % (len(value), value) + self._ttl_tail)
        try:
            await self._redis.execute_encoded(command)
        except Exception as exc:
            raise RetryLater(f"redis unavailable writing delivery mark: {exc!r}") from exc
