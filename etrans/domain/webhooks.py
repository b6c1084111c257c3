"""Webhook endpoints: the rules that need no I/O (issue 16).

- :func:`new_signing_secret`: ``whsec_`` + base64 of 24 random bytes (Standard Webhooks' form;
  the standardwebhooks libraries take it as it is);
- :func:`subscription`: the ``events`` of the API checked against
  :class:`etrans.domain.events.EventType` (no ``events`` = every type, stored as ``[]``);
- :data:`MAX_WEBHOOKS_PER_USER`.

The URL rules are in :mod:`etrans.domain.webhook_urls`.
"""

from __future__ import annotations

import base64
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
MAX_WEBHOOKS_PER_USER = 20
WEBHOOK_ID_PREFIX = "wh_"


def new_signing_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")
