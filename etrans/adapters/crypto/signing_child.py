"""A DKIM signing process: signs SHA-256 digests with RSA keys, for :mod:`.signing_processes`.

Run as ``python -m etrans.adapters.crypto.signing_child`` with pipes on stdin and stdout; the
RSA step of a signature (~200 us of OpenSSL) then runs under this process's own GIL, on
another CPU than the Trio thread of ``etrans sendmail``.  stdin carries frames (4-byte
big-endian length, then a pickled list of ``(request_id, key_id, pem or None, digest)``), stdout
the answers, one frame each: ``[(request_id, signature or None, error or None)]``.

A key's PEM comes with the first request for it only: the parent keeps a mirror of this
process's key cache (:class:`KeyCache`, the same capacity and the same order of use), so both
know which keys are here without asking.  Frames come from the parent only (pickle is safe
here: the parent made them).

The process ignores SIGINT and SIGTERM: a ``systemctl stop`` signals the whole control group,
and the parent still needs signatures while it drains; it exits when stdin closes (the parent
shut it down, or the parent died).
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from collections import OrderedDict
from typing import cast

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

KEY_CAPACITY = 4096
# The answer for a key id this process does not hold: the two caches disagree (a bug), so the
# parent restarts the process instead of turning it into "unusable key".
UNKNOWN_KEY = "unknown key id"
FRAME_HEADER = struct.Struct(">I")
Request = tuple[int, bytes, "bytes | None", bytes]
Reply = tuple[int, "bytes | None", "str | None"]


class KeyCache:
    """The keys of this process by key id, least recently used first.  :meth:`use` is what
    both sides do for each request, in the same order: the parent's copy holds no keys, only
    whether this process has the key (a PEM is then not sent again)."""

    def __init__(self, capacity: int = KEY_CAPACITY) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[bytes, object] = OrderedDict()

    def use(self, key_id: bytes, value: object = None) -> bool:
        """Marks ``key_id`` used; True when it was not here (and is now, with ``value``)."""
        if key_id in self._entries:
            self._entries.move_to_end(key_id)
            return False
        self._entries[key_id] = value
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return True

    def get(self, key_id: bytes) -> object:
        return self._entries.get(key_id)


def frame(payload: object) -> bytes:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEADER.pack(len(data)) + data


def take_frames(buffer: bytearray) -> list[object]:
    """The complete frames at the start of ``buffer`` (removed from it), unpickled."""
    frames = []
    offset = 0
    while len(buffer) - offset >= FRAME_HEADER.size:
        (size,) = FRAME_HEADER.unpack_from(buffer, offset)
        end = offset + FRAME_HEADER.size + size
        if len(buffer) < end:
            break
        frames.append(pickle.loads(buffer[offset + FRAME_HEADER.size:end]))
        offset = end
    del buffer[:offset]
    return frames


def _load(pem: bytes) -> rsa.RSAPrivateKey | str:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        return f"unusable DKIM key: {exc}"
    return key if isinstance(key, rsa.RSAPrivateKey) else "a DKIM key must be RSA"


def sign(request: Request, keys: KeyCache) -> Reply:
    request_id, key_id, pem, digest = request
    if pem is not None:
        keys.use(key_id, _load(pem))
    else:
        keys.use(key_id)
    key = keys.get(key_id)
    if isinstance(key, rsa.RSAPrivateKey):
        return request_id, key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())), None
    return request_id, None, key if isinstance(key, str) else UNKNOWN_KEY


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(stdin: int = 0, stdout: int = 1) -> None:
    """Answers requests until stdin closes, each as soon as it is signed: answering a batch at
    once made the parent's workers wait for the whole batch while this process waited for
    the next one (measured: 2,258 signed messages/s, the Trio thread 45 % busy)."""
    keys = KeyCache()
    buffer = bytearray()
    while chunk := os.read(stdin, 1 << 20):
        buffer += chunk
        for requests in take_frames(buffer):
            for request in cast("list[Request]", requests):
                _write_all(stdout, frame([sign(request, keys)]))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        serve()
    except BrokenPipeError:  # the parent is gone
        sys.exit(0)


if __name__ == "__main__":
    main()
