"""Use cases of API keys: create (the key is shown once), list, get, delete (revoked at once)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from etrans.app.domains import iso
from etrans.domain.api_keys import (
    Permission,
    expiry_from,
    generate_api_key,
    hash_api_key,
    is_expired,
)
from etrans.domain.domains import format_key_id
from etrans.errors import NotFound
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.adapters.sql.usend import ApiKey
    from etrans.app.domains import AccountServices

log = get_logger(__name__)


def _view(row: ApiKey, now: datetime) -> dict[str, Any]:
    return {"id": format_key_id(row.id), "name": row.name, "permission": row.permission,
            "expires_at": iso(row.expires_at), "is_expired": is_expired(row.expires_at, now),
            "created_at": iso(row.created_at)}


async def create_api_key(s: AccountServices, user_id: int, *, name: str,
                         permission: str | None, expires_in_days: object) -> dict[str, Any]:
    now = datetime.now(UTC)
    level = Permission.parse(permission if permission is not None else "full_access")
    expires_at = expiry_from(now, expires_in_days)
    key = generate_api_key()
    row = await s.usend(lambda: s.accounts.create_api_key(
        user_id=user_id, name=name, key_hash=hash_api_key(key), key_prefix=key[:16],
        permission=level.name, expires_at=expires_at))
    log.info("api key created", user_id=user_id, key_id=row.id, permission=level.name)
    return {"id": format_key_id(row.id), "name": row.name, "key": key,
            "permission": row.permission, "expires_at": iso(row.expires_at),
            "created_at": iso(row.created_at)}


async def list_api_keys(s: AccountServices, user_id: int, *, page: int,
                        per_page: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    rows, total = await s.usend(lambda: s.accounts.list_api_keys(user_id, page=page,
                                                                  per_page=per_page))
    return {"data": [_view(r, now) for r in rows], "total": total, "page": page,
            "per_page": per_page}


async def get_api_key(s: AccountServices, user_id: int, key_id: int) -> dict[str, Any]:
    row = await s.usend(s.accounts.get_api_key, user_id, key_id)
    if row is None:
        raise NotFound("API key not found")
    return {**_view(row, datetime.now(UTC)), "active": row.active,
            "updated_at": iso(row.updated_at)}


async def delete_api_key(s: AccountServices, user_id: int, key_id: int) -> dict[str, Any]:
    key_hash = await s.usend(s.accounts.delete_api_key, user_id, key_id)
    if key_hash is None:
        raise NotFound("API key not found")
    # The row is gone from the store's point of view; the cache must forget it too, or a cached
    # "valid" entry would keep the key working until its TTL.
    if s.api_key_cache is not None:
        await s.api_key_cache.revoke(key_hash)
    log.info("api key deleted", user_id=user_id, key_id=key_id)
    return {"id": format_key_id(key_id), "deleted": True}
