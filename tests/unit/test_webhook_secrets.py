"""Webhook signing secrets: their form (Standard Webhooks' ``whsec_`` + base64 of 24 bytes,
the form the standardwebhooks libraries take) and their sealing at rest, bound to the user."""

from __future__ import annotations

import base64

import pytest

from etrans.adapters.crypto.webhook_secrets import WebhookSecretCipher, WebhookSecretError
from etrans.domain.webhooks import new_signing_secret

KEY = "0123456789abcdef0123456789abcdef"


def test_a_new_secret_is_whsec_and_24_random_bytes() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
    assert new_signing_secret() != secret


def test_a_sealed_secret_unseals_for_its_user_only() -> None:
    cipher = WebhookSecretCipher(KEY)
    secret = new_signing_secret()
    sealed = cipher.seal(7, secret)
    assert sealed.startswith("v1:")
    assert secret not in sealed
    assert cipher.seal(7, secret) != sealed  # a fresh nonce each time
    assert cipher.unseal(7, sealed) == secret
    with pytest.raises(WebhookSecretError):
        cipher.unseal(8, sealed)
    with pytest.raises(WebhookSecretError):
        WebhookSecretCipher(KEY.upper()).unseal(7, sealed)
    for garbage in ("", "v1:", "v1:!!", "v2:" + sealed[3:], sealed[:-4]):
        with pytest.raises(WebhookSecretError):
            cipher.unseal(7, garbage)
