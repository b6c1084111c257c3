"""Use cases of API keys: create (the key is shown once), list, get, delete (revoked at once).

A key created with an API key (``created_by_key_id``) is bounded by that key
(:func:`~etrans.domain.api_keys.check_delegation`) and deleted with it: deleting a key deletes
every key it created, recursively, and revokes them all in the cache."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from etrans.app.domains import iso
from etrans.domain.api_keys import (
    Permission,
    check_delegation,
    expiry_from,
    generate_api_key,
    hash_api_key,
    is_expired,
)
from etrans.domain.domains import format_key_id
from etrans.errors import NotFound, Unauthorized
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
                         permission: str | None, expires_in_days: object,
                         created_by_key_id: int | None = None) -> dict[str, Any]:
    """``created_by_key_id``: the API key the request was authenticated with (None for a session
    or a Bearer token, which keep full rights)."""
    now = datetime.now(UTC)
    level = Permission.parse(permission if permission is not None else "full_access")
    expires_at = expiry_from(now, expires_in_days)
    if created_by_key_id is not None:
        creator = await s.usend(s.accounts.get_api_key, user_id, created_by_key_id)
        if creator is None:
            raise Unauthorized("Invalid API key")
        check_delegation(creator_permission=Permission[creator.permission],
                         creator_expires_at=creator.expires_at, permission=level,
                         expires_at=expires_at)
    key = generate_api_key()
    row = await s.usend(lambda: s.accounts.create_api_key(
        user_id=user_id, name=name, key_hash=hash_api_key(key), key_prefix=key[:16],
        permission=level.name, expires_at=expires_at, created_by_key_id=created_by_key_id))
    if row is None:  # the creator was deleted meanwhile
        raise Unauthorized("Invalid API key")
    log.info("api key created", user_id=user_id, key_id=row.id, permission=level.name,
             created_by_key_id=created_by_key_id)
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
    key_hashes = await s.usend(s.accounts.delete_api_key, user_id, key_id)
    if key_hashes is None:
        raise NotFound("API key not found")
    # The rows are gone from the store's point of view; the cache must forget them too, or a
    # cached "valid" entry would keep a key working until its TTL.
    if s.api_key_cache is not None:
        for key_hash in key_hashes:
            await s.api_key_cache.revoke(key_hash)
    log.info("api key deleted", user_id=user_id, key_id=key_id,
             with_keys_it_created=len(key_hashes) - 1)
    return {"id": format_key_id(key_id), "deleted": True}
