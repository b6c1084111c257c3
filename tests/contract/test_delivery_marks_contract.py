"""DeliveryMarks (:mod:`etrans.app.ports`): Redis (``RedisDeliveryMarks``) and the ``etrans dev``
store (``LocalDeliveryMarks``) remember finished messages alike.

What the sendmail worker relies on: a recorded outcome is read back (by a later process too: a
redelivered message is skipped after a restart), a new record replaces the old one, a mark lives
``ttl_seconds`` (SENDMAIL_DELIVERED_TTL_SECONDS, default 7 days) under
``etrans:sendmail:done:<message_id>``, and a lifetime below one second is refused.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from etrans.adapters.redis.delivery_marks import DEFAULT_TTL_SECONDS, DELIVERED, REJECTED


async def test_an_outcome_is_read_back_after_a_restart(kv_store: Any) -> None:
    marks = kv_store.delivery_marks()
    assert await marks.outcome("<m1@a.example>") is None
    await marks.record("<m1@a.example>", DELIVERED)
    await marks.record("<m2@a.example>", REJECTED)
    assert await marks.outcome("<m1@a.example>") == DELIVERED
    await kv_store.restart()
    marks = kv_store.delivery_marks()
    assert await marks.outcome("<m1@a.example>") == DELIVERED
    assert await marks.outcome("<m2@a.example>") == REJECTED
    await marks.record("<m2@a.example>", DELIVERED)
    assert await marks.outcome("<m2@a.example>") == DELIVERED


async def test_concurrent_workers_each_read_their_own_mark(kv_store: Any) -> None:
    marks = kv_store.delivery_marks()
    seen: dict[str, str | None] = {}

    async def one(n: int) -> None:
        await marks.record(f"m{n}", DELIVERED if n % 2 else REJECTED)
        seen[f"m{n}"] = await marks.outcome(f"m{n}")

    async with trio.open_nursery() as nursery:
        for n in range(40):
            nursery.start_soon(one, n)
    assert seen == {f"m{n}": DELIVERED if n % 2 else REJECTED for n in range(40)}


async def test_a_mark_lives_its_ttl_under_its_documented_key(kv_store: Any) -> None:
    marks, short = kv_store.delivery_marks(), kv_store.delivery_marks(ttl_seconds=60)
    await marks.record("m1", DELIVERED)
    await short.record("m2", DELIVERED)
    key = f"{kv_store.prefix}sendmail:done:m1"
    assert await kv_store.get(key) == DELIVERED
    left = await kv_store.ttl(key)
    assert left is not None
    assert DEFAULT_TTL_SECONDS - 2 <= left <= DEFAULT_TTL_SECONDS
    left = await kv_store.ttl(f"{kv_store.prefix}sendmail:done:m2")
    assert left is not None
    assert 58 <= left <= 60
    await kv_store.expire(key)
    assert await marks.outcome("m1") is None


@pytest.mark.parametrize("ttl_seconds", [0, -5])
async def test_a_lifetime_below_one_second_is_refused(kv_store: Any, ttl_seconds: int) -> None:
    with pytest.raises(ValueError, match="ttl_seconds must be positive"):
        kv_store.delivery_marks(ttl_seconds=ttl_seconds)
