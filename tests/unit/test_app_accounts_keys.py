"""The API key and sender use cases (:mod:`etrans.app.api_keys`, :mod:`etrans.app.senders`)
through the MessageBus, on in-memory fakes.

API keys: a key is shown once and stored as its hash, a key created with a key stays within its
rights (delegation), deleting a key deletes the keys it created and revokes them all in the
cache, a user only reaches their own keys.  Senders: the account is an address of one of the
user's own domains, unique, its credentials are sealed before they are stored or cached.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from etrans.app.api_keys import CreateApiKey, DeleteApiKey, GetApiKey, ListApiKeys
from etrans.app.records import REVOKED
from etrans.app.senders import CreateSender
from etrans.domain.api_keys import KEY_PREFIX, hash_api_key
from etrans.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from tests.unit.fakes_accounts import NOW, AccountWorld


@pytest.fixture
def world() -> AccountWorld:
    return AccountWorld()


async def test_a_key_is_shown_once_and_stored_as_its_hash(world):
    made = await world.handle(CreateApiKey(1, "ci", expires_in_days=30))
    assert made.key.startswith(KEY_PREFIX)
    assert made.key not in repr(made)
    stored = await world.handle(GetApiKey(1, made.record.id))
    assert stored.key_hash == hash_api_key(made.key)
    assert (stored.permission, stored.expires_at) == ("full_access", NOW + timedelta(days=30))


async def test_permission_and_expiry_are_checked(world):
    with pytest.raises(InvalidInput, match="permission must be one of"):
        await world.handle(CreateApiKey(1, "x", permission="root"))
    with pytest.raises(InvalidInput, match="expires_in_days must be one of"):
        await world.handle(CreateApiKey(1, "x", expires_in_days=3))
    assert world.api_keys.rows == {}


async def test_a_key_creates_keys_only_within_its_own_rights(world):
    sending = await world.handle(CreateApiKey(1, "sending", permission="sending_access",
                                              expires_in_days=30))
    creator = sending.record.id
    with pytest.raises(Forbidden, match="more permission"):
        await world.handle(CreateApiKey(1, "up", permission="full_access",
                                        created_by_key_id=creator))
    with pytest.raises(Forbidden, match="outlives it"):
        await world.handle(CreateApiKey(1, "never", permission="read_only",
                                        created_by_key_id=creator))
    with pytest.raises(Forbidden, match="outlives it"):
        await world.handle(CreateApiKey(1, "later", permission="read_only", expires_in_days=60,
                                        created_by_key_id=creator))
    child = await world.handle(CreateApiKey(1, "child", permission="read_only",
                                            expires_in_days=7, created_by_key_id=creator))
    assert world.api_keys.rows[child.record.id][1] == creator


async def test_a_deleted_or_foreign_creator_key_is_unauthorized(world):
    mine = await world.handle(CreateApiKey(1, "mine"))
    with pytest.raises(Unauthorized, match="Invalid API key"):
        await world.handle(CreateApiKey(2, "x", created_by_key_id=mine.record.id))
    await world.handle(DeleteApiKey(1, mine.record.id))
    with pytest.raises(Unauthorized, match="Invalid API key"):
        await world.handle(CreateApiKey(1, "x", created_by_key_id=mine.record.id))


async def test_delete_revokes_the_key_and_every_key_it_created(world):
    root = await world.handle(CreateApiKey(1, "root"))
    child = await world.handle(CreateApiKey(1, "child", created_by_key_id=root.record.id))
    grandchild = await world.handle(CreateApiKey(1, "grandchild",
                                                 created_by_key_id=child.record.id))
    sibling = await world.handle(CreateApiKey(1, "sibling"))
    assert await world.handle(DeleteApiKey(1, root.record.id)) == 3
    for made in (root, child, grandchild):
        assert world.key_cache.entries[hash_api_key(made.key)] == REVOKED
        with pytest.raises(NotFound, match="API key not found"):
            await world.handle(GetApiKey(1, made.record.id))
    assert hash_api_key(sibling.key) not in world.key_cache.entries
    page = await world.handle(ListApiKeys(1))
    assert ([k.name for k in page.rows], page.total) == (["sibling"], 1)


async def test_keys_are_per_user(world):
    mine = await world.handle(CreateApiKey(1, "mine"))
    with pytest.raises(NotFound):
        await world.handle(GetApiKey(2, mine.record.id))
    with pytest.raises(NotFound):
        await world.handle(DeleteApiKey(2, mine.record.id))
    assert world.key_cache.entries == {}
    assert (await world.handle(ListApiKeys(2))).total == 0


async def test_list_pages_newest_first(world):
    for i in range(5):
        await world.handle(CreateApiKey(1, f"k{i}"))
    page = await world.handle(ListApiKeys(1, page=2, per_page=2))
    assert ([k.name for k in page.rows], page.total, page.page) == (["k2", "k1"], 5, 2)


# -- senders ------------------------------------------------------------------------------------

def _domain(world: AccountWorld, user_id: int = 1, name: str = "a.example") -> int:
    return world.domains.add(user_id, name).id


async def test_a_sender_is_sealed_stored_and_cached(world):
    domain_id = _domain(world)
    sender = await world.handle(CreateSender(1, " NoReply@A.example ", "a.example", "s3cret-pw"))
    assert (sender.account, sender.domain, sender.active) == ("noreply@a.example", "a.example",
                                                              True)
    assert (sender.daily_limit, sender.hourly_limit, sender.created_at) == (100, 4, NOW)
    _, stored_domain, value = world.senders.rows[0]
    assert (stored_domain, value) == (domain_id, "sealed(noreply@a.example:s3cret-pw)")
    assert world.credential_cache.values == {1: value}
    assert "s3cret-pw" not in repr(CreateSender(1, "a@a.example", "a.example", "s3cret-pw"))


@pytest.mark.parametrize(("account", "domain", "message"), [
    ("not-an-address", "a.example", "must be an email address"),
    ("a b@a.example", "a.example", "must be an email address"),
    ("a@b.example", "a.example", "is not an address of domain a.example"),
    ("a@theirs.example", "theirs.example", "Domain theirs.example is not one of your domains"),
])
async def test_the_sender_must_be_an_address_of_an_owned_domain(world, account, domain,
                                                                  message):
    _domain(world)
    _domain(world, user_id=2, name="theirs.example")
    with pytest.raises(InvalidInput, match=message):
        await world.handle(CreateSender(1, account, domain, "password1"))
    assert world.senders.rows == []
    assert world.credential_cache.values == {}


async def test_a_sender_account_is_unique_and_its_password_long_enough(world):
    _domain(world)
    with pytest.raises(InvalidInput, match="at least 8 characters"):
        await world.handle(CreateSender(1, "a@a.example", "a.example", "short"))
    await world.handle(CreateSender(1, "a@a.example", "a.example", "password1"))
    with pytest.raises(InvalidInput, match=r"Sender a@a\.example already exists"):
        await world.handle(CreateSender(1, "A@a.example", "a.example", "password2"))


async def test_a_deleted_domain_takes_no_new_sender(world):
    domain_id = _domain(world)
    world.domains.deleted.add(domain_id)
    with pytest.raises(InvalidInput, match="not one of your domains"):
        await world.handle(CreateSender(1, "a@a.example", "a.example", "password1"))
