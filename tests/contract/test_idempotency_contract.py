"""IdempotencyStore (:mod:`etrans.app.ports`): Redis (``RedisIdempotencyStore``), the ``etrans dev``
store (``LocalIdempotencyStore``) and the fake of the unit tests keep Idempotency-Key records alike.

What the POST routes rely on (``docs/api.md``, "Idempotency"): ``begin`` claims a key exclusively
(of concurrent requests with one key exactly one starts), a completed request is replayed with its
status and body, another body under the same key is a mismatch, ``abandon`` frees the key; a claim
lasts 120 s (a crashed request does not block its key for a day), a response 24 h.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio

from etrans.adapters.redis.idempotency import record_key

BODY = {"id": "<m1@a.example>", "to": ["zoë@x.org"], "nested": {"n": [1, 2.5, None, True]}}


async def test_a_key_goes_through_its_states(kv: Any) -> None:
    keys = kv.idempotency()
    assert await keys.begin("u1:/emails:k", "fp") == ("started", None)
    assert await keys.begin("u1:/emails:k", "fp") == ("in_flight", None)
    assert await keys.begin("u1:/emails:k", "other") == ("mismatch", None)
    await keys.complete("u1:/emails:k", "fp", 201, BODY)
    assert await keys.begin("u1:/emails:k", "fp") == ("replay", (201, BODY))
    assert await keys.begin("u1:/emails:k", "other") == ("mismatch", None)
    await keys.abandon("u1:/emails:k")
    assert await keys.begin("u1:/emails:k", "other") == ("started", None)
    assert await keys.begin("u2:/emails:k", "fp") == ("started", None)  # scopes are apart


async def test_an_abandoned_claim_can_be_taken_again(kv: Any) -> None:
    keys = kv.idempotency()
    assert await keys.begin("s", "fp") == ("started", None)
    await keys.abandon("s")
    assert await keys.begin("s", "fp") == ("started", None)
    await keys.abandon("never-claimed")  # nothing to free: no error


async def test_concurrent_requests_with_one_key_start_once(kv: Any) -> None:
    keys = kv.idempotency()
    answers: list[str] = []

    async def one(fingerprint: str) -> None:
        state, _ = await keys.begin("race", fingerprint)
        answers.append(state)

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(one, "fp")
    assert Counter(answers) == {"started": 1, "in_flight": 29}


async def test_claims_and_responses_live_as_documented(kv_store: Any) -> None:
    keys = kv_store.idempotency()
    key = record_key(f"{kv_store.prefix}idem:", "s")
    assert await keys.begin("s", "fp") == ("started", None)
    left = await kv_store.ttl(key)
    assert left is not None
    assert 118 <= left <= 120
    await kv_store.expire(key)  # the request crashed: its claim runs out
    assert await keys.begin("s", "other") == ("started", None)
    await keys.complete("s", "other", 200, BODY)
    left = await kv_store.ttl(key)
    assert left is not None
    assert 86_398 <= left <= 86_400
    await kv_store.expire(key)
    assert await keys.begin("s", "fp") == ("started", None)


async def test_a_response_completed_after_the_claim_ran_out_is_replayed(kv_store: Any) -> None:
    keys = kv_store.idempotency()
    assert await keys.begin("slow", "fp") == ("started", None)
    await kv_store.expire(record_key(f"{kv_store.prefix}idem:", "slow"))
    await keys.complete("slow", "fp", 202, {"data": []})
    assert await keys.begin("slow", "fp") == ("replay", (202, {"data": []}))


async def test_an_unreadable_record_is_in_flight(kv_store: Any) -> None:
    keys = kv_store.idempotency()
    await kv_store.set(record_key(f"{kv_store.prefix}idem:", "garbled"), "{not json")
    assert await keys.begin("garbled", "fp") == ("in_flight", None)
