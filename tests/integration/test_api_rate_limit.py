"""Request rate limits of the API (etrans.api.rate_limit) against real PostgreSQL and Redis:
a burst above the limit admits exactly the limit, per API key, per user (Bearer), per client
address for requests without valid credentials (X-Forwarded-For only from trusted proxies), with
429, Retry-After and the RateLimit-Policy / RateLimit headers; a dead
Redis lets requests through."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from etrans.adapters.redis.client import open_redis
from etrans.adapters.redis.rate_limit import RedisRateCounter
from etrans.api.rate_limit import RateLimiter, RateLimitPolicy
from tests.integration.sending_api import SendingApi, open_sending_api

LIMIT = 20


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db, RATE_LIMIT_REQUESTS=str(LIMIT),
                                RATE_LIMIT_ANONYMOUS_REQUESTS="5", RATE_LIMIT_WINDOW_SECONDS="60",
                                RATE_LIMIT_TRUSTED_PROXIES="10.0.0.0/8") as built:
        yield built


async def _burst(api: SendingApi, count: int, headers: dict[str, str],
                 client: tuple[str, int] = ("192.0.2.10", 40000)) -> list[Any]:
    responses: list[Any] = []

    async def one() -> None:
        responses.append(await api.client.open("/emails", method="GET", headers=headers,
                                               scope_base={"client": client}))

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return responses


async def test_a_burst_above_the_limit_admits_exactly_the_limit_per_api_key(
        api: SendingApi) -> None:
    user = api.user()
    key, _ = api.api_key(user, "read_only")
    other_key, _ = api.api_key(user, "read_only")

    responses = await _burst(api, LIMIT + 15, {"X-API-KEY": key})

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * LIMIT + [429] * 15
    for response in responses:
        assert response.headers["RateLimit-Policy"] == f'"api-key";q={LIMIT};w=60'
    remaining = sorted(int(r.headers["RateLimit"].split(";r=")[1].split(";")[0])
                       for r in responses if r.status_code == 200)
    assert remaining == list(range(LIMIT))  # every admitted request saw its own count
    refused = [r for r in responses if r.status_code == 429]
    for response in refused:
        reset = int(response.headers["Retry-After"])
        assert 1 <= reset <= 60
        assert response.headers["RateLimit"] == f'"api-key";r=0;t={reset}'
        assert "Too many requests" in (await response.get_json())["detail"]
    # Another key of the same user has its own budget.
    status, _ = await api.call("GET", "/emails", {"X-API-KEY": other_key})
    assert status == 200


async def test_bearer_requests_count_per_user(api: SendingApi) -> None:
    user = api.user()
    responses = await _burst(api, LIMIT + 3, api.bearer(user))
    assert sorted(r.status_code for r in responses) == [200] * LIMIT + [429] * 3
    assert responses[0].headers["RateLimit-Policy"] == f'"user";q={LIMIT};w=60'
    status, _ = await api.call("GET", "/emails", api.bearer(api.user()))
    assert status == 200


async def test_requests_without_valid_credentials_count_per_client_address(api: SendingApi) -> None:
    # A key-guessing client: 5 answers 401, then 429 (the guesses stop being checked).
    responses = await _burst(api, 8, {"X-API-KEY": "guess"}, client=("192.0.2.20", 1))
    assert sorted(r.status_code for r in responses) == [401] * 5 + [429] * 3
    assert responses[0].headers["RateLimit-Policy"] == '"anonymous";q=5;w=60'
    # Another address is not affected, nor is a valid key from the same address.
    others = await _burst(api, 1, {}, client=("192.0.2.21", 1))
    assert others[0].status_code == 401
    key, _ = api.api_key(api.user(), "read_only")
    valid = await _burst(api, 1, {"X-API-KEY": key}, client=("192.0.2.20", 1))
    assert valid[0].status_code == 200


async def test_x_forwarded_for_is_believed_only_from_trusted_proxies(api: SendingApi) -> None:
    proxy = ("10.1.2.3", 5000)
    # Through the trusted proxy, two clients have two budgets.
    first = await _burst(api, 6, {"X-Forwarded-For": "198.51.100.1"}, client=proxy)
    second = await _burst(api, 1, {"X-Forwarded-For": "203.0.113.9, 198.51.100.2"},
                          client=proxy)
    assert sorted(r.status_code for r in first) == [401] * 5 + [429]
    assert second[0].status_code == 401
    # From an untrusted peer the header is ignored: rotating it does not buy more requests.
    spoofed = []
    for n in range(7):
        spoofed += await _burst(api, 1, {"X-Forwarded-For": f"198.51.100.{100 + n}"},
                                client=("192.0.2.30", 1))
    assert [r.status_code for r in spoofed] == [401] * 5 + [429] * 2


async def test_a_dead_limiter_store_lets_requests_through(api: SendingApi) -> None:
    async with open_redis("redis://127.0.0.1:1/0", reply_timeout=0.5) as dead:
        limiter = RateLimiter(RedisRateCounter(dead), RateLimitPolicy(requests=1))
        api.app.extensions["etrans_api"].rate_limiter = limiter
        key, _ = api.api_key(api.user(), "read_only")
        with capture_logs() as logs:
            statuses = [(await api.call("GET", "/emails", {"X-API-KEY": key}))[0]
                        for _ in range(3)]
        assert statuses == [200, 200, 200]
        warnings = [e for e in logs if e["event"].startswith("rate limit store unavailable")]
        assert len(warnings) == 1  # throttled, not one line per request


def test_etrans_serve_limits_through_its_trio_redis_client(etrans_env: Any,
                                                           redis_url: str) -> None:
    """The wiring of ``etrans serve`` (bootstrap): the counter on the Trio-native Redis client,
    keys under ETRANS_REDIS_PREFIX, the budget from the environment."""
    import httpx
    import redis

    from tests.integration.test_serve import serving

    prefix = f"rl:{uuid.uuid4().hex[:10]}:"
    env = etrans_env(RATE_LIMIT_ANONYMOUS_REQUESTS="3", RATE_LIMIT_WINDOW_SECONDS="120",
                     ETRANS_REDIS_PREFIX=prefix)
    with serving(env) as served:
        responses = [httpx.get(served.base_url + "/emails", timeout=30) for _ in range(5)]
    assert [r.status_code for r in responses] == [401, 401, 401, 429, 429]
    assert responses[0].headers["RateLimit-Policy"] == '"anonymous";q=3;w=120'
    assert responses[2].headers["RateLimit"].startswith('"anonymous";r=0;t=')
    assert 1 <= int(responses[4].headers["Retry-After"]) <= 120
    client = redis.Redis.from_url(redis_url)
    try:
        assert int(client.get(f"{prefix}ratelimit:addr:127.0.0.1") or 0) == 5
        assert 0 < client.ttl(f"{prefix}ratelimit:addr:127.0.0.1") <= 120
    finally:
        client.close()


async def test_openapi_documents_429_and_the_rate_limit_headers(api: SendingApi) -> None:
    spec = await (await api.client.get("/openapi.json")).get_json()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if path == "/healthz":  # not counted (docs/api.md): no 429 to document
                assert "429" not in operation["responses"]
                continue
            refused = operation["responses"]["429"]
            assert set(refused["headers"]) == {"Retry-After", "RateLimit-Policy", "RateLimit"}, (
                path, method)
