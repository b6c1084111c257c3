"""DB_STATEMENT_TIMEOUT_SECONDS bounds how long a request's statement may hold a pooled connection:
in-process (Quart test client, wired as ``etrans serve``) against real PostgreSQL (a USEND DB of
the test's own), where another connection holds ``LOCK TABLE ... IN ACCESS EXCLUSIVE MODE``.

Without the bound GET /emails waits behind the lock for as long as it is held (here
``HOLD_SECONDS``) and answers 200 then; with it the statement is cancelled after the timeout, the
request answers 503 with Retry-After and its connection goes back to the pool, usable.  The
outbox relay runs on connections of its own and keeps no such bound: it waits out the lock and
publishes.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import psycopg
import pytest
import structlog
import trio
from sqlalchemy import text
from structlog.testing import capture_logs

from tests.integration.sending_api import SendingApi, email, open_sending_api

TIMEOUT_SECONDS = 0.2
HOLD_SECONDS = 4.0


@pytest.fixture
def own_usend(fresh_database: Any) -> str:
    from etrans.adapters.sql import migrations

    url = fresh_database("stmt_timeout")
    migrations.upgrade(url)
    return url


def _lock(url: str, table: str) -> psycopg.Connection[Any]:
    """A connection holding ``table`` in ACCESS EXCLUSIVE mode until it rolls back."""
    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return conn


async def _while_locked(url: str, table: str, fn: Any, *args: Any) -> tuple[Any, float]:
    """``await fn(*args)`` while another connection holds ``table``, released after
    HOLD_SECONDS at the latest: (its result, seconds it took)."""
    locker = _lock(url, table)
    try:
        async with trio.open_nursery() as nursery:
            async def release_later() -> None:
                await trio.sleep(HOLD_SECONDS)
                locker.rollback()
            nursery.start_soon(release_later)
            started = trio.current_time()
            result = await fn(*args)
            elapsed = trio.current_time() - started
            nursery.cancel_scope.cancel()
    finally:
        locker.rollback()
        locker.close()
    return result, elapsed


async def test_a_statement_stuck_behind_a_lock_answers_503_and_frees_its_connection(
        etrans_env: Any, billing_db: Any, own_usend: str) -> None:
    async with open_sending_api(etrans_env, billing_db, USEND_DB_URI=own_usend,
                                DB_STATEMENT_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS)) as api:
        user, _, domain = api.sender()
        headers = api.bearer(user)
        sent = await api.client.post("/emails", json=email(domain), headers=headers)
        assert sent.status_code == 200

        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            response, elapsed = await _while_locked(
                own_usend, "email_messages", partial(api.client.get, "/emails", headers=headers))
        assert (response.status_code, elapsed < HOLD_SECONDS / 2) == (503, True), elapsed
        assert elapsed < TIMEOUT_SECONDS + 1.0, elapsed
        assert response.headers.get("Retry-After") == "5"
        assert (await response.get_json())["detail"]
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert len(warnings) == 1, warnings
        assert warnings[0]["route"] == "GET /emails"
        assert "canceling statement" in warnings[0]["error"] or "lock timeout" in \
            warnings[0]["error"], warnings[0]

        # The cancelled statement's connection is back in the pool, healthy and still bounded.
        assert api.usend.engine.pool.checkedout() == 0
        again = await api.client.get("/emails", headers=headers)
        assert again.status_code == 200
        assert len((await again.get_json())["data"]) == 1
        _assert_bounded(api)


def _assert_bounded(api: SendingApi) -> None:
    for db in (api.usend, api.billing):
        with db.engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "200ms"
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "200ms"


async def test_the_outbox_relay_is_not_bound_by_the_api_timeout(
        etrans_env: Any, billing_db: Any, own_usend: str, new_topic: Any) -> None:
    async with open_sending_api(etrans_env, billing_db, with_relay=True, USEND_DB_URI=own_usend,
                                KAFKA_EVENTS_TOPIC=new_topic(prefix="events"),
                                DB_STATEMENT_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS)) as api:
        user, _, domain = api.sender()
        sent = await api.client.post("/emails", json=email(domain), headers=api.bearer(user))
        assert sent.status_code == 200
        _assert_bounded(api)
        # The relay's pass waits behind the lock for longer than the API's bound, and publishes.
        hold = TIMEOUT_SECONDS * 5

        async def relay_after_hold() -> Any:
            async with trio.open_nursery() as nursery:
                locker = _lock(own_usend, "email_outbox")

                async def release() -> None:
                    await trio.sleep(hold)
                    locker.rollback()
                    locker.close()
                nursery.start_soon(release)
                return await api.relay.relay_once()

        started = trio.current_time()
        published = await relay_after_hold()
        assert published == (1, 0), api.relay.stats
        assert trio.current_time() - started >= hold
