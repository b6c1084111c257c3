"""``etrans sendmail`` treats its Kafka topic as untrusted input.

CR, LF or NUL in ``sender.email``, ``message_id``, a header name or value, the subject or an
address of a send request must never reach the SMTP conversation or the rendered headers (a
second RCPT TO smuggled into MAIL FROM, an injected ``Bcc:`` line), nor may a ``List-Unsubscribe``
the API would refuse (``javascript:``, plain http, a one-click POST without https).  Such a
request is refused: one Reject event per recipient on LOG_TOPIC (the email shows as Bounced), the
record on the dead-letter topic, nothing sent - and the requests around it are delivered as
usual.  Run through the whole service (``etrans.bootstrap.sendmail``: Kafka consumer, pipeline,
Redis, SMTP pool) against the Kafka-API broker and aiosmtpd.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from confluent_kafka import Consumer, TopicPartition

from etrans import settings
from etrans.bootstrap import sendmail as sendmail_wiring
from etrans.pipeline.dead_letter import ERROR_HEADER
from etrans.runtime import Shutdown
from tests.harness.smtp import SmtpTestServer
from tests.integration.sendmail_support import (
    CredentialFixture,
    produce_requests,
    read_events,
    simple_request,
)

SMUGGLED_RCPT = "\r\nRCPT TO:<extra@evil.test"
INJECTED_BCC = "\r\nBcc: leak@evil.test"


@pytest.fixture
def sendmail_env(
    etrans_env: Callable[..., dict[str, str]], redis_url: str, new_topic: Callable[..., str],
) -> Iterator[tuple[dict[str, str], CredentialFixture]]:
    env = etrans_env()
    env.update({"KAFKA_DEAD_LETTER_TOPIC": new_topic(prefix="dead"),
                "SENDMAIL_RETRY_BASE_SECONDS": "0.1", "KAFKA_COMMIT_INTERVAL_SECONDS": "1",
                "ETRANS_LOG_LEVEL": "WARNING"})
    fixture = CredentialFixture(redis_url, env["TOKEN_SECRET"], env["TOKEN_IV"])
    yield env, fixture
    fixture.cleanup()


def read_dead_letters(bootstrap_servers: str, topic: str, expected: int,
                      timeout: float = 60.0) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": f"r-{uuid.uuid4()}",
                         "enable.auto.commit": False, "log_level": 3})
    consumer.assign([TopicPartition(topic, 0, -2)])
    records: list[tuple[dict[str, Any], dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(records) < expected:
            for record in consumer.consume(100, 0.2):
                if record.error() is None:
                    records.append((json.loads(record.value()), dict(record.headers() or [])))
    finally:
        consumer.close()
    return records


def unsafe_requests(user_id: str) -> dict[str, dict[str, Any]]:
    """One request per injection, each for the recipient ``victim-<n>@example.org``."""
    cases: dict[str, dict[str, Any]] = {
        "sender.email": {"sender": {"name": "S", "email": "sender@example.com>" + SMUGGLED_RCPT}},
        "sender.name": {"sender": {"name": "S" + INJECTED_BCC, "email": "sender@example.com"}},
        "recipient": {"recipients": ["victim-{n}@example.org>" + SMUGGLED_RCPT]},
        "recipient name": {"recipients": ["V" + INJECTED_BCC + " <victim-{n}@example.org>"]},
        "cc": {"cc": ["cc@example.org" + INJECTED_BCC]},
        "bcc NUL": {"bcc": ["bcc\x00@example.org"]},
        "reply_to": {"reply_to": "help@example.org" + INJECTED_BCC},
        "message_id": {"message_id": "<unsafe-{n}-{uuid}@etrans.test>" + INJECTED_BCC},
        "subject": {"subject": "Hello" + INJECTED_BCC},
        "header value": {"headers": {"X-Campaign": "c1" + INJECTED_BCC}},
        "header name": {"headers": {"X-Campaign" + INJECTED_BCC: "c1"}},
        "header NUL": {"headers": {"X-Campaign": "c1\x00"}},
        # The API's one-click unsubscribe rule, applied again at the worker's trust boundary.
        "List-Unsubscribe javascript": {"headers": {"List-Unsubscribe": "<javascript:alert(1)>"}},
        "List-Unsubscribe plain http": {"headers": {"list-unsubscribe": "<http://evil.test/u>"}},
        "List-Unsubscribe-Post without https": {"headers": {
            "List-Unsubscribe": "<mailto:u@example.org>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}},
    }
    requests = {}
    for n, (case, overrides) in enumerate(cases.items()):
        message_id = f"<unsafe-{n}-{uuid.uuid4().hex[:8]}@etrans.test>"
        request = simple_request(message_id, user_id, recipients=[f"victim-{n}@example.org"])
        for key, value in overrides.items():
            if isinstance(value, str):
                value = value.replace("{n}", str(n)).replace("{uuid}", uuid.uuid4().hex)
            elif isinstance(value, list):
                value = [v.replace("{n}", str(n)) for v in value]
            request["payload"][key] = value
        requests[case] = request
    return requests


async def test_unsafe_requests_are_rejected_dead_lettered_and_never_sent(
    sendmail_env: tuple[dict[str, str], CredentialFixture],
    smtp_server_factory: Callable[..., SmtpTestServer], kafka_bootstrap: str,
) -> None:
    env, credentials = sendmail_env
    server = smtp_server_factory()
    env.update(server.env())
    user_id = credentials.add("untrusted-user", "pw")
    unsafe = unsafe_requests(user_id)
    first, last = (f"<good-{i}-{uuid.uuid4().hex[:8]}@etrans.test>" for i in range(2))
    produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"], [
        simple_request(first, user_id), *unsafe.values(), simple_request(last, user_id)])

    expected_events = sum(len(r["payload"].get(k) or []) for r in unsafe.values()
                          for k in ("recipients", "cc", "bcc"))
    main = sendmail_wiring.build(settings.for_command("sendmail", env))
    shutdown = Shutdown(drain_seconds=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(main, shutdown)
        await server.wait_received_async(2, seconds=60)
        events = await trio.to_thread.run_sync(
            lambda: read_events(kafka_bootstrap, env["LOG_TOPIC"], expected_events, timeout=60,
                                settle=1.0))
        dead = await trio.to_thread.run_sync(
            lambda: read_dead_letters(kafka_bootstrap, env["KAFKA_DEAD_LETTER_TOPIC"],
                                      len(unsafe)))
        shutdown.request()

    # The good requests before and after went out; nothing of the unsafe ones did.
    assert sorted(r.message_id for r in server.received) == sorted([first, last])
    assert [a.rcpt_tos for a in server.attempts] == [["to@example.com"]] * 2
    for received in server.received:
        assert b"evil.test" not in received.data
        assert b"victim" not in received.data

    # One Reject event per recipient of each unsafe request; no CR/LF/NUL in any field.
    rejects: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        assert event["Event"] == "Reject", event
        assert event["response"].startswith("554 5.6.0 etrans: invalid request: "), event
        assert not any(ch in json.dumps(event, ensure_ascii=False) for ch in "\r\n\x00"), event
        rejects.setdefault(event["message_id"], []).append(event)
    assert len(events) == expected_events
    for n, (case, request) in enumerate(unsafe.items()):
        reported = rejects[safe(request["payload"]["message_id"])]
        recipients = [e["recipient"] for e in reported]
        if case in ("recipient", "recipient name"):
            # Unreadable: reported under its text, made safe.
            assert recipients == [safe(request["payload"]["recipients"][0])], case
        else:
            assert f"victim-{n}@example.org" in recipients, (case, recipients)

    # And every unsafe record on the dead-letter topic, as it was, with the reason.
    assert sorted(record["payload"]["message_id"] for record, _ in dead) == sorted(
        request["payload"]["message_id"] for request in unsafe.values())
    for _, headers in dead:
        assert headers[ERROR_HEADER].startswith(b"refused send request: "), headers


def safe(text: str) -> str:
    return text.strip().replace("\r", "\ufffd").replace("\n", "\ufffd").replace("\x00", "\ufffd")


async def test_a_message_that_cannot_be_built_is_rejected_not_retried_forever(
    sendmail_env: tuple[dict[str, str], CredentialFixture],
    smtp_server_factory: Callable[..., SmtpTestServer], kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A defect met by one input while the message is built (the MIME builder raising for it)
    fails the same way on every attempt: the email is rejected at once (Reject event, shown as
    Bounced), never retried for as long as the process lives, and the others go out.  The
    defect is simulated: fuzzing found no input that makes the builder raise."""
    from etrans.app import message_build
    from etrans.domain.mime import render

    env, credentials = sendmail_env
    server = smtp_server_factory()
    env.update(server.env())
    user_id = credentials.add("unbuildable-user", "pw")
    first, bad, last = (f"<{name}-{uuid.uuid4().hex[:8]}@etrans.test>"
                        for name in ("good", "bad", "good"))

    def render_with_a_defect(outgoing: Any, **kwargs: Any) -> bytes:
        if outgoing.message_id == bad:
            raise RecursionError("maximum recursion depth exceeded")
        return render(outgoing, **kwargs)

    monkeypatch.setattr(message_build, "render", render_with_a_defect)
    produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"], [
        simple_request(first, user_id), simple_request(bad, user_id),
        simple_request(last, user_id)])
    main = sendmail_wiring.build(settings.for_command("sendmail", env))
    shutdown = Shutdown(drain_seconds=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(main, shutdown)
        await server.wait_received_async(2, seconds=60)
        events = await trio.to_thread.run_sync(
            lambda: read_events(kafka_bootstrap, env["LOG_TOPIC"], 1, timeout=30, settle=1.0))
        shutdown.request()

    assert sorted(r.message_id for r in server.received) == sorted([first, last])
    assert [(e["Event"], e["message_id"]) for e in events] == [("Reject", bad)], events
    assert events[0]["response"].startswith(
        "554 5.6.0 etrans: the message could not be built"), events[0]
