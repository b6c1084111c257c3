"""DKIM signatures (RFC 6376): dkimpy's canonicalisation, OpenSSL's RSA.

:class:`DkimSigner` implements :class:`etrans.app.ports.MessageSigner`: ``rsa-sha256``,
``c=relaxed/relaxed``, the header fields of :data:`etrans.app.signing.SIGNED_HEADERS` that the
message has (each once, in that order) and the whole body (no ``l=``).  The body is
canonicalised by dkimpy's ``relaxed`` policy, the field folded by ``dkim.fold``, the header built
as ``dkim.DKIM.sign`` builds it, so any DKIM verifier (dkimpy's ``verify`` in the tests) accepts
it.  The header fields are split and canonicalised here, as ``dkim.rfc822_parse`` and
``dkim.hash_headers`` do but in half the time (:meth:`DkimSigner.prepare`; the same digest as
dkimpy's whole path, :meth:`DkimSigner.prepare_with_dkimpy`, checked by the tests).

The RSA step is not dkimpy's: dkimpy signs with Python integers (``pow`` with CRT), about
11 ms for a 2048-bit key on the benchmark machine, which would cap one worker process near 90
messages per second; ``cryptography`` (OpenSSL) signs the same digest in 0.2-0.5 ms (idle or
loaded machine; ``Prehashed`` SHA-256, PKCS#1 v1.5: the bytes dkimpy would produce).  Loaded keys
are kept per PEM (:func:`private_key`), so a domain's key is parsed once.  ``etrans sendmail``
makes the RSA step in a child process (:mod:`.signing_process`) or worker threads
(:mod:`.signing_threads`), with :meth:`DkimSigner.prepare` and :func:`signature_field`;
``etrans dev`` and ``SENDMAIL_DKIM_SIGNER_THREADS=0`` use :class:`DkimSigner` whole, in the
Trio thread.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from functools import lru_cache
from typing import TYPE_CHECKING, cast

import dkim  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy  # type: ignore[import-untyped]

from etrans.app.signing import SIGNED_HEADERS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.app.signing import DkimKey

_HEADER_NAME = b"DKIM-Signature"
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
# As dkimpy: b= first holds a placeholder long enough to fold onto a line of its own, so that
# folding again with the real signature leaves every other tag where it was.
_PLACEHOLDER = b"0" * 60


@lru_cache(maxsize=1024)
def private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """The loaded key; ``ValueError`` for one that is not RSA or does not parse."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"a DKIM key must be RSA, not {type(key).__name__}")
    return key


class DkimSigner:
    """Signs rendered messages (CRLF line ends); see the module docstring.

    :meth:`sign` runs all of it in the caller's thread (``etrans dev``,
    ``SENDMAIL_DKIM_SIGNER_THREADS=0``).  ``trio.to_thread.run_sync`` per RSA step was
    measured in an earlier session: the same rate for 8-25 % more CPU per signature (the hop
    costs the Trio thread ~40 us); :mod:`.signing_threads` hands the steps to dedicated
    threads in batches instead (~10 us).
    """

    def __init__(self, headers: Sequence[str] = SIGNED_HEADERS) -> None:
        self._headers = tuple(name.lower().encode("ascii") for name in headers)

    async def sign(self, message: bytes, key: DkimKey) -> bytes:
        """``message`` with its ``DKIM-Signature`` field first."""
        return self.signature_header(message, key) + message

    def signature_header(self, message: bytes, key: DkimKey, *,
                         timestamp: int | None = None) -> bytes:
        """The ``DKIM-Signature`` field (name, value, CRLF) for ``message``, in this thread."""
        private = private_key(key.private_key_pem)
        fields, digest = self.prepare(message, key, timestamp)
        return signature_field(fields, rsa_sign(private, digest))

    def prepare(self, message: bytes, key: DkimKey, timestamp: int | None = None
                ) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The tags (``b=`` still a placeholder) and the SHA-256 digest to sign, the same bytes
        as ``dkim.DKIM.sign`` computes; :func:`signature_field` makes the field once the
        digest is signed (PKCS#1 v1.5, SHA-256).

        The header fields are split and canonicalised here (:func:`_header_fields`,
        ~25 us per message instead of dkimpy's ~45 us: only the signed fields are
        canonicalised, with precompiled expressions); a message that is not CRLF throughout,
        or has a line that is not a header field, goes through dkimpy's ``rfc822_parse``.
        ``tests/unit/test_dkim_signing.py`` checks both give the same digest."""
        parsed = _header_fields(message)
        if parsed is None:
            return self.prepare_with_dkimpy(message, key, timestamp)
        headers, body = parsed
        fields, include, unsigned_value = self._tags(key, timestamp, body,
                                                     {name for name, _ in headers})
        hasher = hashlib.sha256()
        for name, value in _select(headers, include):
            hasher.update(name + b":" + _WSP.sub(b" ", value).strip() + b"\r\n")
        # The signature field itself, relaxed, without its CRLF (RFC 6376 3.7).
        hasher.update(b"dkim-signature:"
                      + _WSP.sub(b" ", unsigned_value.replace(b"\r\n", b"")).strip())
        return fields, hasher.digest()

    def prepare_with_dkimpy(self, message: bytes, key: DkimKey, timestamp: int | None = None
                            ) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """:meth:`prepare` with dkimpy's parsing and header canonicalisation throughout."""
        headers, body = dkim.rfc822_parse(message)
        fields, include, unsigned_value = self._tags(key, timestamp, body,
                                                     {name.lower() for name, _ in headers})
        hasher = hashlib.sha256()
        dkim.hash_headers(hasher, _RELAXED, _RELAXED.canonicalize_headers(headers), include,
                          (_HEADER_NAME, unsigned_value), dict(fields))
        return fields, hasher.digest()

    def _tags(self, key: DkimKey, timestamp: int | None, body: bytes, present: set[bytes]
              ) -> tuple[list[tuple[bytes, bytes]], list[bytes], bytes]:
        """The tags, the signed header names, the unsigned field's value (after the colon)."""
        include = [name for name in self._headers if name in present]
        if b"from" not in include:
            raise ValueError("a DKIM signature covers the From header field, and there is none")
        body_hash = base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())
        fields = [
            (b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", b"relaxed/relaxed"),
            (b"d", key.domain.encode("idna")), (b"s", key.selector.encode("ascii")),
            (b"t", str(int(time.time()) if timestamp is None else timestamp).encode()),
            (b"h", b" : ".join(include)), (b"bh", body_hash), (b"b", _PLACEHOLDER),
        ]
        folded = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_HEADER_NAME))
        return fields, include, b" " + dkim.RE_BTAG.sub(b"\\1", folded)


_WSP = re.compile(rb"[\t ]+")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


def _header_fields(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
    """(lower-case name, unfolded raw value) of each header field, and the body; None when the
    message is not CRLF throughout or a header line is neither a field nor a continuation."""
    end = message.find(b"\r\n\r\n")
    if end < 0 or message.count(b"\n") != message.count(b"\r\n"):
        return None
    headers: list[tuple[bytes, bytes]] = []
    for line in message[:end].split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not headers:
                return None
            headers[-1] = (headers[-1][0], headers[-1][1] + line)
        else:
            name, colon, value = line.partition(b":")
            if not colon or _FIELD_NAME.fullmatch(name) is None:
                return None
            headers.append((name.lower(), value))
    return headers, message[end + 4:]


def _select(headers: list[tuple[bytes, bytes]], include: list[bytes]
            ) -> list[tuple[bytes, bytes]]:
    """The fields signed for ``include``, as ``dkim.select_headers``: for each name the last
    instance not taken yet, from the bottom."""
    selected: list[tuple[bytes, bytes]] = []
    last: dict[bytes, int] = {}
    for name in include:
        i = last.get(name, len(headers))
        while i > 0:
            i -= 1
            if headers[i][0] == name:
                selected.append(headers[i])
                break
        last[name] = i
    return selected


def rsa_sign(private: rsa.RSAPrivateKey, digest: bytes) -> bytes:
    return private.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def signature_field(fields: list[tuple[bytes, bytes]], signature: bytes) -> bytes:
    """The header field with the real ``b=``, folded as dkimpy folds it."""
    fields = [*fields[:-1], (b"b", base64.b64encode(signature))]
    value = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + b"\r\n",
                      namelen=len(_HEADER_NAME))
    return cast("bytes", _HEADER_NAME + b": " + value)
