"""DKIM signatures with the RSA step in child processes (``SENDMAIL_DKIM_SIGNER_PROCESSES``).

:class:`ProcessDkimSigner` implements :class:`etrans.app.ports.MessageSigner`: the message is
parsed, canonicalised and hashed in the caller's thread (:meth:`DkimSigner.prepare`, ~45 us),
and only the 32-byte digest goes to a signing process (:mod:`.signing_child`), which makes the
RSA-2048 signature (~200 us of OpenSSL) under its own GIL, on the other CPU.  Worker threads
did not help (the GIL taken back after each signature, see :class:`DkimSigner`); a process
does: measured in ``docs/sendmail.md``.

Requests travel in batches: a process's writer takes every request waiting (at most
``MAX_IN_FLIGHT`` unanswered per process) and writes them in one frame; the process answers
each batch it read with one frame.  A key's PEM is sent to a process once (the parent mirrors
its key cache, :class:`~.signing_child.KeyCache`).

:func:`open_signing_processes` owns the processes (a nursery): a process that dies is logged
and started again; the requests it had not answered fail with
:class:`~etrans.errors.RetryLater` (the pipeline retries those emails: never sent unsigned,
never lost).  A process that dies ``MAX_QUICK_DEATHS`` times in a row without answering
anything raises :class:`SignerFailed` out of the nursery: the service stops, loudly.  On exit
the processes' stdin is closed, they answer what they were sent and exit (killed after
``STOP_SECONDS``).
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, cast

import trio

from etrans.adapters.crypto.dkim_signer import DkimSigner, private_key, signature_field
from etrans.adapters.crypto.signing_child import (
    UNKNOWN_KEY,
    KeyCache,
    Reply,
    frame,
    take_frames,
)
from etrans.errors import RetryLater
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from etrans.app.signing import DkimKey

log = get_logger(__name__)

CHILD_COMMAND = (sys.executable, "-m", "etrans.adapters.crypto.signing_child")
MAX_IN_FLIGHT = 32
MAX_QUICK_DEATHS = 5
STOP_SECONDS = 5.0


class SignerFailed(Exception):
    """The signing processes cannot be kept running."""


@dataclass(eq=False)
class _Request:
    key_id: bytes
    pem: bytes
    digest: bytes
    done: trio.Event = field(default_factory=trio.Event)
    asked_at: float = field(default_factory=time.perf_counter)
    signature: bytes | None = None
    error: Exception | None = None

    def answer(self, signature: bytes | None, error: Exception | None) -> None:
        self.signature, self.error = signature, error
        self.done.set()


@lru_cache(maxsize=4096)
def _key_id(pem: bytes) -> bytes:
    return hashlib.sha256(pem).digest()[:16]


class SigningProcesses:
    """Signs digests in child processes; build it with :func:`open_signing_processes`."""

    def __init__(self, count: int, command: Sequence[str] = CHILD_COMMAND) -> None:
        if count < 1:
            raise ValueError("at least one signing process")
        self.count = count
        self._command = list(command)
        self._send, self._receive = trio.open_memory_channel[_Request](math.inf)
        self.pids: list[int | None] = [None] * count
        self.signed = 0
        self.restarts = 0
        self.failed_requests = 0
        self.wait_seconds = 0.0  # from request to answer, summed over the answered requests

    async def sign_digest(self, pem: bytes, digest: bytes) -> bytes:
        """The PKCS#1 v1.5 signature of a SHA-256 ``digest``; ``ValueError``: an unusable key,
        :class:`RetryLater`: the process died before answering."""
        request = _Request(_key_id(pem), pem, digest)
        try:
            self._send.send_nowait(request)
        except trio.ClosedResourceError:
            raise RetryLater("the DKIM signing processes are shut down") from None
        await request.done.wait()
        self.wait_seconds += time.perf_counter() - request.asked_at
        if request.error is not None:
            raise request.error
        assert request.signature is not None
        return request.signature

    def close(self) -> None:
        """No more requests: the processes answer those they have, then exit."""
        self._send.close()

    def statistics(self) -> dict[str, object]:
        return {"processes": self.count, "pids": list(self.pids), "signed": self.signed,
                "restarts": self.restarts, "failed_requests": self.failed_requests,
                "mean_wait_us": round(1e6 * self.wait_seconds / max(self.signed, 1)),
                "waiting": self._receive.statistics().current_buffer_used}

    async def keep_running(self, slot: int,
                            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                            ) -> None:
        """Runs process number ``slot`` until the request channel closes, restarting it."""
        quick_deaths = 0
        while True:
            child = _Child(await trio.lowlevel.open_process(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
            self.pids[slot] = child.process.pid
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            try:
                finished = await child.run(self._receive.clone(), self)
            finally:
                failed = child.fail_unanswered()
                self.failed_requests += failed
                await child.stop()
            if finished:
                return
            quick_deaths = 0 if child.answered else quick_deaths + 1
            log.error("DKIM signing process died; starting another", pid=child.process.pid,
                      returncode=child.process.returncode, answered=child.answered,
                      failed_requests=failed)
            if quick_deaths >= MAX_QUICK_DEATHS:
                raise SignerFailed(f"the DKIM signing process died {quick_deaths} times in a "
                                   f"row without signing anything ({' '.join(self._command)})")
            self.restarts += 1
            await trio.sleep(min(0.05 * 2 ** quick_deaths, 2.0))


class _Child:
    """One incarnation of a signing process and its unanswered requests."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.keys = KeyCache()  # the mirror of the process's own
        self.unanswered: dict[int, _Request] = {}
        self.next_id = 0
        self.answered = 0
        self.slots = trio.Semaphore(MAX_IN_FLIGHT)
        self.input_closed = False

    async def run(self, requests: trio.MemoryReceiveChannel[_Request],
                  owner: SigningProcesses) -> bool:
        """True when ``requests`` ended and every request was answered; False when the process
        died (or broke the protocol)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, requests)
            intact = await self._read(owner)
            nursery.cancel_scope.cancel()
        return intact and self.input_closed and not self.unanswered

    async def _write(self, requests: trio.MemoryReceiveChannel[_Request]) -> None:
        assert self.process.stdin is not None
        async with requests:
            while True:
                await self.slots.acquire()
                try:
                    batch = [await requests.receive()]
                except trio.EndOfChannel:
                    break
                while len(batch) < MAX_IN_FLIGHT:
                    try:
                        self.slots.acquire_nowait()
                    except trio.WouldBlock:
                        break
                    try:
                        batch.append(requests.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        self.slots.release()
                        break
                try:
                    await self.process.stdin.send_all(frame([self._entry(r) for r in batch]))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the process died: the reader sees it
        await self.process.stdin.aclose()  # shutdown: the process answers, then exits
        self.input_closed = True

    def _entry(self, request: _Request) -> tuple[int, bytes, bytes | None, bytes]:
        self.next_id += 1
        self.unanswered[self.next_id] = request
        pem = request.pem if self.keys.use(request.key_id) else None
        return self.next_id, request.key_id, pem, request.digest

    async def _read(self, owner: SigningProcesses) -> bool:
        """Delivers answers until the process closes stdout; False if it broke the protocol."""
        assert self.process.stdout is not None
        buffer = bytearray()
        while chunk := await self.process.stdout.receive_some(1 << 16):
            buffer += chunk
            for replies in take_frames(buffer):
                for request_id, signature, error in cast("list[Reply]", replies):
                    if error == UNKNOWN_KEY:
                        log.error("DKIM signing process lost track of a key")
                        return False
                    request = self.unanswered.pop(request_id)
                    self.slots.release()
                    self.answered += 1
                    owner.signed += signature is not None
                    request.answer(signature, ValueError(error) if error else None)
        return True

    def fail_unanswered(self) -> int:
        for request in self.unanswered.values():
            request.answer(None, RetryLater("the DKIM signing process died before answering"))
        count = len(self.unanswered)
        self.unanswered.clear()
        return count

    async def stop(self) -> None:
        with trio.CancelScope(shield=True):
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    await pipe.aclose()  # stdin closed: it answers what it read, then exits
            with trio.move_on_after(STOP_SECONDS):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()


@asynccontextmanager
async def open_signing_processes(count: int, command: Sequence[str] = CHILD_COMMAND
                                 ) -> AsyncIterator[SigningProcesses]:
    """``count`` signing processes, running until the block exits (see the module docstring)."""
    processes = SigningProcesses(count, command)
    async with trio.open_nursery() as nursery:
        for slot in range(count):
            await nursery.start(processes.keep_running, slot)
        try:
            yield processes
        finally:
            processes.close()


class ProcessDkimSigner:
    """:class:`DkimSigner`'s signatures, the RSA step made by :class:`SigningProcesses`."""

    def __init__(self, processes: SigningProcesses, signer: DkimSigner | None = None) -> None:
        self._processes = processes
        self._signer = signer or DkimSigner()

    async def sign(self, message: bytes, key: DkimKey) -> bytes:
        private_key(key.private_key_pem)  # ValueError here for a key that cannot sign (cached)
        fields, digest = self._signer.prepare(message, key)
        signature = await self._processes.sign_digest(key.private_key_pem, digest)
        return signature_field(fields, signature) + message

    def statistics(self) -> dict[str, object]:
        return self._processes.statistics()
