"""``etrans webhooks`` against real receivers: events on a real Kafka topic (the harness's
broker), webhooks and attempts in the real PostgreSQL USEND DB, endpoints that are HTTP servers
on loopback verifying every signature with the ``standardwebhooks`` package
(tests/integration/webhook_support.py).  Backoffs are fractions of a second here.

In process: each event once, signed; 500s then 200 (retried, delivered exactly as signed, the
same webhook-id); a hanging endpoint does not delay another's deliveries; an endpoint failing
too long is disabled and a ``webhook.disabled`` event reaches another endpoint; a loopback URL
is refused without WEBHOOKS_ALLOW_PRIVATE_URLS.  As a subprocess: kill -9 mid-stream, restart,
no event lost and duplicates carry the same webhook-id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlalchemy import create_engine, text

from etrans.adapters.sql import sqlalchemy_url
from etrans.bootstrap import webhooks as wiring
from etrans.domain.events import EventType, decode_event
from etrans.runtime import Shutdown
from etrans.settings import for_command
from tests.harness.servers import unique_name
from tests.integration.webhook_support import (
    Received,
    Receiver,
    add_webhook,
    email_event,
    fresh_user,
    produce_events,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def webhooks_env(etrans_env: Callable[..., dict[str, str]], new_topic: Callable[..., str],
                 ) -> Callable[..., dict[str, str]]:
    def make(**overrides: Any) -> dict[str, str]:
        env = etrans_env(KAFKA_EVENTS_TOPIC=new_topic(prefix="events"),
                         WEBHOOKS_GROUP_ID=unique_name("webhooks"),
                         WEBHOOKS_ALLOW_PRIVATE_URLS="true", WEBHOOKS_RETRY_DELAYS="0.2,0.4",
                         WEBHOOKS_RETRY_POLL_SECONDS="0.05", WEBHOOKS_TIMEOUT_SECONDS="3",
                         WEBHOOKS_BUSY_RETRY_SECONDS="0.2", KAFKA_COMMIT_INTERVAL_SECONDS="0.5",
                         ETRANS_LOG_LEVEL="WARNING")
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    return make


@pytest.fixture
def receivers() -> Any:
    started: list[Receiver] = []

    def make(**options: Any) -> Receiver:
        receiver = Receiver(**options).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


@asynccontextmanager
async def running(env: dict[str, str]) -> AsyncIterator[None]:
    main = wiring.build(for_command("webhooks", env))
    shutdown = Shutdown(drain_seconds=5.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(main, shutdown)
        yield
        shutdown.request()


async def wait_for(receiver: Receiver, predicate: Callable[[list[Received]], bool],
                   seconds: float = 30.0) -> list[Received]:
    with trio.fail_after(seconds):
        while not predicate(got := receiver.snapshot()):  # noqa: ASYNC110
            await trio.sleep(0.02)
    return got


def deliveries(env: dict[str, str], webhook_id: int) -> list[Any]:
    engine = create_engine(sqlalchemy_url(env["USEND_DB_URI"]))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT event_id, attempt, status_code, error, latency_ms FROM "
                "webhook_deliveries WHERE webhook_id = :id ORDER BY id"), {"id": webhook_id}))
    finally:
        engine.dispose()


def webhook_row(env: dict[str, str], webhook_id: int) -> Any:
    engine = create_engine(sqlalchemy_url(env["USEND_DB_URI"]))
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT enabled, disabled_reason, failing_since FROM "
                                     "webhooks WHERE id = :id"), {"id": webhook_id}).one()
    finally:
        engine.dispose()


async def test_each_event_arrives_once_signed(
        webhooks_env: Callable[..., dict[str, str]], receivers: Any, kafka_bootstrap: str,
) -> None:
    env = webhooks_env()
    receiver, user = receivers(), fresh_user()
    hook = add_webhook(env["USEND_DB_URI"], env["TOKEN_SECRET"], user, receiver.url,
                       receiver.secret)
    other = fresh_user()  # an event of another user goes nowhere
    events = [email_event(user, i) for i in range(20)]
    produce_events(kafka_bootstrap, env["KAFKA_EVENTS_TOPIC"],
                   [*events[:10], email_event(other), *events[10:]])
    async with running(env):
        got = await wait_for(receiver, lambda got: len(got) >= 20)
        await trio.sleep(0.5)  # nothing more comes
    # Not in order: 10 workers, and events beyond the endpoint's 4 at once wait as retries.
    got = sorted(receiver.snapshot(), key=lambda r: r.webhook_id)
    events.sort(key=lambda e: e.id)
    assert [r.webhook_id for r in got] == [e.id for e in events]  # each once
    assert all(r.verified for r in got)
    assert [r.payload for r in got] == [
        {"type": "email.delivered", "timestamp": e.timestamp.isoformat(
            timespec="microseconds").replace("+00:00", "Z"), "data": e.data} for e in events]
    rows = sorted(deliveries(env, hook), key=lambda r: r.event_id)
    assert [(r.event_id, r.attempt, r.status_code, r.error) for r in rows] == [
        (e.id, 1, 200, None) for e in events]
    assert all(r.latency_ms is not None and r.latency_ms >= 0 for r in rows)


async def test_500s_then_delivered_exactly_as_signed(
        webhooks_env: Callable[..., dict[str, str]], receivers: Any, kafka_bootstrap: str,
) -> None:
    env = webhooks_env()
    receiver, user = receivers(answer=lambda n: 500 if n <= 3 else 204), fresh_user()
    hook = add_webhook(env["USEND_DB_URI"], env["TOKEN_SECRET"], user, receiver.url,
                       receiver.secret)
    event = email_event(user, kind=EventType.BOUNCED)
    produce_events(kafka_bootstrap, env["KAFKA_EVENTS_TOPIC"], [event])
    async with running(env):
        await wait_for(receiver, lambda got: len(got) >= 4)
        with trio.fail_after(10):
            while len(deliveries(env, hook)) < 4:  # noqa: ASYNC110
                await trio.sleep(0.05)
        await trio.sleep(0.6)
    got = receiver.snapshot()
    assert len(got) == 4
    assert {r.webhook_id for r in got} == {event.id}
    assert {r.body for r in got} == {got[0].body}  # the same body every time
    assert all(r.verified for r in got)  # each attempt signed with its own timestamp
    rows = deliveries(env, hook)
    assert [(r.attempt, r.status_code) for r in rows] == [(1, 500), (2, 500), (3, 500),
                                                          (4, 204)]
    assert webhook_row(env, hook).failing_since is None


async def test_a_hanging_endpoint_does_not_delay_another(
        webhooks_env: Callable[..., dict[str, str]], receivers: Any, kafka_bootstrap: str,
) -> None:
    env = webhooks_env(WEBHOOKS_TIMEOUT_SECONDS="20")
    hanging, fast = receivers(hang=True), receivers()
    user = fresh_user()
    for receiver in (hanging, fast):
        add_webhook(env["USEND_DB_URI"], env["TOKEN_SECRET"], user, receiver.url,
                    receiver.secret)
    events = [email_event(user, i) for i in range(40)]
    produce_events(kafka_bootstrap, env["KAFKA_EVENTS_TOPIC"], events)
    async with running(env):
        await wait_for(fast, lambda got: len(got) >= 1, seconds=30)
        started = time.monotonic()
        got = await wait_for(fast, lambda got: len(got) >= 40, seconds=10)
        took = time.monotonic() - started
        # The hanging endpoint holds at most its 4 attempts (WEBHOOKS_ENDPOINT_CONCURRENCY).
        assert len(hanging.snapshot()) <= 4
        hanging.stop()  # release its requests so that the drain is quick
    assert took < 5, f"the fast endpoint waited {took:.1f} s behind the hanging one"
    assert sorted(r.webhook_id for r in got) == sorted(e.id for e in events)


async def test_an_endpoint_failing_too_long_is_disabled_and_said_so(
        webhooks_env: Callable[..., dict[str, str]], receivers: Any, kafka_bootstrap: str,
) -> None:
    env = webhooks_env(WEBHOOKS_DISABLE_AFTER_SECONDS="1", WEBHOOKS_RETRY_DELAYS="0.3")
    broken, watcher, user = receivers(answer=lambda n: 500), receivers(), fresh_user()
    hook = add_webhook(env["USEND_DB_URI"], env["TOKEN_SECRET"], user, broken.url,
                       broken.secret)
    add_webhook(env["USEND_DB_URI"], env["TOKEN_SECRET"], user, watcher.url, watcher.secret,
                ["webhook.disabled"])
    produce_events(kafka_bootstrap, env["KAFKA_EVENTS_TOPIC"], [email_event(user)])
    async with running(env):
        [notice] = await wait_for(watcher, lambda got: len(got) >= 1, seconds=20)
        await trio.sleep(0.5)
    assert notice.verified
    assert notice.payload["type"] == "webhook.disabled"
    assert notice.payload["data"] == {"webhook_id": str(hook), "url": broken.url,
                                      "last_error": "HTTP 500"}
    row = webhook_row(env, hook)
    assert row.enabled is False
    assert "HTTP 500" in row.disabled_reason
    assert 4 <= len(broken.snapshot()) <= 6  # about 1 s of attempts 0.3 s apart, then none
    assert len(watcher.snapshot()) == 1


async def test_a_private_address_is_refused_without_the_setting(
        webhooks_env: Callable[..., dict[str, str]], receivers: Any, kafka_bootstrap: str,
) -> None:
    env = webhooks_env(WEBHOOKS_ALLOW_PRIVATE_URLS="false", WEBHOOKS_MAX_ATTEMPTS="1")
    receiver, user = receivers(), fresh_user()
    url = receiver.url.replace("127.0.0.1", "localhost")
    hook = add_webhook(env["USEND_DB_URI"], env["TOKEN_SECRET"], user, url, receiver.secret)
    event = email_event(user)
    produce_events(kafka_bootstrap, env["KAFKA_EVENTS_TOPIC"], [event])
    async with running(env):
        with trio.fail_after(20):
            while not deliveries(env, hook):  # noqa: ASYNC110
                await trio.sleep(0.05)
    [row] = deliveries(env, hook)
    assert (row.event_id, row.status_code) == (event.id, None)
    assert "non-public address" in row.error
    assert receiver.snapshot() == []


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_loses_nothing(
        webhooks_env: Callable[..., dict[str, str]], receivers: Any, kafka_bootstrap: str,
        tmp_path: Path,
) -> None:
    env = webhooks_env(ETRANS_LOG_LEVEL="INFO")
    receiver, user = receivers(), fresh_user()
    add_webhook(env["USEND_DB_URI"], env["TOKEN_SECRET"], user, receiver.url, receiver.secret)
    events = [email_event(user, i) for i in range(300)]
    produce_events(kafka_bootstrap, env["KAFKA_EVENTS_TOPIC"], events)
    log = tmp_path / "webhooks.log"

    def start() -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "etrans", "webhooks"], cwd=REPO,
                                    env=env, stdout=out, stderr=subprocess.STDOUT)

    child = start()
    try:
        receiver.wait_for(lambda got: len(got) >= 60, timeout=60)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        at_kill = len(receiver.snapshot())
        child = start()
        receiver.wait_for(lambda got: {r.webhook_id for r in got} >= {e.id for e in events},
                          timeout=90)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if child.poll() is None:
            child.kill()
    got = receiver.snapshot()
    assert all(r.verified for r in got)
    assert {r.webhook_id for r in got} == {e.id for e in events}
    bodies: dict[str, set[bytes]] = {}
    for r in got:
        bodies.setdefault(r.webhook_id, set()).add(r.body)
    assert all(len(b) == 1 for b in bodies.values())  # a repeat is the same event, same id
    repeated = sum(n - 1 for n in Counter(r.webhook_id for r in got).values())
    print(f"kill -9 after {at_kill} deliveries: {len(got)} requests for {len(events)} events, "
          f"{repeated} repeated")
    assert decode_event  # the records are the wire format of docs/wire-formats.md
