"""``etrans sendmail`` as a whole: Kafka topic -> pipeline -> SMTP, in process and as a subprocess.

The subprocess tests kill the worker mid-run (``kill -9``, then SIGTERM) and restart it: no email
may be lost; after ``kill -9`` at most the pool size may be sent twice (printed); after SIGTERM
none.

The outage tests take the SMTP server or Redis down in the middle of a stream of 500 messages for
``ETRANS_TEST_OUTAGE_SECONDS`` (default 10 s in the suite; issue 12 item 7 asks for 60 s:
``ETRANS_TEST_OUTAGE_SECONDS=60``): every message is delivered once it is back, none bounced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from etrans import settings
from etrans.bootstrap import sendmail as sendmail_wiring
from etrans.runtime import Shutdown
from tests.harness.smtp import SmtpTestServer
from tests.integration.sendmail_support import (
    CredentialFixture,
    PersistentRedis,
    produce_requests,
    read_events,
    simple_request,
    spec_request,
)

POOL_SIZE = 10
OUTAGE_SECONDS = float(os.environ.get("ETRANS_TEST_OUTAGE_SECONDS", "10"))


@pytest.fixture
def sendmail_env(
    etrans_env: Callable[..., dict[str, str]], redis_url: str,
) -> Iterator[tuple[Callable[..., dict[str, str]], CredentialFixture]]:
    base = etrans_env()
    fixture = CredentialFixture(redis_url, base["TOKEN_SECRET"], base["TOKEN_IV"])

    def make(server: SmtpTestServer, **overrides: Any) -> dict[str, str]:
        env = dict(base)
        env.update(server.env())
        env.update({"SENDMAIL_RETRY_BASE_SECONDS": "0.1", "WORKER_POOL_SIZE": str(POOL_SIZE),
                    "KAFKA_COMMIT_INTERVAL_SECONDS": "1", "ETRANS_LOG_LEVEL": "WARNING"})
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    yield make, fixture
    fixture.cleanup()


def message_ids(n: int, tag: str) -> list[str]:
    return [f"<{tag}-{i}-{uuid.uuid4().hex[:8]}@etrans.test>" for i in range(n)]


async def test_spec_message_through_kafka_in_process(
    sendmail_env: tuple[Callable[..., dict[str, str]], CredentialFixture],
    smtp_server_factory: Callable[..., SmtpTestServer], kafka_bootstrap: str,
) -> None:
    make_env, credentials = sendmail_env
    server = smtp_server_factory(tls="starttls", users={"svc-user": "svc-pass-1"})
    env = make_env(server)
    user_id = credentials.add("svc-user", "svc-pass-1")
    good, bad = message_ids(1, "good")[0], message_ids(1, "nocreds")[0]
    produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"], [
        spec_request(good, user_id),
        simple_request(bad, "unknown-" + uuid.uuid4().hex),
    ])
    main = sendmail_wiring.build(settings.for_command("sendmail", env))
    shutdown = Shutdown(drain_seconds=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(main, shutdown)
        await server.wait_received_async(1, seconds=60)
        events = await trio.to_thread.run_sync(
            lambda: read_events(kafka_bootstrap, env["LOG_TOPIC"], 1, timeout=60))
        shutdown.request()
    [received] = server.received
    assert received.message_id == good
    assert received.tls
    assert received.login == "svc-user"
    assert received.rcpt_tos == ["to@example.com", "cc@example.com", "bcc@example.com"]
    [event] = events
    assert event["message_id"] == bad
    assert event["Event"] == "Reject"


# -- outages: retried later, never bounced ---------------------------------------------------------

async def deliver_through_an_outage(
    env: dict[str, str], server: SmtpTestServer, ids: list[str], redis_url: str,
    take_down: Callable[[], None], bring_back: Callable[[], None],
) -> None:
    """Run ``etrans sendmail`` in process over ``ids`` (already produced); once 100 are
    delivered, take a service down for OUTAGE_SECONDS, then bring it back.  Asserts that every
    message was delivered, none rejected, and at most the pool size twice (the transactions the
    outage cut after the server had the message but before we had its reply)."""
    import redis

    main = sendmail_wiring.build(settings.for_command("sendmail", env))
    shutdown = Shutdown(drain_seconds=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(main, shutdown)
        await server.wait_received_async(100, seconds=60)
        await trio.to_thread.run_sync(take_down)
        down_at = len(server.received)
        await trio.sleep(OUTAGE_SECONDS)
        await trio.to_thread.run_sync(bring_back)
        with trio.fail_after(OUTAGE_SECONDS + 120):
            while set(ids) - set(server.message_ids()):  # noqa: ASYNC110
                await trio.sleep(0.1)
        await trio.sleep(1)  # late duplicates would show
        shutdown.request()
    counts = Counter(server.message_ids())
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(f"\n{len(ids)} messages, {down_at} delivered when the service went down for "
          f"{OUTAGE_SECONDS:g} s; {duplicates} sent twice")
    assert down_at < len(ids), "the stream was over before the outage"
    assert set(counts) == set(ids)
    assert duplicates <= POOL_SIZE
    rejects = await trio.to_thread.run_sync(
        lambda: read_events(env["KAFKA_BOOTSTRAP_SERVERS"], env["LOG_TOPIC"], 0, settle=1.0))
    assert rejects == []
    client = redis.Redis.from_url(redis_url)
    try:
        marks = client.mget([f"etrans:sendmail:done:{mid}" for mid in ids])
    finally:
        client.close()
    assert set(marks) == {b"delivered"}


@pytest.mark.slow
async def test_smtp_server_down_mid_stream_delays_and_bounces_nothing(
    sendmail_env: tuple[Callable[..., dict[str, str]], CredentialFixture],
    smtp_server_factory: Callable[..., SmtpTestServer], kafka_bootstrap: str, redis_url: str,
) -> None:
    """Issue 12 item 7: the SMTP server stopped for ETRANS_TEST_OUTAGE_SECONDS (default 10;
    the issue's 60 s with ETRANS_TEST_OUTAGE_SECONDS=60) during a stream of 500 messages."""
    make_env, credentials = sendmail_env
    # A slow DATA reply keeps the stream going when the server is stopped, and transactions
    # in flight are cut in the middle.
    server = smtp_server_factory(users={"stream": "stream-pass"}, data_delay=0.02)
    env = make_env(server)
    user_id = credentials.add("stream", "stream-pass")
    ids = message_ids(500, "smtp-outage")
    produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"],
                     [simple_request(mid, user_id) for mid in ids])
    await deliver_through_an_outage(env, server, ids, redis_url, server.stop, server.start)


@pytest.mark.slow
async def test_redis_restart_mid_stream_delays_and_bounces_nothing(
    sendmail_env: tuple[Callable[..., dict[str, str]], CredentialFixture],
    smtp_server_factory: Callable[..., SmtpTestServer], kafka_bootstrap: str,
) -> None:
    """Issue 12 item 7: the worker's Redis (a private one, kept across its restart) is down for
    ETRANS_TEST_OUTAGE_SECONDS during a stream of 500 messages."""
    make_env, _ = sendmail_env
    private = PersistentRedis().start()
    server = smtp_server_factory(users={"stream": "stream-pass"}, data_delay=0.02)
    env = make_env(server, REDIS_URI=private.url)
    credentials = CredentialFixture(private.url, env["TOKEN_SECRET"], env["TOKEN_IV"])
    try:
        user_id = credentials.add("stream", "stream-pass")
        ids = message_ids(500, "redis-outage")
        produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"],
                         [simple_request(mid, user_id) for mid in ids])
        await deliver_through_an_outage(env, server, ids, private.url, private.stop,
                                        private.start)
    finally:
        credentials.cleanup()
        private.cleanup()


# -- subprocess: kill -9 and SIGTERM ---------------------------------------------------------------

def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_file = log_path.open("ab")
    return subprocess.Popen([sys.executable, "-m", "etrans", "sendmail"], env=env,
                            stdout=log_file, stderr=subprocess.STDOUT,
                            cwd=str(Path(__file__).resolve().parents[2]))


def wait_count(server: SmtpTestServer, count: int, process: subprocess.Popen[bytes] | None,
               timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while len(server.received) < count:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"worker exited with {process.returncode}:\n"
                                 + log_path.read_text()[-3000:])
        if time.monotonic() > deadline:
            raise AssertionError(f"received {len(server.received)} of {count} in {timeout} s:\n"
                                 + log_path.read_text()[-3000:])
        time.sleep(0.05)


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_interrupted_mid_run_then_restarted_loses_nothing(
    how: str, sendmail_env: tuple[Callable[..., dict[str, str]], CredentialFixture],
    smtp_server_factory: Callable[..., SmtpTestServer], kafka_bootstrap: str,
    new_topic: Callable[..., str], tmp_path: Path,
) -> None:
    total = 2000
    make_env, credentials = sendmail_env
    server = smtp_server_factory(users={"bulk": "bulk-pass"})
    env = make_env(server, KAFKA_TOPIC=new_topic(partitions=3, prefix="sendmail"))
    user_id = credentials.add("bulk", "bulk-pass")
    ids = message_ids(total, "bulk")
    produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"],
                     [simple_request(mid, user_id) for mid in ids], partitions=3)
    log_path = tmp_path / "worker.log"

    first = start_worker(env, log_path)
    try:
        wait_count(server, total // 3, first, 120, log_path)
        if how == "kill -9":
            first.kill()
            first.wait()
        else:
            first.send_signal(signal.SIGTERM)
            assert first.wait(60) == 0, log_path.read_text()[-3000:]
        stopped_at = len(server.received)
        assert stopped_at < total, "the worker finished before it was interrupted"
    finally:
        stop_worker(first)

    second = start_worker(env, log_path)
    try:
        # Everything, and then a little longer so that late duplicates would show.
        deadline = time.monotonic() + 180
        while set(ids) - {m.message_id for m in server.received}:
            assert second.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"missing {len(set(ids) - set(server.message_ids()))}:\n"
                + log_path.read_text()[-3000:])
            time.sleep(0.1)
        time.sleep(2)
    finally:
        stop_worker(second)

    counts = Counter(server.message_ids())
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(f"\n{how}: {total} messages, {stopped_at} received before the {how}, "
          f"{duplicates} sent twice (pool size {POOL_SIZE})")
    assert set(counts) == set(ids), "lost or unexpected messages"
    if how == "kill -9":
        assert duplicates <= POOL_SIZE
    else:
        assert duplicates == 0
    assert second.returncode == 0, log_path.read_text()[-3000:]
    # At WARNING level a clean run writes nothing alarming (the file used to be non-empty only
    # because librdkafka warned about consumer-only properties given to the producer).
    output = log_path.read_text()
    assert "Traceback" not in output, output[-3000:]
    assert '"level": "error"' not in output, output[-3000:]


@pytest.mark.slow
def test_restarted_after_kill_9_it_resumes_before_the_dead_session_expires(
    sendmail_env: tuple[Callable[..., dict[str, str]], CredentialFixture],
    smtp_server_factory: Callable[..., SmtpTestServer], kafka_bootstrap: str,
    new_topic: Callable[..., str], tmp_path: Path,
) -> None:
    """Issue 12 item 9: ``etrans sendmail`` is a static group member by default
    (``<hostname>-sendmail``), so a worker restarted after ``kill -9`` gets its partitions back
    without waiting for its dead predecessor's session to expire (30 s here).  With dynamic
    membership the group waits for that expiry, then rebalances (on tansu ~1.8x the session
    timeout; bench/rejoin_after_kill.py).  On tansu a static rejoin still waits ~0.55x the
    session timeout in JoinGroup (the broker's doing; Kafka answers it at once)."""
    session_seconds = 30
    make_env, credentials = sendmail_env
    server = smtp_server_factory(users={"restart": "restart-pass"}, data_delay=0.05)
    env = make_env(server, KAFKA_TOPIC=new_topic(partitions=3, prefix="sendmail"),
                   KAFKA_CONF_SESSION_TIMEOUT_MS=str(session_seconds * 1000),
                   KAFKA_CONF_HEARTBEAT_INTERVAL_MS="3000")
    user_id = credentials.add("restart", "restart-pass")
    ids = message_ids(3000, "restart")
    produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"],
                     [simple_request(mid, user_id) for mid in ids], partitions=3)
    log_path = tmp_path / "worker.log"

    first = start_worker(env, log_path)
    try:
        wait_count(server, 200, first, 120, log_path)
        first.kill()
        first.wait()
    finally:
        stop_worker(first)
    killed_at = time.monotonic()
    before = len(server.received)
    second = start_worker(env, log_path)
    try:
        wait_count(server, before + 1, second, 3 * session_seconds, log_path)
        resumed_after = server.received[before].received_at - killed_at
    finally:
        stop_worker(second)
    print(f"\nrestarted after kill -9: first delivery {resumed_after:.1f} s after the kill "
          f"(session timeout {session_seconds} s)")
    assert resumed_after < session_seconds, log_path.read_text()[-3000:]


def test_a_second_worker_with_the_same_instance_id_on_this_host_stops_at_start(
    sendmail_env: tuple[Callable[..., dict[str, str]], CredentialFixture],
    smtp_server_factory: Callable[..., SmtpTestServer], kafka_bootstrap: str, tmp_path: Path,
) -> None:
    """Two workers of one group on one host with the default KAFKA_GROUP_INSTANCE_ID
    (``<hostname>-sendmail``): on tansu both would consume the same partitions (Kafka would
    fence the first).  The second stops at start, saying what to set; the first goes on."""
    make_env, credentials = sendmail_env
    server = smtp_server_factory(users={"twin": "twin-pass"})
    env = make_env(server)
    user_id = credentials.add("twin", "twin-pass")
    ids = message_ids(2, "twin")
    produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"], [simple_request(ids[0], user_id)])
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_worker(env, first_log)
    try:
        wait_count(server, 1, first, 60, first_log)
        second = start_worker(env, second_log)
        try:
            status = second.wait(30)
        finally:
            stop_worker(second)
        assert status != 0
        output = second_log.read_text()
        assert "KAFKA_GROUP_INSTANCE_ID" in output, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"], [simple_request(ids[1], user_id)])
        wait_count(server, 2, first, 60, first_log)
    finally:
        stop_worker(first)
    assert server.message_ids() == ids
