"""DKIM key pairs: RSA-2048 generation, and the private key's encryption at rest.

The private key is never stored in clear.  Stored form (ASCII)::

    v1:<base64(nonce 12 bytes || AES-256-GCM ciphertext+tag of the PKCS#8 DER private key)>

The AES key is ``HKDF-SHA256(ikm=TOKEN_SECRET bytes, salt=None, info=b"etrans dkim private key v1",
length=32)``: a key of its own, derived from the secret the operator already manages, so the
SMTP-credential cipher (AES-CBC with the raw TOKEN_SECRET) and this one never share a key.  The
associated data is the domain name, so a stored key copied onto another domain does not decrypt.
Rotating TOKEN_SECRET makes existing stored DKIM keys undecryptable (re-create the domain).
"""

from __future__ import annotations

import base64
import os

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from etrans.domain.domains import DKIM_SELECTOR, DkimKeyPair, DkimRecord

_INFO = b"etrans dkim private key v1"
_VERSION = "v1:"


def generate_dkim_key_pair(selector: str = DKIM_SELECTOR, *, bits: int = 2048) -> DkimKeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    record = DkimRecord(selector=selector, public_key_b64=base64.b64encode(public_der).decode())
    return DkimKeyPair(record=record, private_key_pem=pem)


class RsaDkimKeys:
    """Port ``DkimKeyGenerator``: RSA generation is CPU work (tens of ms), done in a worker
    thread to keep it off the event loop."""

    def __init__(self, *, bits: int = 2048) -> None:
        self._bits = bits

    async def generate(self) -> DkimKeyPair:
        return await trio.to_thread.run_sync(lambda: generate_dkim_key_pair(bits=self._bits))


class DkimKeyError(ValueError):
    """A stored private key does not decrypt: wrong TOKEN_SECRET, other domain, or corrupt."""


class DkimKeyCipher:
    """Encrypts/decrypts DKIM private keys for storage (see the module docstring)."""

    def __init__(self, token_secret: str | bytes) -> None:
        ikm = token_secret.encode() if isinstance(token_secret, str) else token_secret
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(ikm)
        self._aead = AESGCM(key)

    def encrypt(self, private_key_pem: bytes, *, domain: str) -> str:
        private = serialization.load_pem_private_key(private_key_pem, password=None)
        der = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, der, domain.encode())
        return _VERSION + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, stored: str, *, domain: str) -> bytes:
        """The PEM (PKCS#8) private key."""
        if not stored.startswith(_VERSION):
            raise DkimKeyError("unknown stored DKIM key format")
        try:
            raw = base64.b64decode(stored[len(_VERSION):], validate=True)
            der = self._aead.decrypt(raw[:12], raw[12:], domain.encode())
        except (InvalidTag, ValueError) as exc:
            raise DkimKeyError(f"stored DKIM key does not decrypt: {type(exc).__name__}") from None
        private = serialization.load_der_private_key(der, password=None)
        return private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
