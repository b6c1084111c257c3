"""Pure rules of API keys: permissions, generation, hashing, expiry.

A key is ``etrans_live_`` followed by 43 URL-safe base64 characters of 32 bytes from the
operating system's CSPRNG (``secrets``).  Only its SHA-256 (lower-case hex) is stored; the key
itself is shown once, in the creation response.  A key created with an API key has neither more
permission nor a later expiry than that key (:func:`check_delegation`).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from enum import IntEnum

from etrans.errors import Forbidden, InvalidInput

KEY_PREFIX = "etrans_live_"
ALLOWED_EXPIRY_DAYS = (7, 30, 60, 90, 180, 365)


class Permission(IntEnum):
    """read_only < sending_access < full_access: a higher level includes the lower ones."""

    read_only = 1
    sending_access = 2
    full_access = 3

    @classmethod
    def parse(cls, raw: object) -> Permission:
        if isinstance(raw, str) and raw in cls.__members__:
            return cls[raw]
        names = ", ".join(cls.__members__)
        raise InvalidInput(f"permission must be one of {names}")


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def expiry_from(now: datetime, expires_in_days: object) -> datetime | None:
    """``None`` (never) or ``now + days`` for an allowed duration; InvalidInput otherwise."""
    if expires_in_days is None:
        return None
    if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, int) \
            or expires_in_days not in ALLOWED_EXPIRY_DAYS:
        allowed = ", ".join(str(d) for d in ALLOWED_EXPIRY_DAYS)
        raise InvalidInput(f"expires_in_days must be one of {allowed} (or null for never)")
    return now + timedelta(days=expires_in_days)


def is_expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and expires_at <= now


def check_delegation(*, creator_permission: Permission, creator_expires_at: datetime | None,
                     permission: Permission, expires_at: datetime | None) -> None:
    """Forbidden unless a key created by an API key stays within that key's rights: no more
    permission, no later expiry (never-expiring only when the creator never expires)."""
    if permission > creator_permission:
        raise Forbidden(
            "An API key cannot create a key with more permission than its own: this key has "
            f"{creator_permission.name}, {permission.name} was asked"
        )
    if creator_expires_at is not None and (expires_at is None or expires_at > creator_expires_at):
        raise Forbidden(
            "An API key cannot create a key that outlives it: this key expires at "
            f"{creator_expires_at.isoformat()}, so expires_in_days must end by then (create "
            "longer-lived keys with a session or a Bearer token)"
        )
