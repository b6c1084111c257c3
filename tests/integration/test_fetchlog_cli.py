"""``etrans fetchlog`` end to end, as subprocesses: Kafka-API broker -> worker -> MongoDB.

- a replay with ``--from-earliest --stop-at-end``, twice: the document count is unchanged;
- ``kill -9`` mid-run, then a restart: no event lost, none stored twice;
- MongoDB stopped mid-stream and restarted (a private secantus on disk): every event stored
  exactly once, and the worker saw the outage (retries) without exiting.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from pymongo import MongoClient

from tests.harness.servers import SecantusServer, unique_name

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 120


def produce_events(bootstrap: str, topic: str, count: int, *, prefix: str) -> int:
    """``count`` events on ``topic``: every 20th is filtered (Connect), every 20th+1 skipped
    (internal message id); the rest are stored.  Returns the number that must be stored."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    stored = 0
    for n in range(count):
        kind = ("Sender", "Queue", "Deferred", "Reject")[n % 4]
        message_id = f"{prefix}-msg-{n // 3}"
        if n % 20 == 0:
            kind = "Connect"
        elif n % 20 == 1:
            message_id = f"{n}.notify@bizfly.vn"
        else:
            stored += 1
        event = {
            "Event": kind, "@timestamp": f"2026-03-10T04:{(n // 60) % 60:02d}:{n % 60:02d}.000Z",
            "SMTP_Action": "delivered" if kind == "Sender" else kind.lower(),
            "from": "hello@shop.example", "recipient": f"user{n}@mail.example",
            "response": "250 2.0.0 OK", "from_domain": "shop.example",
            "Event_ID": f"{prefix}-evt-{n}", "message_id": message_id,
            "to_domain": "mail.example", "agent": {"type": "filebeat", "hostname": "mx1",
                                                   "name": "beat", "id": "a"},
        }
        while True:
            try:
                producer.produce(topic, json.dumps(event).encode(), key=message_id.encode())
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    return stored


def _topic_with_events(kafka_bootstrap: str, new_topic: Callable[..., str], count: int,
                       partitions: int = 3) -> tuple[str, str, int]:
    topic = new_topic(partitions=partitions, prefix="email-logs")
    prefix = unique_name("ev")
    return topic, prefix, produce_events(kafka_bootstrap, topic, count, prefix=prefix)


def start_fetchlog(env: dict[str, str], *args: str, log_path: Path,
                   stderr: int | None = None) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen([sys.executable, "-m", "etrans", "fetchlog", *args], env=env,
                                stdout=log_file,
                                stderr=subprocess.STDOUT if stderr is None else stderr)


class Terminal:
    """A pseudo-terminal for a subprocess's stderr; ``text()`` is everything it wrote."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)

    def started(self) -> None:
        os.close(self.slave)  # the child holds its own copy
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the child side is closed
                break
            if not chunk:
                break
            self._chunks.append(chunk)

    def text(self) -> str:
        self._reader.join(10)
        os.close(self.master)
        return b"".join(self._chunks).decode(errors="replace")


def wait_exit(process: subprocess.Popen[bytes], log_path: Path,
              timeout: float = RUN_TIMEOUT) -> None:
    try:
        status = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"fetchlog did not finish in {timeout} s:\n{log_path.read_text()[-4000:]}")
    assert status == 0, f"fetchlog exited {status}:\n{log_path.read_text()[-4000:]}"


def summary(log_path: Path) -> dict[str, object]:
    """The last ``fetchlog summary`` log line of a run."""
    lines = [json.loads(line) for line in log_path.read_text().splitlines()
             if line.startswith("{") and '"fetchlog summary"' in line]
    assert lines, log_path.read_text()[-4000:]
    return lines[-1]


def wait_count(collection, minimum: int, process: subprocess.Popen[bytes],  # type: ignore[no-untyped-def]
               timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = collection.estimated_document_count()
        if count >= minimum:
            return count
        assert process.poll() is None, "fetchlog exited early"
        time.sleep(0.05)
    pytest.fail(f"fewer than {minimum} documents after {timeout} s")


def assert_each_event_once(collection, prefix: str, expected: int) -> None:  # type: ignore[no-untyped-def]
    ids = [d["event_id"] for d in collection.find({}, {"event_id": 1, "_id": 0})]
    assert len(ids) == expected, f"{len(ids)} documents, expected {expected}"
    assert len(set(ids)) == expected, "an event was stored twice"
    assert all(i.startswith(prefix) for i in ids)
    # Neither filtered nor skipped events were stored.
    assert collection.count_documents({"event": "Connect"}) == 0
    assert collection.count_documents({"message_id": {"$regex": "bizfly"}}) == 0


@pytest.fixture
def mongo_client(mongo_uri: str) -> Iterator[MongoClient]:
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    yield client
    client.close()


def test_replay_twice_keeps_the_count(
    kafka_bootstrap: str, new_topic: Callable[..., str], etrans_env: Callable[..., dict[str, str]],
    mongo_client: MongoClient, tmp_path: Path,
) -> None:
    topic, prefix, expected = _topic_with_events(kafka_bootstrap, new_topic, 3000)
    env = etrans_env(LOG_TOPIC=topic, LOG_BATCH_SIZE=200)
    collection = mongo_client[env["MONGODB_DBNAME"]][env["MONGODB_COLLECTION"]]
    try:
        for run in (1, 2):
            log_path = tmp_path / f"run{run}.log"
            # The second run draws its progress on a terminal, as an operator would see it.
            terminal = Terminal() if run == 2 else None
            process = start_fetchlog(env, "--from-earliest", "--stop-at-end", log_path=log_path,
                                     stderr=terminal.slave if terminal else None)
            if terminal:
                terminal.started()
            wait_exit(process, log_path)
            if terminal:
                screen = terminal.text()
                assert re.search(r"fetchlog: \d+ events done, (\d+|\?) remaining, [\d,]+ events/s",
                                 screen), screen[-2000:]
                assert "fetchlog: 3000 events in" in screen, screen[-2000:]
                assert f"0 stored, {expected} already stored, 150 filtered, 150 skipped" \
                    in screen, screen[-2000:]
            assert_each_event_once(collection, prefix, expected)
            counts = summary(log_path)
            assert counts["events"] == 3000
            assert (counts["filtered"], counts["skipped"]) == (150, 150)
            # The second run really read everything again: all of it was already stored.
            assert (counts["stored"], counts["duplicates"]) == (
                (expected, 0) if run == 1 else (0, expected))
        indexes = {ix["name"] for ix in collection.list_indexes()}
        assert {"idx_from_domain_timestamp", "idx_message_id", "idx_event_timestamp",
                "uniq_event_id"} <= indexes
    finally:
        mongo_client.drop_database(env["MONGODB_DBNAME"])


def test_kill_9_mid_run_then_restart(
    kafka_bootstrap: str, new_topic: Callable[..., str], etrans_env: Callable[..., dict[str, str]],
    mongo_client: MongoClient, tmp_path: Path,
) -> None:
    topic, prefix, expected = _topic_with_events(kafka_bootstrap, new_topic, 12000)
    # Also the configuration without the USEND DB: logs only, no email status updates.
    env = etrans_env(LOG_TOPIC=topic, LOG_BATCH_SIZE=100, USEND_DB_URI=None)
    collection = mongo_client[env["MONGODB_DBNAME"]][env["MONGODB_COLLECTION"]]
    try:
        log_path = tmp_path / "killed.log"
        process = start_fetchlog(env, log_path=log_path)
        seen = wait_count(collection, 2000, process)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        at_kill = collection.count_documents({})
        print(f"killed with {seen}..{at_kill} of {expected} documents stored")
        assert at_kill < expected, "the run finished before the kill: nothing was tested"

        # Restart in the same group: resumes from the committed offsets, replays the window
        # that was done but not committed (duplicate keys, ignored), then stops at the end.
        log_path = tmp_path / "restart.log"
        wait_exit(start_fetchlog(env, "--stop-at-end", log_path=log_path), log_path)
        assert_each_event_once(collection, prefix, expected)
        counts = summary(log_path)
        print(f"after restart: {counts['stored']} stored, {counts['duplicates']} replayed"
              " (done before the kill but not committed, or still in the server's hands)")
        # Writes already sent when the process died may still land after at_kill was read, so
        # the split is not exact; but the restart must have covered all that was missing.
        assert counts["stored"] <= expected - at_kill
        assert counts["stored"] + counts["duplicates"] >= expected - at_kill
    finally:
        mongo_client.drop_database(env["MONGODB_DBNAME"])


class DiskSecantus(SecantusServer):
    """A private secantus whose data lives in its temp dir, so it survives stop/start."""

    def command(self) -> list[str]:
        command = super().command()
        assert self.workdir is not None
        command[command.index(":memory:")] = str(self.workdir / "data")
        return command


def test_mongo_stopped_mid_stream_and_restarted(
    kafka_bootstrap: str, new_topic: Callable[..., str], etrans_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    topic, prefix, expected = _topic_with_events(kafka_bootstrap, new_topic, 8000)
    with DiskSecantus() as server:
        env = etrans_env(LOG_TOPIC=topic, LOG_BATCH_SIZE=100, MONGODB_URI=server.url,
                         LOG_MONGO_INSERT_TIMEOUT_SECONDS=2, LOG_PROCESS_TIMEOUT_SECONDS=5)
        client: MongoClient = MongoClient(server.url, tz_aware=True)
        collection = client[env["MONGODB_DBNAME"]][env["MONGODB_COLLECTION"]]
        try:
            log_path = tmp_path / "outage.log"
            process = start_fetchlog(env, "--from-earliest", "--stop-at-end", log_path=log_path)
            wait_count(collection, 1000, process)
            server.stop()
            time.sleep(4)
            assert process.poll() is None, "fetchlog must keep retrying while MongoDB is down"
            server.start()
            wait_exit(process, log_path)
            assert_each_event_once(collection, prefix, expected)
            counts = summary(log_path)
            assert counts["retries"] > 0, "the outage was not noticed"
            assert counts["stored"] + counts["duplicates"] >= expected
        finally:
            client.close()
