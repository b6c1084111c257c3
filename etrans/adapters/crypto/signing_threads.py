"""DKIM signatures with the RSA step in worker threads (``SENDMAIL_DKIM_SIGNER_THREADS``).

:class:`ThreadDkimSigner` implements :class:`etrans.app.ports.MessageSigner`: the message is
parsed, canonicalised and hashed in the Trio thread (:meth:`DkimSigner.prepare`, ~25 us), and
the RSA-2048 step (~200 us of OpenSSL) runs in one of a few dedicated threads
(:class:`SigningThreads`), on the other CPU: ``cryptography`` releases the GIL while OpenSSL
signs (cryptography 51: 4,700 signatures/s in one thread, 8,980 in two).

Why dedicated threads fed in batches, not ``trio.to_thread.run_sync`` per signature: the hand-off
is what the Trio thread pays, and it is the bottleneck.  Measured on the 2-CPU machine (3,000
RSA steps, 10 or 40 Trio tasks): ``trio.to_thread.run_sync`` 35-43 us of Trio-thread CPU per
signature (process: +50-60 us over signing inline), these threads 7-16 us (process: +10-20 us);
the pipe to a signing process that this replaces cost ~35 us in the Trio thread and ~10 us in
the process.  Each thread has its own queue: the Trio thread gives a request to the thread with
the fewest unanswered ones, a thread takes everything in its queue, signs it, and hands the
whole batch back with one ``run_sync_soon`` (one wake-up of the Trio thread per batch).

A thread cannot die on its own: an exception of a signature is that request's answer (the key
was already loaded in the Trio thread, so there is none in practice).  The threads run until
:func:`open_signing_threads` exits, after the pipeline has drained; a request made after that
raises :class:`~etrans.errors.RetryLater`.
"""

from __future__ import annotations

import queue
import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from etrans.adapters.crypto.dkim_signer import DkimSigner, private_key, rsa_sign, signature_field
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from cryptography.hazmat.primitives.asymmetric import rsa

    from etrans.app.signing import DkimKey


class _Request:
    __slots__ = ("digest", "done", "error", "key", "signature")

    def __init__(self, key: rsa.RSAPrivateKey, digest: bytes) -> None:
        self.key = key
        self.digest = digest
        self.done = trio.Event()
        self.signature: bytes | None = None
        self.error: Exception | None = None


class _Worker:
    """One signing thread and its queue (``None`` in the queue: stop)."""

    def __init__(self, number: int, token: trio.lowlevel.TrioToken,
                 owner: SigningThreads) -> None:
        self.requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self.unanswered = 0  # read and written in the Trio thread only
        self._token = token
        self._owner = owner
        self.thread = threading.Thread(target=self._run, name=f"dkim-signer-{number}",
                                       daemon=True)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self.requests.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    request = self.requests.get_nowait()
                except queue.Empty:
                    break
                if request is None:
                    stopping = True
                    break
                batch.append(request)
            for request in batch:
                try:
                    request.signature = rsa_sign(request.key, request.digest)
                except Exception as exc:  # the request's answer; the thread goes on
                    request.error = exc
            try:
                self._token.run_sync_soon(self._answer, batch)
            except trio.RunFinishedError:
                return

    def _answer(self, batch: list[_Request]) -> None:
        """In the Trio thread."""
        self.unanswered -= len(batch)
        self._owner.signed += len(batch)
        self._owner.batches += 1
        for request in batch:
            request.done.set()


class SigningThreads:
    """Signs SHA-256 digests in ``count`` threads; build it with :func:`open_signing_threads`
    (in the Trio thread: the threads hand their answers back to that run)."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("at least one signing thread")
        token = trio.lowlevel.current_trio_token()
        self._workers = [_Worker(number, token, self) for number in range(count)]
        self._closed = False
        self.signed = 0
        self.batches = 0

    def start(self) -> None:
        for worker in self._workers:
            worker.thread.start()

    async def sign_digest(self, key: rsa.RSAPrivateKey, digest: bytes) -> bytes:
        """The PKCS#1 v1.5 signature of a SHA-256 ``digest``."""
        if self._closed:
            raise RetryLater("the DKIM signing threads are shut down")
        worker = min(self._workers, key=lambda w: w.unanswered)
        request = _Request(key, digest)
        worker.unanswered += 1
        worker.requests.put(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.signature is not None
        return request.signature

    async def aclose(self) -> None:
        """The threads sign what they have, then end."""
        self._closed = True
        for worker in self._workers:
            worker.requests.put(None)
        for worker in self._workers:
            await trio.to_thread.run_sync(worker.thread.join)

    def statistics(self) -> dict[str, object]:
        return {"threads": len(self._workers), "signed": self.signed,
                "batches": self.batches,
                "mean_batch": round(self.signed / max(self.batches, 1), 2),
                "unanswered": sum(w.unanswered for w in self._workers)}


@asynccontextmanager
async def open_signing_threads(count: int) -> AsyncIterator[SigningThreads]:
    """``count`` signing threads, running until the block exits."""
    threads = SigningThreads(count)
    threads.start()
    try:
        yield threads
    finally:
        with trio.CancelScope(shield=True):
            await threads.aclose()


class ThreadDkimSigner:
    """:class:`DkimSigner`'s signatures, the RSA step made by :class:`SigningThreads`."""

    def __init__(self, threads: SigningThreads, signer: DkimSigner | None = None) -> None:
        self._threads = threads
        self._signer = signer or DkimSigner()

    async def sign(self, message: bytes, key: DkimKey) -> bytes:
        private = private_key(key.private_key_pem)  # ValueError: a key that cannot sign (cached)
        fields, digest = self._signer.prepare(message, key)
        signature = await self._threads.sign_digest(private, digest)
        return signature_field(fields, signature) + message

    def statistics(self) -> dict[str, object]:
        return self._threads.statistics()
