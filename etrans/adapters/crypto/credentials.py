"""The SMTP credential cache format shared with the sendmail worker (Go and ours).

Redis hash ``auth``, field = user_id (as a decimal string), value = ASCII base64 (standard
alphabet, with padding) of AES-256-CBC(key=TOKEN_SECRET, iv=TOKEN_IV) over the PKCS#7-padded
UTF-8 JSON object ``{"username": "...", "password": "..."}`` (compact separators, keys in that
order).  See ``docs/wire-formats.md``, which carries a test vector checked by the tests.

The key and IV are the raw bytes of the TOKEN_SECRET (32) and TOKEN_IV (16) strings.  The IV is
fixed by the contract (the old system's choice): equal plaintexts give equal ciphertexts.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

AUTH_HASH = "auth"


class CredentialError(ValueError):
    """The cached value cannot be decrypted or parsed: wrong key, corrupt or foreign format."""


@dataclass(frozen=True)
class SmtpCredentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"SmtpCredentials(username={self.username!r}, password='**********')"


class CredentialCipher:
    def __init__(self, secret: str | bytes, iv: str | bytes) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        vector = iv.encode() if isinstance(iv, str) else iv
        if len(key) != 32 or len(vector) != 16:
            raise ValueError("TOKEN_SECRET must be 32 bytes and TOKEN_IV 16 bytes")
        self._cipher = Cipher(algorithms.AES(key), modes.CBC(vector))

    def encrypt(self, credentials: SmtpCredentials) -> str:
        plaintext = json.dumps(
            {"username": credentials.username, "password": credentials.password},
            separators=(",", ":"), ensure_ascii=False,
        ).encode()
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        encryptor = self._cipher.encryptor()
        return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")

    def seal(self, username: str, password: str) -> str:
        """Port ``CredentialSealer`` (:mod:`etrans.app.account_ports`): the cache value."""
        return self.encrypt(SmtpCredentials(username=username, password=password))

    def decrypt(self, value: str | bytes) -> SmtpCredentials:
        try:
            raw = base64.b64decode(value, validate=True)
            decryptor = self._cipher.decryptor()
            padded = decryptor.update(raw) + decryptor.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            plaintext = unpadder.update(padded) + unpadder.finalize()
            data = json.loads(plaintext.decode("utf-8"))
            return SmtpCredentials(username=str(data["username"]), password=str(data["password"]))
        except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise CredentialError(f"undecryptable credentials: {type(exc).__name__}") from None
