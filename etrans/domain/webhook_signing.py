"""Standard Webhooks signatures (https://www.standardwebhooks.com/): the three headers every
webhook delivery carries, so that a receiver can check who sent it and refuse replays.

* ``webhook-id``: the event id (the same on every attempt: receivers deduplicate by it);
* ``webhook-timestamp``: the attempt's time, in integer unix seconds;
* ``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256 over ``{id}.{timestamp}.{body}``, keyed
  with the bytes of the endpoint's secret (``whsec_`` + base64: the key is the decoded part).

Receivers verify with any Standard Webhooks library (the tests use the ``standardwebhooks``
package).  Pure rules, standard library only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # what new_secret() generates; the specification asks for 24 to 64


class InvalidWebhookSecret(ValueError):
    """A secret that is not ``whsec_`` + base64 of some bytes."""


def new_secret() -> str:
    """A fresh signing secret, in the form receivers paste into their library."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``secret`` (``whsec_`` optional, as in the reference libraries)."""
    encoded = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    try:
        # Unpadded base64 is accepted, as the reference libraries accept it.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidWebhookSecret("webhook secret is not base64") from None
    if not key:
        raise InvalidWebhookSecret("webhook secret is empty")
    return key


def signature(key: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{event_id}.{timestamp}.{body}``."""
    signed = b"%s.%d.%s" % (event_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(key: bytes, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt to deliver ``body``."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, event_id, timestamp, body),
    }
