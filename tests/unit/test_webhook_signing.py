"""Standard Webhooks signing (etrans/domain/webhook_signing.py), checked by the reference
implementation (the ``standardwebhooks`` package) rather than by our own arithmetic."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from etrans.domain.webhook_signing import (
    SECRET_PREFIX,
    InvalidWebhookSecret,
    new_secret,
    secret_key,
    signature,
    signed_headers,
)

BODY = b'{"type":"email.delivered","timestamp":"2026-12-06T06:50:00.000000Z","data":{}}'


def test_the_reference_library_verifies_our_headers() -> None:
    secret = new_secret()
    now = int(time.time())
    headers = signed_headers(secret_key(secret), "evt_0123", now, BODY)
    assert headers["webhook-id"] == "evt_0123"
    assert headers["webhook-timestamp"] == str(now)
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "email.delivered", "timestamp": "2026-12-06T06:50:00.000000Z", "data": {}}


def test_same_signature_as_the_reference_library() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the specification's example secret
    moment = datetime(2026, 12, 6, 7, 0, 0, tzinfo=UTC)
    expected = Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", moment, BODY.decode())
    assert signature(secret_key(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek",
                     int(moment.timestamp()), BODY) == expected


@pytest.mark.parametrize("change", ["body", "id", "timestamp", "secret"])
def test_anything_changed_fails_verification(change: str) -> None:
    secret = new_secret()
    now = int(time.time())
    headers = signed_headers(secret_key(secret), "evt_1", now, BODY)
    body = BODY
    if change == "body":
        body = BODY.replace(b"delivered", b"bounced")
    elif change == "id":
        headers["webhook-id"] = "evt_2"
    elif change == "timestamp":
        headers["webhook-timestamp"] = str(now - 1)
    else:
        secret = new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_secrets() -> None:
    secret = new_secret()
    assert secret.startswith(SECRET_PREFIX)
    assert len(secret_key(secret)) == 32
    assert secret != new_secret()
    raw = base64.b64encode(b"0123456789abcdef0123").decode().rstrip("=")
    assert secret_key(raw) == b"0123456789abcdef0123"  # no prefix, unpadded: accepted
    for bad in ("whsec_", "whsec_not base64!", ""):
        with pytest.raises(InvalidWebhookSecret):
            secret_key(bad)
