"""``etrans sendmail --processes 2`` as a real process tree (etrans.bootstrap.processes): two
consumers of one group under one parent, on the harness's broker, Redis and an SMTP server.

The parent tells the service manager (a notify socket of the test's own) READY=1 once both
children are ready, and is the only process that speaks to it; both children get partitions
and deliver; SIGTERM to the parent drains both (STOPPING=1, each child's drain asked by the
parent, exit 0); a single worker started afterwards delivers the rest: every message exactly
once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.servers import free_port
from tests.harness.smtp import SmtpTestServer
from tests.integration.notify_support import NotifySocket
from tests.integration.sendmail_support import CredentialFixture, produce_requests, simple_request
from tests.integration.test_sendmail_service import message_ids, stop_worker, wait_count

TOTAL = 1200
PARTITIONS = 4


@pytest.fixture
def worker_env(
    etrans_env: Callable[..., dict[str, str]], redis_url: str, new_topic: Callable[..., str]
) -> Iterator[tuple[dict[str, str], CredentialFixture]]:
    env = etrans_env(
        KAFKA_TOPIC=new_topic(partitions=PARTITIONS, prefix="sendmail"),
        SENDMAIL_RETRY_BASE_SECONDS="0.1",
        WORKER_POOL_SIZE="10",
        KAFKA_COMMIT_INTERVAL_SECONDS="1",
        ETRANS_LOG_LEVEL="INFO",
    )
    credentials = CredentialFixture(redis_url, env["TOKEN_SECRET"], env["TOKEN_IV"])
    yield env, credentials
    credentials.cleanup()


def start(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "etrans", "sendmail", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def records(log_path: Path) -> list[dict[str, Any]]:
    lines = log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def two_free_ports() -> int:
    """A port P such that P and P + 1 are free (child I serves its metrics at P + I)."""
    while True:
        port = free_port()
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port


def assigned_processes(log_path: Path) -> set[int]:
    return {
        r["process"]
        for r in records(log_path)
        if r.get("event") == "partitions assigned" and r.get("partitions") and "process" in r
    }


def test_two_processes_share_the_partitions_and_drain_on_sigterm(
    worker_env: tuple[dict[str, str], CredentialFixture],
    smtp_server_factory: Callable[..., SmtpTestServer],
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    base, credentials = worker_env
    # A slow DATA reply: the stream is still going when SIGTERM comes.
    server = smtp_server_factory(users={"procs": "procs-pass"}, data_delay=0.02)
    env = {**base, **server.env()}
    user_id = credentials.add("procs", "procs-pass")
    notify = NotifySocket()
    log_path = tmp_path / "parent.log"
    metrics_port = two_free_ports()
    parent = start(
        {**env, "NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "2000000"},
        log_path,
        "--processes",
        "2",
        "--metrics-bind",
        f"127.0.0.1:{metrics_port}",
    )
    try:
        ready = notify.wait_for("READY", alive=lambda: parent.poll() is None)
        print(f"parent READY: {notify.received[ready].states.get('STATUS')}")
        deadline = time.monotonic() + 120
        while assigned_processes(log_path) != {0, 1}:  # both children got partitions
            assert parent.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)
        ids = message_ids(TOTAL, "procs")
        produce_requests(
            kafka_bootstrap,
            env["KAFKA_TOPIC"],
            [simple_request(mid, user_id) for mid in ids],
            partitions=PARTITIONS,
        )
        wait_count(server, TOTAL // 4, parent, 120, log_path)
        # Each child serves its own registry at the metrics port + its index.
        for port in (metrics_port, metrics_port + 1):
            page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            assert 'etrans_pipeline_processed_total{worker="sendmail"}' in page, page[:2000]
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(60) == 0, log_path.read_text()[-3000:]
        stopped_at = len(server.received)
    finally:
        stop_worker(parent)
        notify.close()

    lines = records(log_path)
    # Each child drained because its parent asked, and finished its drain in time.
    asked = {
        r["process"]
        for r in lines
        if r.get("event") == "stopping" and r.get("asked_by") == "parent process"
    }
    assert asked == {0, 1}, lines[-20:]
    drained = {
        r["process"]: r["drained"] for r in lines if r.get("event") == "stopped" and "process" in r
    }
    assert drained == {0: True, 1: True}, lines[-20:]
    delivered = {
        r["process"]: r["sendmail"].get("delivered", 0)
        for r in lines
        if r.get("event") == "pipeline stopped" and "sendmail" in r
    }
    print(f"\n{stopped_at} of {TOTAL} delivered before SIGTERM; per process: {delivered}")
    assert set(delivered) == {0, 1}
    assert all(count > 0 for count in delivered.values()), delivered
    # Only the parent spoke to the service manager: READY once, then STOPPING.
    received = notify.received
    assert {n.pid for n in received} == {parent.pid}
    assert [i for i, n in enumerate(received) if n.has("READY")] == [ready]
    assert any(n.has("STOPPING") for n in received[ready:])
    assert any(n.has("WATCHDOG") for n in received)

    # Started again (the same static member ids: their partitions at once) for the rest:
    # nothing lost, nothing sent twice (the drain committed what was done).
    assert stopped_at < TOTAL, "the stream was over before SIGTERM"
    rest_log = tmp_path / "rest.log"
    rest = start(env, rest_log, "--processes", "2")
    try:
        wait_count(server, TOTAL, rest, 180, rest_log)
        time.sleep(2)  # late duplicates would show
    finally:
        stop_worker(rest)
    counts = Counter(server.message_ids())
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, [m for m, n in counts.items() if n > 1][:5]
    output = log_path.read_text()
    assert "Traceback" not in output, output[-3000:]


def test_a_child_that_dies_stops_the_others_and_fails_the_parent(
    worker_env: tuple[dict[str, str], CredentialFixture], tmp_path: Path
) -> None:
    """Not restarted in place: the parent drains the other child and exits with the dead
    child's status (128 + 9 here), so the service manager sees the failure."""
    base, _credentials = worker_env
    notify = NotifySocket()
    log_path = tmp_path / "parent.log"
    # The count from the environment this time; the children inherit it and run as one each.
    parent = start({**base, "NOTIFY_SOCKET": notify.name, "ETRANS_PROCESSES": "2"}, log_path)
    try:
        notify.wait_for("READY", alive=lambda: parent.poll() is None)
        [started] = [r for r in records(log_path) if r.get("event") == "processes started"]
        children = started["pids"]  # by index
        os.kill(children[1], signal.SIGKILL)
        assert parent.wait(60) == 128 + signal.SIGKILL, log_path.read_text()[-3000:]
    finally:
        stop_worker(parent)
        notify.close()
    lines = records(log_path)
    [failed] = [r for r in lines if r.get("event") == "child process failed: stopping the others"]
    assert failed["pid"] == children[1]
    assert failed["status"] == 128 + signal.SIGKILL
    drained = [r for r in lines if r.get("event") == "stopped" and r.get("process") is not None]
    assert [(r["process"], r["drained"]) for r in drained] == [(0, True)], lines[-20:]
    assert any(n.has("STOPPING") for n in notify.received)
