"""DKIM signatures with the RSA step in a child process (``SENDMAIL_DKIM_SIGNER=process``).

:class:`ProcessDkimSigner` implements :class:`etrans.app.ports.MessageSigner`: the message is
parsed, canonicalised and hashed in the Trio thread (:meth:`DkimSigner.prepare`), and the
RSA-2048 step runs in a child process (``python -m etrans.adapters.crypto.signing_process``)
under its own GIL, on the other CPU.  With signing threads (:mod:`.signing_threads`) the GIL
goes back and forth between the Trio thread and the signing threads at every RSA step; the
child shares no GIL with the Trio thread.  Measured in ``docs/performance.md`` ("A signing
process with binary frames"): signed 1,194 and 1,512 msg/s at 795 and 782 us of CPU per
message (child included), against 1,170 and 1,329 msg/s at 826 and 815 us with 2 threads.

The wire is small and binary, no pickling.  Request frames: ``>IBH`` (request id, kind,
payload length), then the payload; kind 0 (sign): key id (16 bytes) + SHA-256 digest (32),
answered; kind 1 (key): key id + PEM, sent before the first request for that key in each
child, not answered; kind 2 (forget): the child drops every key it holds, not answered - sent
when the child would hold more than ``max_keys`` keys (``MAX_KEYS``), so that a sendmail signing
for many domains does not keep every key it ever used; the keys are sent again when next
needed, after the forget frame on the same pipe, so requests written before it still find
theirs.  Reply frames: ``>IBH`` (request id, 0 signed / 1 failed, length), then
the signature or the error text.  The child signs every request of one read and answers them
with one write (batched like the threads).  The parent writes each frame with ``os.write`` on
the non-blocking pipe from the requesting task: a frame shorter than ``PIPE_BUF`` is written
whole or not at all, so no writer task and no lock; one reader task hands the answers back.

The child exits when its stdin closes (the parent shut it down, or died) and ignores SIGINT
and SIGTERM (a ``systemctl stop`` signals the whole control group and sendmail still needs
signatures while it drains).  A child that dies is logged and started again; the requests it
had not answered fail with :class:`~etrans.errors.RetryLater` (the pipeline retries those
emails: never sent unsigned, never lost), as do requests made while it restarts.
``MAX_QUICK_DEATHS`` deaths in a row without a signature raise :class:`SignerFailed`: the
service stops, loudly.  On exit stdin is closed: the child answers what it read, then exits
(killed after ``STOP_SECONDS``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import TYPE_CHECKING

import trio

from etrans.adapters.crypto.dkim_signer import DkimSigner, private_key, signature_field
from etrans.errors import RetryLater
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from etrans.app.signing import DkimKey

log = get_logger(__name__)

CHILD_COMMAND = (sys.executable, "-m", "etrans.adapters.crypto.signing_process")
HEADER = struct.Struct(">IBH")
SIGN, KEY, FORGET = 0, 1, 2
MAX_KEYS = 1024  # keys a child holds at most (as dkim_signer.private_key's cache)
SIGNED, FAILED = 0, 1
MAX_QUICK_DEATHS = 5
STOP_SECONDS = 5.0


class SignerFailed(Exception):
    """The signing process cannot be kept running."""


@lru_cache(maxsize=4096)
def _key_id(pem: bytes) -> bytes:
    return hashlib.sha256(pem).digest()[:16]


class _Pending:
    __slots__ = ("done", "error", "signature")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.signature: bytes | None = None
        self.error: Exception | None = None


class _Child:
    """One incarnation of the signing process: its keys and unanswered requests."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None
        self.process = process
        self.fd = process.stdin.fileno()  # type: ignore[attr-defined]  # trio's FdStream
        self.keys: set[bytes] = set()
        self.pending: dict[int, _Pending] = {}
        self.backlog = bytearray()
        self.answered = 0

    def fail_pending(self) -> int:
        for pending in self.pending.values():
            pending.error = RetryLater("the DKIM signing process died before answering")
            pending.done.set()
        count = len(self.pending)
        self.pending.clear()
        return count


class SigningProcess:
    """Signs SHA-256 digests in a child process; build it with :func:`open_signing_process`."""

    def __init__(self, command: Sequence[str] = CHILD_COMMAND, *,
                 max_keys: int = MAX_KEYS) -> None:
        self._command = list(command)
        self._max_keys = max_keys
        self.forgotten = 0  # forget frames sent
        self._child: _Child | None = None
        self._closing = False
        self._next_id = 0
        self.pid: int | None = None
        self.signed = 0
        self.restarts = 0
        self.failed_requests = 0

    async def sign_digest(self, pem: bytes, digest: bytes) -> bytes:
        """The PKCS#1 v1.5 signature of a SHA-256 ``digest``; ``ValueError``: an unusable key,
        :class:`RetryLater`: no process to sign (restarting, shut down) or it died."""
        child = self._child
        if child is None or self._closing:
            raise RetryLater("the DKIM signing process is not running")
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        request_id = self._next_id
        key_id = _key_id(pem)
        frame = HEADER.pack(request_id, SIGN, 16 + len(digest)) + key_id + digest
        if key_id not in child.keys:
            frame = HEADER.pack(0, KEY, 16 + len(pem)) + key_id + pem + frame
            if len(child.keys) >= self._max_keys:
                frame = HEADER.pack(0, FORGET, 0) + frame
                child.keys.clear()
                self.forgotten += 1
        pending = _Pending()
        child.pending[request_id] = pending
        child.keys.add(key_id)
        try:
            await self._write(child, frame)
        except OSError:  # the pipe is broken: the reader fails what is pending
            child.pending.pop(request_id, None)
            raise RetryLater("the DKIM signing process is gone") from None
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.signature is not None
        return pending.signature

    @staticmethod
    async def _write(child: _Child, frame: bytes) -> None:
        """Writes ``frame`` whole, after what is waiting: a frame shorter than ``PIPE_BUF`` goes
        at once or not at all; the rest (a long PEM, a full pipe) waits in ``child.backlog``,
        written by the task that found the pipe full, in order."""
        if child.backlog:
            child.backlog += frame
            return
        try:
            written = os.write(child.fd, frame)
        except BlockingIOError:
            written = 0
        if written == len(frame):
            return
        child.backlog += frame[written:]
        with trio.CancelScope(shield=True):  # the frames of other tasks wait behind these
            while child.backlog:
                await trio.lowlevel.wait_writable(child.fd)
                try:
                    written = os.write(child.fd, child.backlog)
                except BlockingIOError:
                    continue
                del child.backlog[:written]

    def statistics(self) -> dict[str, object]:
        child = self._child
        return {"process": self.pid, "signed": self.signed, "restarts": self.restarts,
                "failed_requests": self.failed_requests,
                "unanswered": len(child.pending) if child else 0,
                "keys": len(child.keys) if child else 0, "forgotten": self.forgotten}

    async def keep_running(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                           ) -> None:
        """Runs the child until :meth:`close`, starting another when it dies."""
        quick_deaths = 0
        while not self._closing:  # closed while a dead child was waiting to be replaced
            process = await trio.lowlevel.open_process(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            child = _Child(process)
            self._child, self.pid = child, process.pid
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            try:
                await self._read(child)
            finally:
                self._child = None
                self.failed_requests += child.fail_pending()
                await _stop(process)
            if self._closing:
                return
            quick_deaths = 0 if child.answered else quick_deaths + 1
            log.error("DKIM signing process died; starting another", pid=process.pid,
                      returncode=process.returncode, answered=child.answered)
            if quick_deaths >= MAX_QUICK_DEATHS:
                raise SignerFailed(f"the DKIM signing process died {quick_deaths} times in a "
                                   f"row without signing anything ({' '.join(self._command)})")
            self.restarts += 1
            await trio.sleep(min(0.05 * 2 ** quick_deaths, 2.0))

    async def _read(self, child: _Child) -> None:
        """Hands answers back until the child closes its stdout."""
        stdout = child.process.stdout
        assert stdout is not None
        buffer = bytearray()
        while chunk := await stdout.receive_some(1 << 16):
            buffer += chunk
            for request_id, status, payload in split_frames(buffer):
                pending = child.pending.pop(request_id)
                child.answered += 1
                if status == SIGNED:
                    pending.signature = payload
                    self.signed += 1
                else:
                    pending.error = ValueError(payload.decode(errors="replace"))
                pending.done.set()

    async def close(self) -> None:
        """No more requests: the child answers those it has, then exits."""
        self._closing = True
        child = self._child
        if child is not None and child.process.stdin is not None:
            with trio.CancelScope(shield=True):
                await child.process.stdin.aclose()


def split_frames(buffer: bytearray) -> list[tuple[int, int, bytes]]:
    """The whole frames at the start of ``buffer`` (request id, kind or status, payload), removed
    from it; a partial frame stays for the next read.  Both ends of the pipe read this way."""
    frames, offset = [], 0
    while len(buffer) - offset >= HEADER.size:
        request_id, kind, size = HEADER.unpack_from(buffer, offset)
        end = offset + HEADER.size + size
        if len(buffer) < end:
            break
        frames.append((request_id, kind, bytes(buffer[offset + HEADER.size:end])))
        offset = end
    del buffer[:offset]
    return frames


async def _stop(process: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                await pipe.aclose()
        with trio.move_on_after(STOP_SECONDS):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def open_signing_process(command: Sequence[str] = CHILD_COMMAND, *,
                               max_keys: int = MAX_KEYS) -> AsyncIterator[SigningProcess]:
    """The signing process, running (restarted if it dies) until the block exits."""
    signer = SigningProcess(command, max_keys=max_keys)
    async with trio.open_nursery() as nursery:
        await nursery.start(signer.keep_running)
        try:
            yield signer
        finally:
            await signer.close()


class ProcessDkimSigner:
    """:class:`DkimSigner`'s signatures, the RSA step made by :class:`SigningProcess`."""

    def __init__(self, process: SigningProcess, signer: DkimSigner | None = None) -> None:
        self._process = process
        self._signer = signer or DkimSigner()

    async def sign(self, message: bytes, key: DkimKey) -> bytes:
        private_key(key.private_key_pem)  # ValueError here for a key that cannot sign (cached)
        fields, digest = self._signer.prepare(message, key)
        signature = await self._process.sign_digest(key.private_key_pem, digest)
        return signature_field(fields, signature) + message

    def statistics(self) -> dict[str, object]:
        return self._process.statistics()


def serve(stdin: int = 0, stdout: int = 1) -> None:
    """The child: answers the requests of each read with one write, until stdin closes."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    pad, algorithm = padding.PKCS1v15(), Prehashed(hashes.SHA256())
    keys: dict[bytes, rsa.RSAPrivateKey | str] = {}
    buffer = bytearray()
    while chunk := os.read(stdin, 1 << 16):
        buffer += chunk
        replies = []
        for request_id, kind, payload in split_frames(buffer):
            key_id = payload[:16]
            if kind == FORGET:
                keys.clear()
                continue
            if kind == KEY:
                try:
                    loaded = serialization.load_pem_private_key(payload[16:], password=None)
                except ValueError as exc:
                    keys[key_id] = f"unusable DKIM key: {exc}"
                else:
                    keys[key_id] = (loaded if isinstance(loaded, rsa.RSAPrivateKey)
                                    else "a DKIM key must be RSA")
                continue
            key = keys.get(key_id, "unknown DKIM key id")
            try:
                if isinstance(key, str):
                    raise ValueError(key)
                status, answer = SIGNED, key.sign(payload[16:], pad, algorithm)
            except Exception as exc:  # that request's answer; the process goes on
                status, answer = FAILED, str(exc).encode()[:4000]
            replies.append(HEADER.pack(request_id, status, len(answer)) + answer)
        data = memoryview(b"".join(replies))
        while data:
            data = data[os.write(stdout, data):]


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        serve()
    except BrokenPipeError:  # the parent is gone
        sys.exit(0)


if __name__ == "__main__":
    main()
