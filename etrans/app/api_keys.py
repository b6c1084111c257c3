"""Use cases of API keys: create (the key is shown once), list, get, delete (revoked at once).

A key created with an API key (``created_by_key_id``) is bounded by that key
(:func:`~etrans.domain.api_keys.check_delegation`) and deleted with it: deleting a key deletes
every key it created, recursively, and revokes them all in the cache."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from etrans.app.account_records import ApiKey, ApiKeyPage, NewApiKey
from etrans.domain.api_keys import (
    Permission,
    check_delegation,
    expiry_from,
    generate_api_key,
    hash_api_key,
)
from etrans.errors import NotFound, Unauthorized
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.accounts import AccountDeps
    from etrans.app.bus import MessageBus

log = get_logger(__name__)


@dataclass(frozen=True)
class CreateApiKey:
    """``created_by_key_id``: the API key the request was authenticated with (None for a session
    or a Bearer token, which keep full rights).  ``permission`` None: full_access."""

    user_id: int
    name: str
    permission: str | None = None
    expires_in_days: object = None  # validated by expiry_from
    created_by_key_id: int | None = None


@dataclass(frozen=True)
class ListApiKeys:
    user_id: int
    page: int = 1
    per_page: int = 20


@dataclass(frozen=True)
class GetApiKey:
    user_id: int
    key_id: int


@dataclass(frozen=True)
class DeleteApiKey:
    user_id: int
    key_id: int


async def create_api_key(deps: AccountDeps, cmd: CreateApiKey) -> NewApiKey:
    level = Permission.parse(cmd.permission if cmd.permission is not None else "full_access")
    expires_at = expiry_from(deps.clock(), cmd.expires_in_days)
    if cmd.created_by_key_id is not None:
        creator = await deps.api_keys.get(cmd.user_id, cmd.created_by_key_id)
        if creator is None:
            raise Unauthorized("Invalid API key")
        check_delegation(creator_permission=Permission[creator.permission],
                         creator_expires_at=creator.expires_at, permission=level,
                         expires_at=expires_at)
    key = generate_api_key()
    row = await deps.api_keys.create(
        user_id=cmd.user_id, name=cmd.name, key_hash=hash_api_key(key), key_prefix=key[:16],
        permission=level.name, expires_at=expires_at, created_by_key_id=cmd.created_by_key_id)
    if row is None:  # the creator was deleted meanwhile
        raise Unauthorized("Invalid API key")
    log.info("api key created", user_id=cmd.user_id, key_id=row.id, permission=level.name,
             created_by_key_id=cmd.created_by_key_id)
    return NewApiKey(key=key, record=row)


async def list_api_keys(deps: AccountDeps, cmd: ListApiKeys) -> ApiKeyPage:
    rows, total = await deps.api_keys.page(cmd.user_id, page=cmd.page, per_page=cmd.per_page)
    return ApiKeyPage(rows, total, cmd.page, cmd.per_page)


async def get_api_key(deps: AccountDeps, cmd: GetApiKey) -> ApiKey:
    row = await deps.api_keys.get(cmd.user_id, cmd.key_id)
    if row is None:
        raise NotFound("API key not found")
    return row


async def delete_api_key(deps: AccountDeps, cmd: DeleteApiKey) -> int:
    """The number of keys deleted: this one and those it created."""
    key_hashes = await deps.api_keys.delete(cmd.user_id, cmd.key_id)
    if key_hashes is None:
        raise NotFound("API key not found")
    # The rows are gone from the store's point of view; the cache must forget them too, or a
    # cached "valid" entry would keep a key working until its TTL.
    for key_hash in key_hashes:
        await deps.api_key_cache.revoke(key_hash)
    log.info("api key deleted", user_id=cmd.user_id, key_id=cmd.key_id,
             with_keys_it_created=len(key_hashes) - 1)
    return len(key_hashes)


def register(bus: MessageBus, deps: AccountDeps) -> None:
    bus.register(CreateApiKey, partial(create_api_key, deps))
    bus.register(ListApiKeys, partial(list_api_keys, deps))
    bus.register(GetApiKey, partial(get_api_key, deps))
    bus.register(DeleteApiKey, partial(delete_api_key, deps))
