"""End to end on a real ``etrans serve`` process: POST /emails -> the Kafka record has the spec's
shape -> the Redis credential decrypts with TOKEN_SECRET/TOKEN_IV as docs/wire-formats.md says;
and the outbox under a paused broker (SIGSTOP): requests succeed, nothing is published until the
broker resumes, then everything is, exactly the emails that have rows."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import httpx
import pytest
import trio
from sqlalchemy import create_engine, func, select

from etrans.adapters.crypto.credentials import AUTH_HASH, CredentialCipher
from etrans.adapters.sql import sqlalchemy_url
from etrans.adapters.sql.usend import EmailMessage, EmailOutbox
from tests.e2e.send_support import (
    JWT_SECRET,
    ServeProcess,
    bearer,
    read_topic,
    seed_sender,
)
from tests.harness.databases import BillingSeeder
from tests.harness.servers import TansuBroker, create_topic

SPEC_PAYLOAD_KEYS = {"sender", "recipients", "cc", "bcc", "subject", "body", "message_id",
                     "attachments", "user_id"}
OPTIONAL_PAYLOAD_KEYS = {"text", "body_format", "reply_to", "headers", "tags"}


def _env(etrans_env: Any, billing_db: Any, **overrides: Any) -> dict[str, str]:
    values = {"DB_URI": billing_db.readonly_url, "BILLING_V4_URI": "http://127.0.0.1:9/",
              "JWT_SECRET": JWT_SECRET, "ETRANS_REDIS_PREFIX": f"e2e:{uuid.uuid4().hex[:10]}:",
              "ETRANS_LOG_LEVEL": "INFO"}
    values.update(overrides)
    return etrans_env(**values)


@pytest.mark.slow
def test_send_flow_kafka_shape_and_credentials(etrans_env: Any, billing_db: Any,
                                               kafka_test_config: dict[str, Any],
                                               redis_url: str) -> None:
    env = _env(etrans_env, billing_db)
    user, domain = seed_sender(BillingSeeder(billing_db.owner_url))
    serve = ServeProcess(env).start()
    try:
        body = {"from": f"Acme <news@{domain}>", "to": ["a@example.org"],
                "cc": ["c@example.org"], "bcc": ["b@example.org"], "subject": "Welcome",
                "html": "<b>Hi</b>", "text": "Hi", "reply_to": "help@example.org",
                "attachments": [{"filename": "a.txt", "content": "aGVsbG8=",
                                 "content_type": "text/plain"}]}
        response = httpx.post(serve.base_url + "/emails", json=body, headers=bearer(user),
                              timeout=30)
        assert response.status_code == 200, response.text
        sent = response.json()
        records = read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], want=1,
                             overrides=kafka_test_config)
        assert len(records) == 1, serve.tail()
        record = records[0]
        assert set(record["value"]) == {"payload"}
        payload = record["value"]["payload"]
        assert SPEC_PAYLOAD_KEYS <= set(payload) <= SPEC_PAYLOAD_KEYS | OPTIONAL_PAYLOAD_KEYS
        assert payload == {
            "sender": {"name": "Acme", "email": f"news@{domain}"},
            "recipients": ["a@example.org"], "cc": ["c@example.org"], "bcc": ["b@example.org"],
            "subject": "Welcome", "body": "<b>Hi</b>", "message_id": sent["id"],
            "attachments": [{"filename": "a.txt", "content": "aGVsbG8=",
                             "content_type": "text/plain"}],
            "user_id": str(user), "text": "Hi", "body_format": "html",
            "reply_to": "help@example.org",
        }
        assert record["key"] == sent["id"].encode()

        import redis

        value = redis.Redis.from_url(redis_url).hget(AUTH_HASH, str(user))
        creds = CredentialCipher(env["TOKEN_SECRET"], env["TOKEN_IV"]).decrypt(value)
        assert (creds.username, creds.password) == (f"smtp-{user}", f"pw-{user}-secret")

        got = httpx.get(f"{serve.base_url}/emails/{sent['id']}", headers=bearer(user), timeout=10)
        assert got.status_code == 200
        assert got.json()["status"] == "Queued"
        assert httpx.get(serve.base_url + "/openapi.json", timeout=10).status_code == 200
        assert httpx.get(serve.base_url + "/docs", timeout=10).status_code == 200
    finally:
        status = serve.stop()
    assert status == 0, serve.tail()


@pytest.mark.slow
def test_paused_broker_nothing_half_done(etrans_env: Any, billing_db: Any,
                                         kafka_test_config: dict[str, Any]) -> None:
    broker = TansuBroker().start()
    topic = create_topic(broker.bootstrap, f"sendmail-{uuid.uuid4().hex[:8]}")
    env = _env(etrans_env, billing_db, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
               KAFKA_TOPIC=topic, KAFKA_CONF_MESSAGE_TIMEOUT_MS="8000",
               KAFKA_CONF_SOCKET_TIMEOUT_MS="3000")
    user, domain = seed_sender(BillingSeeder(billing_db.owner_url))
    engine = create_engine(sqlalchemy_url(env["USEND_DB_URI"]))
    emails, outbox = EmailMessage.__table__, EmailOutbox.__table__
    serve = ServeProcess(env).start()
    assert broker.process is not None
    outcomes: dict[int, tuple[int, Any]] = {}
    try:
        # Warm up: the producer is connected when the broker freezes.
        warm = httpx.post(serve.base_url + "/emails", headers=bearer(user), timeout=30,
                          json={"from": f"w@{domain}", "to": ["x@example.org"],
                                "subject": "warm", "text": "w"})
        assert warm.status_code == 200
        assert len(read_topic(broker.bootstrap, topic, want=1, overrides=kafka_test_config)) == 1

        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            async def send_all() -> None:
                async with httpx.AsyncClient(timeout=30) as client:
                    async def send(i: int) -> None:
                        try:
                            r = await client.post(
                                serve.base_url + "/emails", headers=bearer(user),
                                json={"from": f"p@{domain}", "to": ["x@example.org"],
                                      "subject": f"paused {i}", "text": "t"})
                            outcomes[i] = (r.status_code, r.json())
                        except httpx.HTTPError as exc:
                            outcomes[i] = (0, repr(exc))

                    async with trio.open_nursery() as nursery:
                        for i in range(20):
                            nursery.start_soon(send, i)

            trio.run(send_all)
            time.sleep(2.0)
            # This test's rows only: the USEND DB is the session's, shared with the tests
            # before it (a row they scheduled days ahead stays unpublished).
            with engine.connect() as conn:
                pending = conn.execute(select(func.count()).select_from(outbox).where(
                    outbox.c.published_at.is_(None), outbox.c.topic == topic)).scalar()
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        accepted = {body["id"] for status, body in outcomes.values() if status == 200}
        failed = [(s, b) for s, b in outcomes.values() if s != 200]
        # Every request got a clean answer: a success, or an error body (never a hang).
        assert all(s >= 400 and isinstance(b, dict) and b.get("detail") for s, b in failed), \
            failed
        assert len(accepted) == 20, failed  # the outbox lets sends succeed while Kafka is down
        assert pending == 20  # ... but nothing of them could be published yet

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                pending = conn.execute(select(func.count()).select_from(outbox).where(
                    outbox.c.published_at.is_(None), outbox.c.topic == topic)).scalar()
            if pending == 0:
                break
            time.sleep(0.5)
        assert pending == 0, serve.tail()
        records = read_topic(broker.bootstrap, topic, want=21, overrides=kafka_test_config)
        published = {r["value"]["payload"]["message_id"] for r in records}
        with engine.connect() as conn:
            rows = {row[0] for row in conn.execute(
                select(emails.c.message_id).where(emails.c.user_id == user))}
        assert accepted <= published
        assert published == rows  # no row without its message, no message without its row
    finally:
        serve.stop()
        engine.dispose()
        broker.cleanup()
