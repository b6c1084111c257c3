"""The RSA step in a signing process (``etrans/adapters/crypto/signing_process.py``): the same
bytes as the signer of the Trio thread, checked by dkimpy's ``verify``; many concurrent
signatures with several keys, each answered once; a key that cannot sign and a failed
signature answer their own request; a killed process fails what it owed with RetryLater and
is replaced; the process ends with its owner."""

from __future__ import annotations

import os
import signal

import dkim
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from etrans.adapters.crypto import signing_process
from etrans.adapters.crypto.dkim_keys import generate_dkim_key_pair
from etrans.adapters.crypto.dkim_signer import DkimSigner, signature_field
from etrans.adapters.crypto.signing_process import (
    ProcessDkimSigner,
    SignerFailed,
    SigningProcess,
    open_signing_process,
)
from etrans.app.signing import DkimKey
from etrans.domain.mime import render
from etrans.errors import RetryLater
from tests.unit.test_dkim_signing import DOMAIN, MESSAGES, signing_key, txt_record


@pytest.mark.parametrize("name", list(MESSAGES))
async def test_the_same_signature_as_in_the_trio_thread_and_it_verifies(name: str) -> None:
    data, key, signer = render(MESSAGES[name]), signing_key(), DkimSigner()
    async with open_signing_process() as process:
        fields, digest = signer.prepare(data, key, timestamp=1_800_000_000)
        signature = await process.sign_digest(key.private_key_pem, digest)
        assert signature_field(fields, signature) == signer.signature_header(
            data, key, timestamp=1_800_000_000)
        signed = await ProcessDkimSigner(process).sign(data, key)
    assert signed.endswith(data)
    assert dkim.verify(signed, dnsfunc=txt_record)


async def test_concurrent_signatures_each_answered_once_with_its_own_key() -> None:
    # A 4096-bit key's PEM (~3.2 KB) with others in flight: frames near PIPE_BUF stay whole.
    keys = [DkimKey(DOMAIN, "s", generate_dkim_key_pair(bits=bits).private_key_pem)
            for bits in (1024, 2048, 4096)]
    data, signer = render(MESSAGES["plain"]), DkimSigner()
    expected = {key: signer.signature_header(data, key, timestamp=1_800_000_000) for key in keys}
    answers: list[bool] = []
    async with open_signing_process() as process:

        async def worker(number: int) -> None:
            for i in range(30):
                key = keys[(number + i) % len(keys)]
                fields, digest = signer.prepare(data, key, timestamp=1_800_000_000)
                signature = await process.sign_digest(key.private_key_pem, digest)
                answers.append(signature_field(fields, signature) == expected[key])

        async with trio.open_nursery() as nursery:
            for number in range(10):
                nursery.start_soon(worker, number)
        stats = process.statistics()
    assert answers == [True] * 300
    assert stats["signed"] == 300
    assert stats["unanswered"] == 0
    assert stats["restarts"] == 0


async def test_a_key_that_cannot_sign_and_a_failed_signature() -> None:
    ed25519 = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    data, key = render(MESSAGES["plain"]), signing_key()
    async with open_signing_process() as process:
        signer = ProcessDkimSigner(process)
        with pytest.raises(ValueError, match="must be RSA"):
            await signer.sign(data, DkimKey(DOMAIN, "s", ed25519))
        with pytest.raises(ValueError, match="must be RSA"):  # refused in the process too
            await process.sign_digest(ed25519, b"\0" * 32)
        with pytest.raises(ValueError, match="digest"):  # the request's answer; it goes on
            await process.sign_digest(key.private_key_pem, b"\0" * 5)
        assert dkim.verify(await signer.sign(data, key), dnsfunc=txt_record)
        assert process.statistics()["restarts"] == 0


async def test_a_killed_process_fails_what_it_owed_and_another_signs() -> None:
    data, key, signer = render(MESSAGES["plain"]), signing_key(), DkimSigner()
    async with open_signing_process() as process:
        await ProcessDkimSigner(process).sign(data, key)  # the key is in the first process
        first = process.pid
        assert first is not None
        outcomes: list[str] = []

        async def ask() -> None:
            _fields, digest = signer.prepare(data, key)
            try:
                await process.sign_digest(key.private_key_pem, digest)
                outcomes.append("signed")
            except RetryLater:
                outcomes.append("retry")

        os.kill(first, signal.SIGSTOP)  # holds the requests unanswered
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(ask)
            await trio.sleep(0.2)
            os.kill(first, signal.SIGKILL)
        assert outcomes == ["retry"] * 20
        with trio.fail_after(10):
            while True:  # RetryLater until the new process is started
                try:
                    signed = await ProcessDkimSigner(process).sign(data, key)
                    break
                except RetryLater:
                    await trio.sleep(0.02)
        assert process.pid != first
        assert dkim.verify(signed, dnsfunc=txt_record)  # the key is sent to the new process
        assert process.statistics()["restarts"] == 1
        assert process.statistics()["failed_requests"] == 20


async def test_the_process_ends_with_its_owner_and_later_requests_are_retried() -> None:
    async with open_signing_process() as process:
        await ProcessDkimSigner(process).sign(render(MESSAGES["plain"]), signing_key())
        pid = process.pid
        assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped
    with pytest.raises(RetryLater):
        await process.sign_digest(signing_key().private_key_pem, b"\0" * 32)


async def test_a_process_that_keeps_dying_stops_the_service(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing_process, "MAX_QUICK_DEATHS", 3)
    with pytest.raises(ExceptionGroup) as raised:  # noqa: PT012
        async with open_signing_process(("false",)) as process:
            assert isinstance(process, SigningProcess)
            await trio.sleep_forever()
    assert raised.group_contains(SignerFailed, match="3 times")


async def test_the_keys_a_process_holds_are_bounded_and_a_forgotten_key_is_sent_again() -> None:
    # With more domains than max_keys the child would hold every key it was ever sent, for its
    # whole life; past the bound the parent tells it to forget them and sends each again when
    # next needed (in order on the one pipe: requests written before still find their key).
    keys = [DkimKey(DOMAIN, "s", generate_dkim_key_pair(bits=1024).private_key_pem)
            for _ in range(3)]
    data, signer = render(MESSAGES["plain"]), DkimSigner()
    expected = {key: signer.signature_header(data, key, timestamp=1_800_000_000) for key in keys}
    answers: list[bool] = []
    held: list[int] = []
    async with open_signing_process(max_keys=2) as process:

        async def worker(number: int) -> None:
            for i in range(20):
                key = keys[(number + i) % len(keys)]
                fields, digest = signer.prepare(data, key, timestamp=1_800_000_000)
                signature = await process.sign_digest(key.private_key_pem, digest)
                answers.append(signature_field(fields, signature) == expected[key])
                held.append(int(process.statistics()["keys"]))  # type: ignore[call-overload]

        async with trio.open_nursery() as nursery:
            for number in range(10):
                nursery.start_soon(worker, number)
        stats = process.statistics()
    assert answers == [True] * 200
    assert max(held) <= 2
    assert int(stats["forgotten"]) > 0  # type: ignore[call-overload]
    assert stats["restarts"] == 0
