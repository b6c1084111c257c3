"""The Redis stand-in of ``etrans dev``: one local key-value store and the adapters on top of it.

:class:`LocalStore` keeps strings with an optional expiry and hashes in a SQLite file
(``state.sqlite3``), so they survive a restart like Redis data on disk would.  Every operation
holds one lock; :meth:`LocalStore.atomic` groups several into one indivisible step (what the
Redis adapters get from Lua scripts and ``SET NX``).

The adapters implement the same ports, with the same keys and semantics, as the Redis ones:

=========================  =================  ========================================
adapter                    port (app.ports)   Redis original
=========================  =================  ========================================
``LocalCredentialCache``   CredentialCache    ``RedisCredentialCache`` (hash ``auth``)
``LocalCredentialSource``  CredentialSource   ``RedisCredentialSource`` (hash ``auth``)
``LocalApiKeyCache``       ApiKeyCache        ``RedisApiKeyCache``
``LocalQuota``             QuotaCounter       ``RedisQuota``
``LocalIdempotencyStore``  IdempotencyStore   ``RedisIdempotencyStore``
``LocalDeliveryMarks``     DeliveryMarks      ``RedisDeliveryMarks``
=========================  =================  ========================================

``tests/contract`` runs one suite per port on each pair (and on the unit tests' fakes).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import trio

from etrans.adapters.crypto.credentials import AUTH_HASH, CredentialError
from etrans.adapters.redis.api_key_cache import decode_entry, encode_entry
from etrans.adapters.redis.idempotency import record_key
from etrans.adapters.redis.quota import quota_keys
from etrans.app.records import MISSING, REVOKED, ApiKeyRecord
from etrans.domain.quota import QuotaUsage

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator
    from datetime import datetime
    from pathlib import Path

    from etrans.adapters.crypto.credentials import CredentialCipher, SmtpCredentials
    from etrans.domain.quota import QuotaLimits

P = ParamSpec("P")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS strings (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS hashes (
    name TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (name, field));
"""


class LocalStore:
    """Strings with expiry and hashes, in SQLite, behind one lock (see the module docstring)."""

    name = "store"

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute("DELETE FROM strings WHERE expires_at IS NOT NULL AND expires_at <= ?",
                         (time.time(),))
        self._lock = threading.RLock()
        self._depth = 0
        self.limiter = trio.CapacityLimiter(4)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self.limiter)

    @contextmanager
    def atomic(self) -> Iterator[LocalStore]:
        """Operations inside happen as one step, and are committed together."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if outer:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._db.execute("COMMIT")

    # -- strings ---------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value, expires_at FROM strings WHERE key = ?",
                                   (key,)).fetchone()
        if row is None or (row[1] is not None and row[1] <= time.time()):
            return None
        return str(row[0])

    def set(self, key: str, value: str, *, ttl: float | None = None, nx: bool = False) -> bool:
        """Redis ``SET key value [EX ttl] [NX]``: False when ``nx`` and the key exists."""
        with self.atomic():
            if nx and self.get(key) is not None:
                return False
            expires = time.time() + ttl if ttl is not None else None
            self._db.execute("INSERT INTO strings VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                             " SET value = excluded.value, expires_at = excluded.expires_at",
                             (key, value, expires))
            return True

    def ttl(self, key: str) -> float | None:
        """Redis ``TTL``: seconds left, None for a key without expiry; KeyError when absent."""
        with self._lock:
            row = self._db.execute("SELECT expires_at FROM strings WHERE key = ?",
                                   (key,)).fetchone()
        now = time.time()
        if row is None or (row[0] is not None and row[0] <= now):
            raise KeyError(key)
        return None if row[0] is None else row[0] - now

    def expire(self, key: str, seconds: float) -> bool:
        """Redis ``EXPIRE``: the key now lives ``seconds`` more; False when it does not exist."""
        with self.atomic():
            if self.get(key) is None:
                return False
            self._db.execute("UPDATE strings SET expires_at = ? WHERE key = ?",
                             (time.time() + seconds, key))
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM strings WHERE key = ?", (key,))

    def incr(self, key: str, amount: int, *, ttl: float | None) -> int:
        """INCRBY then EXPIRE (a counter never goes below zero)."""
        with self.atomic():
            value = max(0, int(self.get(key) or 0) + amount)
            self.set(key, str(value), ttl=ttl)
            return value

    # -- hashes ----------------------------------------------------------------------------------

    def hget(self, name: str, field: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM hashes WHERE name = ? AND field = ?",
                                   (name, field)).fetchone()
        return None if row is None else str(row[0])

    def hset(self, name: str, field: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO hashes VALUES (?, ?, ?) ON CONFLICT (name, field)"
                             " DO UPDATE SET value = excluded.value", (name, field, value))

    def hdel_if(self, name: str, field: str, values: Collection[str]) -> bool:
        """Delete the field when its value is one of ``values``; True when deleted."""
        with self.atomic():
            if self.hget(name, field) not in values:
                return False
            self._db.execute("DELETE FROM hashes WHERE name = ? AND field = ?", (name, field))
            return True

    async def check(self) -> None:
        await self.run(self.get, "-")

    def close(self) -> None:
        with self._lock:
            self._db.close()


# -- SMTP credentials (hash ``auth``) -------------------------------------------------------------

class LocalCredentialCache:
    """CredentialCache: ``auth`` field user_id -> the encrypted credentials (wire format)."""

    def __init__(self, store: LocalStore, *, hash_name: str = AUTH_HASH) -> None:
        self._store = store
        self._hash = hash_name

    async def store(self, user_id: int, value: str) -> None:
        await self._store.run(self._store.hset, self._hash, str(user_id), value)

    async def forget(self, user_id: int, values: Collection[str]) -> bool:
        return await self._store.run(self._store.hdel_if, self._hash, str(user_id), set(values))


class LocalCredentialSource:
    """CredentialSource of the sendmail worker, reading the same hash."""

    def __init__(self, store: LocalStore, cipher: CredentialCipher, *,
                 hash_name: str = AUTH_HASH) -> None:
        self._store = store
        self._cipher = cipher
        self.hash_name = hash_name

    async def fetch(self, user_id: str) -> SmtpCredentials:
        from etrans.app.sendmail import CredentialsUnavailable

        if not user_id:
            raise CredentialsUnavailable("530 5.7.0 etrans: the request names no user_id, "
                                         "so no SMTP credentials")
        value = await self._store.run(self._store.hget, self.hash_name, user_id)
        if value is None:
            raise CredentialsUnavailable(
                f"530 5.7.0 etrans: no SMTP credentials cached for user_id {user_id}")
        try:
            return self._cipher.decrypt(value)
        except CredentialError:
            raise CredentialsUnavailable(
                f"535 5.7.8 etrans: cached SMTP credentials of user_id {user_id} cannot be "
                "decrypted (TOKEN_SECRET/TOKEN_IV mismatch or corrupt value)") from None


# -- API keys -------------------------------------------------------------------------------------

class LocalApiKeyCache:
    """ApiKeyCache with the Redis adapter's rules: positive entries 30 s, ``missing`` 10 s, both
    only written when absent (a revocation is never overwritten), ``revoked`` for a day."""

    def __init__(self, store: LocalStore, *, ttl_seconds: int = 30,
                 missing_ttl_seconds: int = 10, revoked_ttl_seconds: int = 86_400,
                 prefix: str = "etrans:apikey:") -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._missing_ttl = missing_ttl_seconds
        self._revoked_ttl = revoked_ttl_seconds
        self._prefix = prefix

    async def get(self, key_hash: str) -> ApiKeyRecord | str | None:
        text = await self._store.run(self._store.get, self._prefix + key_hash)
        return None if text is None else decode_entry(text)

    async def put(self, key_hash: str, record: ApiKeyRecord | None) -> None:
        if record is None:
            value, ttl = MISSING, self._missing_ttl
        else:
            value, ttl = encode_entry(record), self._ttl
        await self._store.run(self._store.set, self._prefix + key_hash, value, ttl=ttl, nx=True)

    async def revoke(self, key_hash: str) -> None:
        await self._store.run(self._store.set, self._prefix + key_hash, REVOKED,
                              ttl=self._revoked_ttl)


# -- quotas ---------------------------------------------------------------------------------------

class LocalQuota:
    """QuotaCounter: the same windows and keys as ``RedisQuota``; check-and-count is one atomic
    step, so concurrent sends never overshoot a limit."""

    def __init__(self, store: LocalStore, *, prefix: str = "etrans:quota:") -> None:
        self._store = store
        self._prefix = prefix

    def keys(self, domain_id: int, now: datetime) -> tuple[list[str], list[int]]:
        return quota_keys(self._prefix, domain_id, now)

    def _reserve(self, domain_id: int, limits: QuotaLimits, count: int,
                 now: datetime) -> str | None:
        keys, ttls = self.keys(domain_id, now)
        store = self._store
        with store.atomic():
            for name, key, limit in zip(("daily", "hourly", "monthly"), keys,
                                        (limits.daily, limits.hourly, limits.monthly),
                                        strict=True):
                if limit is not None and int(store.get(key) or 0) + count > limit:
                    return name
            for key, ttl in zip(keys, ttls, strict=True):
                store.incr(key, count, ttl=ttl)
        return None

    async def reserve(self, domain_id: int, limits: QuotaLimits, count: int,
                      now: datetime) -> str | None:
        return await self._store.run(self._reserve, domain_id, limits, count, now)

    def _release(self, domain_id: int, count: int, now: datetime) -> None:
        keys, ttls = self.keys(domain_id, now)
        with self._store.atomic():
            for key, ttl in zip(keys, ttls, strict=True):
                if self._store.get(key) is not None:
                    self._store.incr(key, -count, ttl=ttl)

    async def release(self, domain_id: int, count: int, now: datetime) -> None:
        await self._store.run(self._release, domain_id, count, now)

    async def usage(self, domain_id: int, now: datetime) -> QuotaUsage:
        keys, _ = self.keys(domain_id, now)
        daily, hourly, monthly = [await self._store.run(self._store.get, k) for k in keys]
        return QuotaUsage(daily=int(daily or 0), hourly=int(hourly or 0),
                          monthly=int(monthly or 0))


# -- idempotency keys -----------------------------------------------------------------------------

class LocalIdempotencyStore:
    """IdempotencyStore with the Redis adapter's record format and lifetimes."""

    def __init__(self, store: LocalStore, *, ttl_seconds: int = 86_400,
                 in_flight_seconds: int = 120, prefix: str = "etrans:idem:") -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._in_flight = in_flight_seconds
        self._prefix = prefix

    def _key(self, scope: str) -> str:
        return record_key(self._prefix, scope)

    def _begin(self, scope: str, fingerprint: str) -> tuple[str, Any]:
        key = self._key(scope)
        claim = json.dumps({"state": "in_flight", "fp": fingerprint})
        with self._store.atomic():
            if self._store.set(key, claim, ttl=self._in_flight, nx=True):
                return "started", None
            raw = self._store.get(key)
        try:
            record = json.loads(raw or "")
        except ValueError:
            return "in_flight", None
        if record.get("fp") != fingerprint:
            return "mismatch", None
        if record.get("state") == "done":
            return "replay", (int(record["status"]), record["body"])
        return "in_flight", None

    async def begin(self, scope: str, fingerprint: str) -> tuple[str, Any]:
        return await self._store.run(self._begin, scope, fingerprint)

    async def complete(self, scope: str, fingerprint: str, status: int, body: Any) -> None:
        value = json.dumps({"state": "done", "fp": fingerprint, "status": status, "body": body},
                           ensure_ascii=False, separators=(",", ":"))
        await self._store.run(self._store.set, self._key(scope), value, ttl=self._ttl)

    async def abandon(self, scope: str) -> None:
        await self._store.run(self._store.delete, self._key(scope))


# -- delivery marks (sendmail) --------------------------------------------------------------------

class LocalDeliveryMarks:
    """DeliveryMarks: ``etrans:sendmail:done:<message_id>`` -> outcome, with a TTL."""

    def __init__(self, store: LocalStore, *, ttl_seconds: int = 7 * 24 * 3600,
                 prefix: str = "etrans:sendmail:done:") -> None:
        if ttl_seconds < 1:  # as RedisDeliveryMarks: a mark that expires at once marks nothing
            raise ValueError("ttl_seconds must be positive")
        self._store = store
        self.ttl_seconds = ttl_seconds
        self.prefix = prefix

    async def outcome(self, message_id: str) -> str | None:
        return await self._store.run(self._store.get, self.prefix + message_id)

    async def record(self, message_id: str, outcome: str) -> None:
        await self._store.run(self._store.set, self.prefix + message_id, outcome,
                              ttl=self.ttl_seconds)
