"""The RSA step in signing threads (``etrans/adapters/crypto/signing_threads.py``): the same
bytes as the signer of the Trio thread, checked by dkimpy's ``verify``; many concurrent
signatures spread over the threads, each answered once; a signature that fails answers its own
request and the thread goes on; a request after shutdown is RetryLater; the threads end with
their owner."""

from __future__ import annotations

import threading

import dkim
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from etrans.adapters.crypto.dkim_keys import generate_dkim_key_pair
from etrans.adapters.crypto.dkim_signer import DkimSigner, private_key, signature_field
from etrans.adapters.crypto.signing_threads import (
    SigningThreads,
    ThreadDkimSigner,
    open_signing_threads,
)
from etrans.app.signing import DkimKey
from etrans.domain.mime import render
from etrans.errors import RetryLater
from tests.unit.test_dkim_signing import DOMAIN, MESSAGES, signing_key, txt_record


def signer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dkim-signer-")]


@pytest.mark.parametrize("name", list(MESSAGES))
async def test_the_same_signature_as_in_the_trio_thread_and_it_verifies(name: str) -> None:
    data, key, signer = render(MESSAGES[name]), signing_key(), DkimSigner()
    async with open_signing_threads(2) as threads:
        fields, digest = signer.prepare(data, key, timestamp=1_800_000_000)
        signature = await threads.sign_digest(private_key(key.private_key_pem), digest)
        assert signature_field(fields, signature) == signer.signature_header(
            data, key, timestamp=1_800_000_000)
        signed = await ThreadDkimSigner(threads).sign(data, key)
    assert signed.endswith(data)
    assert dkim.verify(signed, dnsfunc=txt_record)


async def test_concurrent_signatures_each_answered_once_with_its_own_key() -> None:
    keys = [DkimKey(DOMAIN, "s", generate_dkim_key_pair(bits=1024).private_key_pem)
            for _ in range(3)]
    data, signer = render(MESSAGES["plain"]), DkimSigner()
    expected = {key: signer.signature_header(data, key, timestamp=1_800_000_000) for key in keys}
    answers: list[bool] = []
    async with open_signing_threads(2) as threads:

        async def worker(number: int) -> None:
            for i in range(30):
                key = keys[(number + i) % len(keys)]
                fields, digest = signer.prepare(data, key, timestamp=1_800_000_000)
                signature = await threads.sign_digest(private_key(key.private_key_pem), digest)
                answers.append(signature_field(fields, signature) == expected[key])

        async with trio.open_nursery() as nursery:
            for number in range(10):
                nursery.start_soon(worker, number)
        stats = threads.statistics()
    assert answers == [True] * 300
    assert stats["signed"] == 300
    assert stats["unanswered"] == 0
    assert 1 <= stats["batches"] <= 300  # type: ignore[operator]


async def test_a_key_that_cannot_sign_and_a_failed_signature() -> None:
    ed25519 = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    data, key = render(MESSAGES["plain"]), signing_key()
    async with open_signing_threads(1) as threads:
        signer = ThreadDkimSigner(threads)
        with pytest.raises(ValueError, match="must be RSA"):
            await signer.sign(data, DkimKey(DOMAIN, "s", ed25519))
        # A digest of the wrong size fails in the thread: that request's answer, and the
        # thread goes on signing.
        with pytest.raises(ValueError, match="digest"):
            await threads.sign_digest(private_key(key.private_key_pem), b"\0" * 5)
        assert dkim.verify(await signer.sign(data, key), dnsfunc=txt_record)


async def test_the_threads_end_with_their_owner_and_later_requests_are_retried() -> None:
    before = signer_threads()
    async with open_signing_threads(2) as threads:
        assert len(signer_threads()) == len(before) + 2
        await ThreadDkimSigner(threads).sign(render(MESSAGES["plain"]), signing_key())
    assert signer_threads() == before
    with pytest.raises(RetryLater):
        await threads.sign_digest(private_key(signing_key().private_key_pem), b"\0" * 32)


async def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SigningThreads(0)
