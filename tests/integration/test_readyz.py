"""/readyz is cheap (issue 13 item 6), against real PostgreSQL and Redis: concurrent calls share
one probe round, a round is remembered for a second, and the probes use their own connections, so
/readyz answers while the request connections are busy and never takes one itself."""

from __future__ import annotations

import time
import uuid
from typing import Any

import trio

from etrans.adapters.redis.client import open_redis
from etrans.adapters.sql import usend_database
from etrans.api.app import ApiDependencies, create_app


class CountingProbe:
    """A real probe, counting its calls."""

    def __init__(self, probe: Any) -> None:
        self.probe = probe
        self.name = probe.name
        self.calls = 0

    async def check(self) -> None:
        self.calls += 1
        await self.probe.check()


async def test_200_concurrent_calls_share_a_handful_of_probe_rounds(
        redis_url: str, fresh_database: Any) -> None:
    usend = usend_database(fresh_database("readyz"), pool_size=2)
    statuses: list[int] = []
    async with open_redis(redis_url) as redis:
        probes = [CountingProbe(redis), CountingProbe(usend)]
        app = create_app(ApiDependencies(probes=probes, routers=[]))
        client = app.test_client()

        async def one() -> None:
            statuses.append((await client.get("/readyz")).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(one)
        assert statuses == [200] * 200
        assert all(p.calls <= 3 for p in probes), [p.calls for p in probes]
        rounds = app.extensions["etrans_readiness"].rounds
        # Within the second: the remembered result; after it, a new round.
        await client.get("/readyz")
        assert app.extensions["etrans_readiness"].rounds == rounds
        await trio.sleep(1.1)
        assert (await client.get("/readyz")).status_code == 200
        assert app.extensions["etrans_readiness"].rounds == rounds + 1
    usend.dispose()


async def test_readyz_answers_while_every_request_connection_is_taken(
        redis_url: str, fresh_database: Any) -> None:
    usend = usend_database(fresh_database("readyz"), pool_size=2)
    held_tokens = [object() for _ in range(2)]
    held_sql = [usend.engine.connect() for _ in range(2)]  # the whole pool (max_overflow=0)
    for borrower in held_tokens:  # every request thread slot, as busy requests hold them
        usend.limiter.acquire_on_behalf_of_nowait(borrower)
    try:
        async with open_redis(redis_url) as redis, trio.open_nursery() as nursery:
            app = create_app(ApiDependencies(probes=[redis, usend], probe_timeout_seconds=2.0,
                                             routers=[]))
            # The requests' Redis connection is stuck behind a command that blocks for 3 s.
            nursery.start_soon(redis.execute, "BLPOP", f"readyz:{uuid.uuid4().hex}", 3)
            # Wait until the BLPOP is on the wire (a fixed 0.1 s was not always enough on a
            # loaded machine: the connect and write then landed after `before` was taken).
            with trio.fail_after(2.0):
                while redis.statistics()["writes"] < 1:  # noqa: ASYNC110 - a counter, no event
                    await trio.sleep(0.01)
            before = redis.statistics()
            started = time.monotonic()
            response = await app.test_client().get("/readyz")
            body = await response.get_json()
            assert response.status_code == 200, body
            assert body["checks"] == {"redis": "ok", "usend_db": "ok"}
            assert time.monotonic() - started < 2.0
            # The probes took no request slot and sent nothing on the requests' connection.
            assert usend.limiter.borrowed_tokens == 2
            assert redis.statistics() == before
    finally:
        for borrower in held_tokens:
            usend.limiter.release_on_behalf_of(borrower)
        for conn in held_sql:
            conn.close()
        usend.dispose()
