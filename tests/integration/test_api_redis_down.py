"""The send path when Redis is down or a request stops half-way, in-process against a private
redis-server this test starts and stops, and real PostgreSQL and MongoDB:

- Idempotency-Key claims and quota reservation answer 503 with Retry-After (never 500), and
  work again as soon as Redis is back;
- a request cancelled while it holds an Idempotency-Key releases the key at once;
- POST /emails/batch gives back the quota of every reserved item when it fails for any reason
  (a dependency down on a later item, a cancelled request).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
import trio
from sqlalchemy import func, select

from etrans.adapters.sql.usend import EmailMessage
from etrans.app.emails import EmailDeps, SendBatch, SendEmail, send_batch
from etrans.errors import UpstreamUnavailable
from tests.harness.servers import RedisServer
from tests.integration.sending_api import SendingApi, email, open_sending_api

EMAILS = EmailMessage.__table__


@pytest.fixture
def redis_server() -> Any:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any, redis_server: RedisServer) -> Any:
    async with open_sending_api(etrans_env, billing_db, REDIS_URI=redis_server.url) as built:
        yield built


def _rows(api: SendingApi, user: int) -> int:
    with api.usend.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(EMAILS)
                                .where(EMAILS.c.user_id == user)).scalar())


def _handlers(api: SendingApi) -> dict[Any, Any]:
    return api.app.extensions["etrans"].services.bus._handlers


async def test_redis_down_answers_503_with_retry_after(api: SendingApi,
                                                      redis_server: RedisServer) -> None:
    user, _, domain = api.sender()
    headers = api.bearer(user)
    response = await api.client.post("/emails", json=email(domain), headers=headers)
    assert response.status_code == 200  # warm: domain and credentials are remembered now
    redis_server.stop()
    cases = [
        ("/emails", {}, email(domain), "Quota counter"),
        ("/emails/batch", {}, {"emails": [email(domain)]}, "Quota counter"),
        ("/emails", {"Idempotency-Key": "down-1"}, email(domain), "Idempotency-Key store"),
        ("/emails/batch", {"Idempotency-Key": "down-2"}, {"emails": [email(domain)]},
         "Idempotency-Key store"),
    ]
    for path, extra, body, what in cases:
        response = await api.client.post(path, json=body, headers={**headers, **extra})
        answer = await response.get_json()
        assert response.status_code == 503, (path, extra, answer)
        assert answer["detail"] == f"{what} unavailable, please retry"
        assert response.headers.get("Retry-After") == "5"
    assert _rows(api, user) == 1
    # Back up (empty: no persistence): the same key is processed, once.
    redis_server.restart()
    keyed = {**headers, "Idempotency-Key": "down-1"}
    first = await api.client.post("/emails", json=email(domain), headers=keyed)
    again = await api.client.post("/emails", json=email(domain), headers=keyed)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert _rows(api, user) == 2


async def test_redis_blocked_answers_503_after_the_reply_timeout(api: SendingApi,
                                                                 redis_server: RedisServer) -> None:
    # SIGSTOP: the connection stays open and nothing answers.  The client gives up at its
    # reply timeout (1 s here).
    user, _, domain = api.sender()
    headers = api.bearer(user)
    response = await api.client.post("/emails", json=email(domain), headers=headers)
    assert response.status_code == 200
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        for extra, what in (({}, "Quota counter"),
                            ({"Idempotency-Key": "blocked"}, "Idempotency-Key store")):
            started = time.monotonic()
            response = await api.client.post("/emails", json=email(domain),
                                             headers={**headers, **extra})
            answer = await response.get_json()
            assert response.status_code == 503, answer
            assert answer["detail"] == f"{what} unavailable, please retry"
            assert response.headers.get("Retry-After") == "5"
            assert time.monotonic() - started < 20
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    response = await api.client.post("/emails", json=email(domain), headers=headers)
    assert response.status_code == 200, await response.get_json()
    assert _rows(api, user) == 2


async def test_redis_lost_after_the_send_answers_what_was_done(api: SendingApi,
                                                               redis_server: RedisServer) -> None:
    # The email is committed, then the Idempotency-Key record cannot be written: the answer is
    # the 200 of the queued email (a 503 would invite a retry that sends it twice), not a 500.
    user, _, domain = api.sender()
    handlers = _handlers(api)
    real = handlers[SendEmail]

    async def send_then_lose_redis(cmd: Any) -> Any:
        result = await real(cmd)
        redis_server.stop()
        return result

    handlers[SendEmail] = send_then_lose_redis
    try:
        response = await api.client.post("/emails", json=email(domain),
                                          headers={**api.bearer(user), "Idempotency-Key": "k"})
    finally:
        handlers[SendEmail] = real
    answer = await response.get_json()
    assert response.status_code == 200, answer
    assert answer["status"] == "queued"
    assert _rows(api, user) == 1


async def test_a_cancelled_request_releases_its_idempotency_key_at_once(api: SendingApi) -> None:
    user, _, domain = api.sender()
    headers = {**api.bearer(user), "Idempotency-Key": "cancel-me"}
    handlers = _handlers(api)
    real = handlers[SendEmail]
    started = trio.Event()

    async def stuck(cmd: Any) -> Any:
        started.set()
        await trio.sleep_forever()

    handlers[SendEmail] = stuck
    try:
        async with trio.open_nursery() as nursery:
            async def send() -> None:
                await api.client.post("/emails", json=email(domain), headers=headers)

            nursery.start_soon(send)
            await started.wait()
            nursery.cancel_scope.cancel()  # the caller goes away mid-request
    finally:
        handlers[SendEmail] = real
    # At once, not after the 120 s in-flight claim expires: the retry is processed.
    response = await api.client.post("/emails", json=email(domain), headers=headers)
    assert response.status_code == 200, await response.get_json()
    assert _rows(api, user) == 1


@contextmanager
def _batch_deps(api: SendingApi, **ports: Any) -> Iterator[None]:
    """POST /emails/batch on the deps of the app with ``ports`` replaced, for the block."""
    handlers = _handlers(api)
    real = handlers[SendBatch]
    handlers[SendBatch] = partial(send_batch, replace(real.args[0], **ports))
    try:
        yield
    finally:
        handlers[SendBatch] = real


def _deps(api: SendingApi) -> EmailDeps:
    deps: EmailDeps = _handlers(api)[SendBatch].args[0]
    return deps


async def _hourly_used(api: SendingApi, domain_id: int) -> int:
    return (await api.stores.quota.usage(domain_id, datetime.now(UTC))).hourly


async def test_a_failed_batch_gives_back_the_quota_of_every_item(api: SendingApi) -> None:
    user, domain_id, domain = api.sender(daily=None, hourly=3)
    headers = api.bearer(user)
    deps = _deps(api)
    domains = deps.domains

    class ThirdItemDown:
        """The port of sending domains, failing for one name (its database down)."""

        async def find(self, user_id: int, name: str) -> Any:
            if name == "down.example.test":
                raise UpstreamUnavailable("Billing database unavailable")
            return await domains.find(user_id, name)

        def __getattr__(self, name: str) -> Any:
            return getattr(domains, name)

    with _batch_deps(api, domains=ThirdItemDown()):
        items = [email(domain), email(domain), email("down.example.test")]
        response = await api.client.post("/emails/batch", json={"emails": items},
                                          headers=headers)
        assert response.status_code == 503
    assert await _hourly_used(api, domain_id) == 0  # was 2: reserved, never sent

    # Cancelled while its emails are being written: given back too.
    store = deps.store
    started = trio.Event()

    class StuckStore:
        async def save(self, emails: Any) -> None:
            started.set()
            await trio.sleep_forever()

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    with _batch_deps(api, store=StuckStore()):
        async with trio.open_nursery() as nursery:
            async def send() -> None:
                await api.client.post("/emails/batch", json={"emails": [email(domain)] * 3},
                                      headers=headers)

            nursery.start_soon(send)
            await started.wait()
            nursery.cancel_scope.cancel()
    assert await _hourly_used(api, domain_id) == 0
    response = await api.client.post("/emails/batch", json={"emails": [email(domain)] * 3},
                                     headers=headers)
    answer = await response.get_json()
    assert (len(answer["data"]), answer["errors"]) == (3, [])
    assert _rows(api, user) == 3
