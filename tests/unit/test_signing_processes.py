"""The RSA step in signing processes (``etrans/adapters/crypto/signing_processes.py``): the same
bytes as the signer of the Trio thread, checked by dkimpy's ``verify``; a key's PEM sent once per
process; a process killed mid-run is replaced and no signature is lost (the requests it had
not answered raise RetryLater, and are asked again, as the pipeline retries their emails); a
process that cannot run stops the owner loudly; SIGTERM does not stop a process before its
owner does."""

from __future__ import annotations

import os
import signal
import sys

import dkim
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from etrans.adapters.crypto.dkim_keys import generate_dkim_key_pair
from etrans.adapters.crypto.dkim_signer import DkimSigner, signature_field
from etrans.adapters.crypto.signing_child import KeyCache
from etrans.adapters.crypto.signing_processes import (
    ProcessDkimSigner,
    SignerFailed,
    SigningProcesses,
    open_signing_processes,
)
from etrans.app.signing import DkimKey
from etrans.domain.mime import render
from etrans.errors import RetryLater
from tests.unit.test_dkim_signing import DOMAIN, MESSAGES, key_pair, signing_key, txt_record


@pytest.mark.parametrize("name", list(MESSAGES))
async def test_the_same_signature_as_in_the_trio_thread_and_it_verifies(name: str) -> None:
    data, key, signer = render(MESSAGES[name]), signing_key(), DkimSigner()
    async with open_signing_processes(1) as processes:
        fields, digest = signer.prepare(data, key, timestamp=1_800_000_000)
        header = signature_field(fields, await processes.sign_digest(key.private_key_pem,
                                                                     digest))
        assert header == signer.signature_header(data, key, timestamp=1_800_000_000)
        signed = await ProcessDkimSigner(processes).sign(data, key)
    assert signed.endswith(data)
    assert dkim.verify(signed, dnsfunc=txt_record)


def test_the_parent_mirrors_the_key_cache_of_the_process() -> None:
    cache = KeyCache(capacity=2)
    assert [cache.use(k) for k in (b"a", b"b", b"a", b"c", b"b", b"a")] == [
        True, True, False, True, True, True]  # c evicted b (least recently used), then b a


async def test_many_keys_and_an_unusable_one() -> None:
    keys = [DkimKey(DOMAIN, "s", generate_dkim_key_pair(bits=1024).private_key_pem)
            for _ in range(3)]
    data = render(MESSAGES["plain"])
    async with open_signing_processes(2) as processes:
        signer = ProcessDkimSigner(processes)
        for key in keys * 3:
            signed = await signer.sign(data, key)
            assert signed.startswith(b"DKIM-Signature: ")
        ed25519 = Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        with pytest.raises(ValueError, match="must be RSA"):
            await processes.sign_digest(ed25519, b"\0" * 32)
        with pytest.raises(ValueError, match="unusable"):
            await processes.sign_digest(b"not a key", b"\0" * 32)
        assert processes.statistics()["signed"] == 9


async def test_a_process_killed_mid_run_is_replaced_and_no_signature_is_lost() -> None:
    data, key = render(MESSAGES["plain"]), signing_key()
    total, signed, retried = 600, [], 0
    async with open_signing_processes(1) as processes:
        signer = ProcessDkimSigner(processes)
        first_pid = processes.pids[0]
        assert first_pid is not None

        async def worker(count: int) -> None:
            nonlocal retried
            for _ in range(count):
                while True:  # as the pipeline: a RetryLater email is tried again
                    try:
                        signed.append(await signer.sign(data, key))
                        break
                    except RetryLater:
                        retried += 1
                        await trio.sleep(0.01)
                if len(signed) == total // 3:
                    os.kill(first_pid, signal.SIGKILL)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(worker, total // 10)
        stats = processes.statistics()
    assert len(signed) == total
    assert all(dkim.verify(message, dnsfunc=txt_record) for message in signed[::50])
    assert stats["restarts"] == 1
    assert stats["failed_requests"] == retried
    assert processes.pids[0] != first_pid


async def test_a_process_that_cannot_run_stops_its_owner_loudly() -> None:
    with pytest.raises(ExceptionGroup) as caught:  # noqa: PT012 - the block must wait inside
        async with open_signing_processes(1, [sys.executable, "-c", "raise SystemExit(3)"]
                                          ) as processes:
            with pytest.raises(RetryLater):
                await processes.sign_digest(key_pair().private_key_pem, b"\0" * 32)
            await trio.sleep_forever()
    assert caught.group_contains(SignerFailed)


async def test_sigterm_waits_for_the_owner_which_stops_the_process() -> None:
    data, key = render(MESSAGES["plain"]), signing_key()
    async with open_signing_processes(1) as processes:
        pid = processes.pids[0]
        assert pid is not None
        await ProcessDkimSigner(processes).sign(data, key)
        os.kill(pid, signal.SIGTERM)  # as systemd signals the whole control group
        await trio.sleep(0.2)
        assert dkim.verify(await ProcessDkimSigner(processes).sign(data, key),
                           dnsfunc=txt_record)
        assert processes.statistics()["restarts"] == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped


def test_a_pool_needs_a_process() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SigningProcesses(0)
