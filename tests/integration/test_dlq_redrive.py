"""``etrans dlq``: list, show and replay the dead letters, on the real broker (tansu), Redis and
an SMTP server.

The story of the issue: a message is poisoned (sendmail, given a budget of two attempts by its
pipeline's RetryPolicy, dead-letters a send request while the SMTP server is down), the cause is
fixed (the server comes up), ``etrans dlq replay`` produces it to its source topic, and the email
is delivered exactly once - also after a second replay of the same dead letter, which sendmail
skips by its delivery mark.  Then the filters, the dry run and the errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from confluent_kafka import Consumer, Producer, TopicPartition

from etrans import settings
from etrans.adapters.kafka.dead_letters import KafkaDeadLetterLog
from etrans.app.redrive import scan_dead_letters
from etrans.bootstrap import sendmail as sendmail_wiring
from etrans.domain.dead_letters import DeadLetter, DeadLetterFilter
from etrans.pipeline import RetryPolicy
from etrans.pipeline.dead_letter import dead_letter_headers
from etrans.pipeline.message import Message
from etrans.runtime import Shutdown
from tests.harness.smtp import SmtpTestServer
from tests.integration.sendmail_support import CredentialFixture, produce_requests, simple_request

ETRANS = str(Path(sys.executable).with_name("etrans"))


def etrans(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ETRANS, *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


async def etrans_async(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: etrans(env, *args))


def count_records(bootstrap: str, topic: str) -> int:
    """Every record of ``topic`` (partition 0), read to its end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"c-{uuid.uuid4()}",
                         "enable.partition.eof": True, "log_level": 3})
    consumer.assign([TopicPartition(topic, 0, -2)])
    count = 0
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            for record in consumer.consume(100, 0.2):
                if record.error() is None:
                    count += 1
                elif record.error().code() == -191:  # _PARTITION_EOF
                    return count
    finally:
        consumer.close()
    raise TimeoutError(f"{topic} not read to its end")


def dead_letters(env: dict[str, str], wanted: DeadLetterFilter | None = None
                 ) -> list[DeadLetter]:
    kafka = settings.for_command("dlq", env).kafka
    log = KafkaDeadLetterLog(kafka.librdkafka("consumer"), kafka.librdkafka("admin"),
                             env["KAFKA_DEAD_LETTER_TOPIC"])
    found: list[DeadLetter] = []

    async def each(letter: DeadLetter) -> None:
        found.append(letter)

    trio.run(scan_dead_letters, log, wanted or DeadLetterFilter(), each)
    return found


@pytest.fixture
def dlq_env(etrans_env: Callable[..., dict[str, str]], redis_url: str,
            new_topic: Callable[..., str]) -> Iterator[tuple[dict[str, str], CredentialFixture]]:
    env = etrans_env()
    env.update({"KAFKA_DEAD_LETTER_TOPIC": new_topic(prefix="dead"),
                "SENDMAIL_RETRY_BASE_SECONDS": "0.1", "KAFKA_COMMIT_INTERVAL_SECONDS": "0.2",
                "ETRANS_LOG_LEVEL": "WARNING"})
    fixture = CredentialFixture(redis_url, env["TOKEN_SECRET"], env["TOKEN_IV"])
    yield env, fixture
    fixture.cleanup()


async def test_poisoned_then_fixed_then_replayed_is_delivered_once(
        dlq_env: tuple[dict[str, str], CredentialFixture], kafka_bootstrap: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env, credentials = dlq_env
    server = SmtpTestServer()  # not started: the SMTP server is down
    env.update(server.env())
    user_id = credentials.add("dlq-user", "pw")
    poisoned, later = (f"<{tag}-{uuid.uuid4().hex[:8]}@etrans.test>" for tag in ("dlq", "later"))

    # Sendmail retries an unreachable SMTP server until it is back; with a budget of attempts
    # (RetryPolicy.max_attempts) the last failure makes the message poison: dead-lettered.
    production_config = sendmail_wiring.pipeline_config
    monkeypatch.setattr(sendmail_wiring, "pipeline_config", lambda s: replace(
        production_config(s), retry=RetryPolicy(initial_backoff=0.05, max_attempts=2)))
    main = sendmail_wiring.build(settings.for_command("sendmail", env))
    shutdown = Shutdown(drain_seconds=10)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(main, shutdown)
            produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"],
                             [simple_request(poisoned, user_id)])
            with trio.fail_after(60):
                while not await trio.to_thread.run_sync(dead_letters, env):  # noqa: ASYNC110
                    await trio.sleep(0.2)

            listed = await etrans_async(env, "dlq", "list")
            assert listed.returncode == 0, listed.stderr
            [line] = listed.stdout.splitlines()
            assert line.startswith("0/0  ")
            assert f"{env['KAFKA_TOPIC']}/0/0" in line
            assert poisoned in line
            assert "RetryLater: smtp server unavailable" in line
            assert "1 of 1 dead letters" in listed.stderr

            shown = await etrans_async(env, "dlq", "show", "0")
            assert shown.returncode == 0, shown.stderr
            assert f"source      {env['KAFKA_TOPIC']}/0/0" in shown.stdout
            assert "etrans-error-type: RetryLater" in shown.stdout
            assert json.loads(shown.stdout.split("\nvalue\n", 1)[1]) == simple_request(
                poisoned, user_id)

            # A dry run produces nothing.
            dry = await etrans_async(env, "dlq", "replay", "--dry-run")
            assert dry.returncode == 0, dry.stderr
            assert dry.stdout.splitlines()[-1] == "would replay 1 of 1"
            assert await trio.to_thread.run_sync(
                count_records, kafka_bootstrap, env["KAFKA_TOPIC"]) == 1

            server.start()  # the cause, fixed
            replayed = await etrans_async(env, "dlq", "replay")
            assert replayed.returncode == 0, replayed.stderr
            assert replayed.stdout.splitlines() == [
                f"replayed 0/0 -> {env['KAFKA_TOPIC']}/0/0 {poisoned}", "replayed 1 of 1"]
            await server.wait_received_async(1, seconds=60)

            # Replaying it again (at least once) sends nothing more: sendmail skips what it has
            # marked delivered.  A later request behind it shows that sendmail got that far.
            again = await etrans_async(env, "dlq", "replay")
            assert again.stdout.splitlines()[-1] == "replayed 1 of 1", again.stderr
            produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"], [simple_request(later, user_id)])
            await server.wait_received_async(2, seconds=60)
            shutdown.request()
    finally:
        server.stop()
    assert sorted(server.message_ids()) == sorted([poisoned, later])
    # The replayed records carry where they came from; the dead letter stays where it was.
    assert await trio.to_thread.run_sync(count_records, kafka_bootstrap, env["KAFKA_TOPIC"]) == 4
    assert len(await trio.to_thread.run_sync(dead_letters, env)) == 1


def _poison(producer: Producer, env: dict[str, str], source: str, offset: int, error: Exception,
            at: datetime, message_id: str) -> None:
    """A dead letter as the pipeline writes it, dead-lettered at ``at``."""
    message = Message(source, 0, offset, message_id.encode(),
                      json.dumps({"message_id": message_id}).encode(), (("trace", b"t1"),))
    producer.produce(env["KAFKA_DEAD_LETTER_TOPIC"], message.value, key=message.key,
                     headers=dead_letter_headers(message, error),
                     timestamp=int(at.timestamp() * 1000))


def test_filters_pick_by_source_time_and_error_and_a_run_replays_a_source_once(
        dlq_env: tuple[dict[str, str], CredentialFixture], kafka_bootstrap: str,
        new_topic: Callable[..., str]) -> None:
    env, _ = dlq_env
    logs, events = new_topic(prefix="logs"), new_topic(prefix="events")
    now = datetime.now(UTC)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "log_level": 3})
    _poison(producer, env, logs, 0, ValueError("no @timestamp"), now - timedelta(hours=3), "m0")
    _poison(producer, env, events, 0, KeyError("type"), now - timedelta(hours=2), "m1")
    _poison(producer, env, logs, 1, ValueError("bad JSON"), now - timedelta(hours=1), "m2")
    # The same source record dead-lettered twice (a dead-lettering retried after a lost ack).
    _poison(producer, env, logs, 1, ValueError("bad JSON"), now - timedelta(minutes=59), "m2")
    assert producer.flush(30) == 0

    def ids(wanted: DeadLetterFilter) -> list[str | None]:
        return [letter.message_id for letter in dead_letters(env, wanted)]

    assert ids(DeadLetterFilter()) == ["m0", "m1", "m2", "m2"]
    assert ids(DeadLetterFilter(topic=events)) == ["m1"]
    assert ids(DeadLetterFilter(since=now - timedelta(hours=2, minutes=30))) == ["m1", "m2", "m2"]
    assert ids(DeadLetterFilter(until=now - timedelta(hours=1, minutes=30))) == ["m0", "m1"]
    assert ids(DeadLetterFilter(error="keyerror")) == ["m1"]
    assert ids(DeadLetterFilter(topic=logs, error="json")) == ["m2", "m2"]

    listed = etrans(env, "dlq", "list", "--topic", logs, "--since", "150m")
    assert listed.returncode == 0, listed.stderr
    assert [line.split("  ")[0] for line in listed.stdout.splitlines()] == ["0/2", "0/3"]
    assert "2 of 4 dead letters" in listed.stderr

    replayed = etrans(env, "dlq", "replay", "--topic", logs)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines()[-1] == (
        "replayed 2 of 3 (1 duplicate of a replayed record skipped)")
    assert count_records(kafka_bootstrap, logs) == 2
    assert count_records(kafka_bootstrap, events) == 0
    # Each replayed record is the original: key, value and headers, plus where it came from.
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"c-{uuid.uuid4()}",
                         "log_level": 3})
    consumer.assign([TopicPartition(logs, 0, -2)])
    records: list[Any] = []
    deadline = time.monotonic() + 30
    while len(records) < 2 and time.monotonic() < deadline:
        records += [r for r in consumer.consume(10, 0.2) if r.error() is None]
    consumer.close()
    assert [(r.key(), json.loads(r.value())) for r in records] == [
        (b"m0", {"message_id": "m0"}), (b"m2", {"message_id": "m2"})]
    assert records[0].headers() == [
        ("trace", b"t1"),
        ("etrans-replayed-from", f"{env['KAFKA_DEAD_LETTER_TOPIC']}/0/0".encode())]


def test_bad_input_is_refused_with_a_clear_error(
        dlq_env: tuple[dict[str, str], CredentialFixture]) -> None:
    env, _ = dlq_env
    bad_time = etrans(env, "dlq", "list", "--since", "yesterday")
    assert bad_time.returncode == 2
    assert "'yesterday' is neither an ISO-8601 time" in bad_time.stderr
    unknown = etrans(env, "dlq", "replay", "--topic", "no-such-topic-" + uuid.uuid4().hex)
    assert unknown.returncode == 2
    assert "unknown topic 'no-such-topic-" in unknown.stderr
    missing = etrans(env, "dlq", "show", "0/7")
    assert missing.returncode == 1
    assert f"no record at 0/7 of {env['KAFKA_DEAD_LETTER_TOPIC']}" in missing.stderr
    no_topic = etrans({**env, "KAFKA_DEAD_LETTER_TOPIC": "absent-" + uuid.uuid4().hex},
                      "dlq", "list")
    assert no_topic.returncode == 1
    assert "the dead-letter topic 'absent-" in no_topic.stderr
    unset = etrans({k: v for k, v in env.items() if k != "KAFKA_DEAD_LETTER_TOPIC"}, "dlq", "list")
    assert unset.returncode == 2
    assert "KAFKA_DEAD_LETTER_TOPIC is required" in unset.stderr
