"""sendmail's DKIM key source (:mod:`etrans.adapters.sql.dkim_key_source`) on the databases that
keep the keys: the USEND DB's ``local_dkim`` on PostgreSQL and on ``etrans dev``'s SQLite
(written by the API's local billing gateway, encrypted), and the Billing DB's ``dkim`` with the
key in clear (external billing, read through the SELECT-only role)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import update

from etrans.adapters.crypto.dkim_keys import DkimKeyCipher, generate_dkim_key_pair
from etrans.adapters.sql import Database, billing_database, usend_database
from etrans.adapters.sql.billing_local import LocalBillingGateway
from etrans.adapters.sql.dkim_key_source import SqlDkimKeySource
from etrans.adapters.sql.usend import LocalDomain
from etrans.app.signing import DkimKeyUnavailable
from etrans.dev import sqlite_db

SECRET = "k" * 32


def same_key(pem_a: bytes, pem_b: bytes) -> bool:
    def numbers(pem: bytes) -> Any:
        return serialization.load_pem_private_key(pem, None).private_numbers()  # type: ignore[union-attr]
    return bool(numbers(pem_a) == numbers(pem_b))


@pytest.fixture(params=["postgresql", "sqlite"])
async def usend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "postgresql":
        db = usend_database(request.getfixturevalue("usend_db_url"), pool_size=2)
    else:
        db = sqlite_db.sqlite_database(tmp_path / "usend.sqlite3")
        await db.run(sqlite_db.create_schema, db)
    yield db
    db.dispose()


async def test_local_keys_decrypted_per_user_and_domain_and_cached(usend: Database) -> None:
    gateway = LocalBillingGateway(usend, DkimKeyCipher(SECRET))
    user = int(uuid.uuid4().int % 10**9) + 1
    domain = f"d{uuid.uuid4().hex[:10]}.example.test"
    pair = generate_dkim_key_pair(bits=1024)
    domain_id = await gateway.create_domain(
        user_id=user, name=domain, dkim_selector="dkim", dkim_public_key="unused",
        dkim_private_key_pem=pair.private_key_pem)

    keys = SqlDkimKeySource(usend, DkimKeyCipher(SECRET), local=True, cache_seconds=60)
    key = await keys.signing_key(str(user), domain.upper())
    assert key is not None
    assert (key.domain, key.selector) == (domain, "dkim")
    assert same_key(key.private_key_pem, pair.private_key_pem)
    assert await keys.signing_key(str(user + 1), domain) is None  # another user's domain
    assert await keys.signing_key(str(user), "other.example.test") is None
    assert await keys.signing_key("not-a-number", domain) is None

    # Deleted: still the cached key for cache_seconds, then none.
    await usend.run(_delete, usend, domain_id)
    assert await keys.signing_key(str(user), domain) is key
    fresh = SqlDkimKeySource(usend, DkimKeyCipher(SECRET), local=True, cache_seconds=0)
    assert await fresh.signing_key(str(user), domain) is None


def _delete(db: Database, domain_id: int) -> None:
    from datetime import UTC, datetime

    with db.engine.begin() as conn:
        conn.execute(update(LocalDomain).where(LocalDomain.id == domain_id)
                     .values(deleted_at=datetime.now(UTC)))


async def test_a_key_sealed_under_another_token_secret_is_unusable(usend: Database) -> None:
    gateway = LocalBillingGateway(usend, DkimKeyCipher("another secret" * 3))
    user = int(uuid.uuid4().int % 10**9) + 1
    domain = f"d{uuid.uuid4().hex[:10]}.example.test"
    await gateway.create_domain(user_id=user, name=domain, dkim_selector="dkim",
                                dkim_public_key="unused",
                                dkim_private_key_pem=generate_dkim_key_pair(bits=1024)
                                .private_key_pem)
    keys = SqlDkimKeySource(usend, DkimKeyCipher(SECRET), local=True)
    with pytest.raises(DkimKeyUnavailable, match="does not decrypt"):
        await keys.signing_key(str(user), domain)
    with pytest.raises(DkimKeyUnavailable):  # remembered too: one query per cache period
        await keys.signing_key(str(user), domain)


async def test_external_billing_keys_in_clear_from_the_billing_db(billing_db: Any,
                                                                   billing_seed: Any) -> None:
    user, domain_id, domain = billing_seed.sending_domain()
    pair = generate_dkim_key_pair(bits=1024)
    billing_seed._insert("dkim", {"domain_id": domain_id, "selector": "s2026",
                                  "public_key": pair.record.public_key_b64,
                                  "private_key": pair.private_key_pem.decode()})
    keyless_user, _, keyless_domain = billing_seed.sending_domain()
    db = billing_database(billing_db.readonly_url, pool_size=1)
    try:
        keys = SqlDkimKeySource(db, DkimKeyCipher(SECRET), local=False)
        key = await keys.signing_key(str(user), domain)
        assert key is not None
        assert key.selector == "s2026"
        assert same_key(key.private_key_pem, pair.private_key_pem)
        assert await keys.signing_key(str(keyless_user), keyless_domain) is None
    finally:
        db.dispose()
