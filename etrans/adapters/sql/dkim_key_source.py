"""sendmail's DKIM keys, read from where the billing mode keeps them.

:class:`SqlDkimKeySource` implements :class:`etrans.app.ports.DkimKeySource`:

- ``local`` billing (BILLING_V4_URI unset): ``local_domain`` / ``local_dkim`` of the USEND DB
  (PostgreSQL, or ``etrans dev``'s SQLite); the private key is stored encrypted
  (``private_key_encrypted``, :class:`etrans.adapters.crypto.dkim_keys.DkimKeyCipher`);
- ``external`` billing: ``domain`` / ``dkim`` of the Billing DB (read-only), when its ``dkim``
  table has a ``private_key`` column holding the key (PEM in clear, as POST /domains sent it to
  the billing API, or the local mode's encrypted ``v1:`` form).  A Billing DB without that
  column holds no keys: logged once, then every domain has none.

The key is the newest ``dkim`` row of the user's live domain of that name (the user_id of the
send request: another user's domain is never signed for).  Found keys are decrypted once and
kept ``cache_seconds`` (default 60 s), like sendmail's SMTP credentials; so are the answers
"no key" and "unusable key", so that a domain without a key costs one query a minute, not one
per message.  The database unreachable: the expired answer is used if there is one, else
:class:`etrans.errors.RetryLater` (the message waits, as for any outage).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import column, select, table
from sqlalchemy.exc import DBAPIError, ProgrammingError

from etrans.adapters.crypto.dkim_keys import DkimKeyError
from etrans.adapters.sql import usend as own
from etrans.app.signing import DkimKey, DkimKeyUnavailable
from etrans.errors import RetryLater
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.adapters.crypto.dkim_keys import DkimKeyCipher
    from etrans.adapters.sql import Database

log = get_logger(__name__)

DEFAULT_CACHE_SECONDS = 60.0
_MAX_CACHED = 10_000

# The Billing DB's tables, only the columns read here (``private_key`` is not in the mapped
# model of adapters/sql/billing.py: a Billing DB without it must still serve the API).
_domain = table("domain", column("id"), column("user_id"), column("name"),
                column("deleted_at"))
_dkim = table("dkim", column("id"), column("domain_id"), column("selector"),
              column("private_key"))

_Entry = tuple[float, DkimKey | None, str]  # (expires, key, why unusable when key is None)


class SqlDkimKeySource:
    def __init__(self, db: Database, cipher: DkimKeyCipher, *, local: bool,
                 cache_seconds: float = DEFAULT_CACHE_SECONDS) -> None:
        self._db = db
        self._cipher = cipher
        self.local = local
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, str], _Entry] = {}
        self._no_key_column = False

    async def signing_key(self, user_id: str, domain: str) -> DkimKey | None:
        domain = domain.lower()
        now = time.monotonic()
        hit = self._cache.get((user_id, domain))
        if hit is None or hit[0] <= now:
            try:
                hit = await self._load(user_id, domain, now)
            except RetryLater:
                if hit is None:
                    raise
                # The database is down: what it answered last is still the best answer.
                log.warning("DKIM key store unavailable, using the expired cached answer",
                            domain=domain)
        _, key, problem = hit
        if key is None and problem:
            raise DkimKeyUnavailable(problem)
        return key

    async def _load(self, user_id: str, domain: str, now: float) -> _Entry:
        row = None
        if user_id.isdigit() and not self._no_key_column:
            try:
                row = await self._db.run(self._lookup, int(user_id), domain)
            except ProgrammingError as exc:
                if self.local:
                    raise RetryLater(f"reading DKIM keys: {exc.orig!r}") from exc
                # The Billing DB's dkim table has no private_key column: it holds no keys.
                self._no_key_column = True
                log.error("the Billing DB's dkim table has no private_key column: "
                          "no DKIM key can be read from it", error=str(exc.orig))
            except DBAPIError as exc:
                raise RetryLater(f"database unavailable reading DKIM keys: {exc.orig!r}"
                                 ) from exc
        entry: _Entry = (now + self.cache_seconds, None, "")
        if row is not None:
            selector, stored = row
            try:
                entry = (entry[0], self._key(domain, selector, stored), "")
            except DkimKeyUnavailable as exc:
                log.warning("unusable DKIM key", domain=domain, reason=exc.reason)
                entry = (entry[0], None, exc.reason)
        if self.cache_seconds > 0:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[(user_id, domain)] = entry
        return entry

    def _key(self, domain: str, selector: str, stored: str | None) -> DkimKey:
        if not stored:
            raise DkimKeyUnavailable("its DKIM record holds no private key")
        if stored.startswith("v1:") or self.local:
            try:
                pem = self._cipher.decrypt(stored, domain=domain)
            except DkimKeyError as exc:
                raise DkimKeyUnavailable(f"{exc} (TOKEN_SECRET changed?)") from None
        elif "-----BEGIN" in stored:
            pem = stored.strip().encode("ascii") + b"\n"
        else:
            raise DkimKeyUnavailable("its private key is neither PEM nor etrans's v1 format")
        return DkimKey(domain=domain, selector=selector, private_key_pem=pem)

    # -- blocking ------------------------------------------------------------------------------

    def _lookup(self, user_id: int, domain: str) -> tuple[str, str | None] | None:
        """(selector, stored private key) of the newest dkim row of the user's live domain."""
        if self.local:
            d: Any = own.LocalDomain.__table__
            k: Any = own.LocalDkim.__table__
            private = k.c.private_key_encrypted
        else:
            d, k = _domain, _dkim
            private = k.c.private_key
        query = (select(k.c.selector, private)
                 .select_from(d.join(k, k.c.domain_id == d.c.id))
                 .where(d.c.user_id == user_id, d.c.name == domain, d.c.deleted_at.is_(None))
                 .order_by(d.c.id.desc(), k.c.id.desc()).limit(1))
        with self._db.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (str(row[0]), row[1])
