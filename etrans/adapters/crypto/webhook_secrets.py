"""The webhook signing secrets' sealing at rest (``webhooks.secret_sealed``): port
:class:`etrans.app.webhook_ports.WebhookSecretSealer`.

The same scheme as the DKIM private keys (:mod:`etrans.adapters.crypto.dkim_keys`), with a key of
its own.  Stored form (ASCII)::

    v1:<base64(nonce 12 bytes || AES-256-GCM ciphertext+tag of the UTF-8 secret)>

The AES key is ``HKDF-SHA256(ikm=TOKEN_SECRET bytes, salt=None, info=b"etrans webhook secret
v1", length=32)``; the associated data is ``webhook-user:<user_id>``, so a sealed secret copied
onto another user's endpoint does not unseal.  Rotating TOKEN_SECRET makes the stored secrets
unusable (re-create the endpoints).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"etrans webhook secret v1"
_VERSION = "v1:"


class WebhookSecretError(ValueError):
    """A sealed secret does not unseal: wrong TOKEN_SECRET, another user's, or corrupt."""


class WebhookSecretCipher:
    def __init__(self, token_secret: str | bytes) -> None:
        ikm = token_secret.encode() if isinstance(token_secret, str) else token_secret
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(ikm)
        self._aead = AESGCM(key)

    @staticmethod
    def _associated(user_id: int) -> bytes:
        return f"webhook-user:{user_id}".encode()

    def seal(self, user_id: int, secret: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), self._associated(user_id))
        return _VERSION + base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, user_id: int, sealed: str) -> str:
        if not sealed.startswith(_VERSION):
            raise WebhookSecretError("unknown sealed webhook secret format")
        try:
            raw = base64.b64decode(sealed[len(_VERSION):], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], self._associated(user_id)).decode()
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise WebhookSecretError(
                f"sealed webhook secret does not unseal: {type(exc).__name__}") from None
