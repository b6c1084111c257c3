"""CredentialCache (the API writes) and CredentialSource (sendmail reads): Redis
(``RedisCredentialCache`` / ``RedisCredentialSource``), the ``etrans dev`` store
(``LocalCredentialCache`` / ``LocalCredentialSource``) and, for the writing side, the fake.

What POST /emails and the sendmail worker rely on (``docs/wire-formats.md``): the hash field
user_id -> the encrypted credentials; what the API stores is what sendmail decrypts;
``forget`` removes a field only while it holds one of the given values (a newer credential
written meanwhile is kept); a user without credentials, a request without a user and a value
that cannot be decrypted are permanent failures (530 / 535), never a retry.
"""

from __future__ import annotations

from typing import Any

import pytest

from etrans.adapters.crypto.credentials import CredentialCipher, SmtpCredentials
from etrans.app.sendmail import CredentialsUnavailable

CIPHER = CredentialCipher("k" * 32, "v" * 16)
ALICE = SmtpCredentials("alice@a.example", "s3cret")
ALICE_NEW = SmtpCredentials("alice@a.example", "rotated")


async def test_forget_removes_only_the_values_given(kv: Any) -> None:
    cache = kv.credential_cache()
    old, new = CIPHER.encrypt(ALICE), CIPHER.encrypt(ALICE_NEW)
    await cache.store(1, old)
    assert await cache.forget(1, []) is False
    assert await cache.forget(1, [new]) is False  # holds another value: kept
    assert await cache.forget(2, [old]) is False  # nothing stored for user 2
    assert await cache.forget(1, [new, old]) is True
    assert await cache.forget(1, [old]) is False  # already gone
    await cache.store(1, old)  # stored again after a forget: written again
    await cache.store(1, new)  # a changed value is always written
    assert await cache.forget(1, [old]) is False
    assert await cache.forget(1, [new]) is True


async def test_what_the_api_stores_sendmail_reads(kv_store: Any) -> None:
    cache, source = kv_store.credential_cache(), kv_store.credential_source(CIPHER)
    await cache.store(7, CIPHER.encrypt(ALICE))
    assert await source.fetch("7") == ALICE
    assert await kv_store.hget(f"{kv_store.prefix}auth", "7") == CIPHER.encrypt(ALICE)
    await cache.store(7, CIPHER.encrypt(ALICE_NEW))
    assert await source.fetch("7") == ALICE_NEW
    assert await cache.forget(7, [CIPHER.encrypt(ALICE_NEW)]) is True
    with pytest.raises(CredentialsUnavailable, match=r"^530 5\.7\.0 .*user_id 7"):
        await source.fetch("7")


async def test_missing_and_undecryptable_credentials_are_permanent(kv_store: Any) -> None:
    cache, source = kv_store.credential_cache(), kv_store.credential_source(CIPHER)
    with pytest.raises(CredentialsUnavailable, match=r"^530 5\.7\.0 .*names no user_id"):
        await source.fetch("")
    with pytest.raises(CredentialsUnavailable, match=r"^530 5\.7\.0 .*no SMTP credentials"):
        await source.fetch("8")
    await cache.store(8, CredentialCipher("x" * 32, "v" * 16).encrypt(ALICE))
    with pytest.raises(CredentialsUnavailable, match=r"^535 5\.7\.8 .*cannot be decrypted"):
        await source.fetch("8")
    await cache.store(8, "not base64 at all!")
    with pytest.raises(CredentialsUnavailable, match=r"^535 5\.7\.8 "):
        await source.fetch("8")
