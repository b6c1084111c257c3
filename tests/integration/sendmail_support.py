"""Helpers shared by the sendmail integration tests: requests, credentials, topic reading."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from etrans.adapters.crypto.credentials import AUTH_HASH, CredentialCipher, SmtpCredentials
from tests.harness.servers import RedisServer

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8


def spec_request(message_id: str, user_id: str, **overrides: Any) -> dict[str, Any]:
    """Exactly the spec's "Kafka Message Format", as the old API produced it."""
    payload: dict[str, Any] = {
        "sender": {"name": "Sender Name", "email": "sender@example.com"},
        "recipients": ["to@example.com"],
        "cc": ["cc@example.com"],
        "bcc": ["bcc@example.com"],
        "subject": "Subject line",
        "body": "<html>Email body</html>",
        "message_id": message_id,
        "attachments": [
            {"filename": "file.pdf", "content": base64.b64encode(PDF).decode(),
             "content_type": "application/pdf"},
        ],
        "user_id": user_id,
    }
    payload.update(overrides)
    return {"payload": payload}


def simple_request(message_id: str, user_id: str, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "sender": {"name": "Bench", "email": "sender@example.com"},
        "recipients": ["to@example.com"],
        "subject": f"message {message_id}",
        "body": f"<p>hello {message_id}</p>",
        "message_id": message_id,
        "user_id": user_id,
    }
    payload.update(overrides)
    return {"payload": payload}


class PersistentRedis(RedisServer):
    """A private redis-server whose data survives a restart (saved at shutdown, loaded at
    start), as a production Redis's would: for tests that stop and restart it."""

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--save") + 1] = "3600 1"
        return command


class CredentialFixture:
    """Writes users' credentials into the shared Redis hash ``auth`` and removes them after."""

    def __init__(self, redis_url: str, secret: str, iv: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.cipher = CredentialCipher(secret, iv)
        self.users: list[str] = []

    def add(self, username: str, password: str, user_id: str | None = None) -> str:
        user_id = user_id or str(uuid.uuid4().int % 10**12)
        value = self.cipher.encrypt(SmtpCredentials(username, password))
        self.client.hset(AUTH_HASH, user_id, value)
        self.users.append(user_id)
        return user_id

    def add_raw(self, value: str) -> str:
        user_id = str(uuid.uuid4().int % 10**12)
        self.client.hset(AUTH_HASH, user_id, value)
        self.users.append(user_id)
        return user_id

    def cleanup(self) -> None:
        if self.users:
            self.client.hdel(AUTH_HASH, *self.users)
        self.client.close()


def read_events(bootstrap: str, topic: str, expected: int, *, timeout: float = 20.0,
                settle: float = 0.0) -> list[dict[str, Any]]:
    """Read ``topic`` (partition 0) from the beginning until ``expected`` records, or timeout;
    then keep reading ``settle`` more seconds to catch records beyond the expected ones."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4()}",
                         "enable.auto.commit": False, "log_level": 3})
    consumer.assign([TopicPartition(topic, 0, -2)])  # OFFSET_BEGINNING
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(events) < expected:
            for record in consumer.consume(100, 0.2):
                if record.error() is None:
                    events.append(json.loads(record.value()))
        settle_until = time.monotonic() + settle
        while time.monotonic() < settle_until:
            for record in consumer.consume(100, 0.2):
                if record.error() is None:
                    events.append(json.loads(record.value()))
    finally:
        consumer.close()
    return events


def produce_requests(bootstrap: str, topic: str, requests: list[dict[str, Any]],
                     partitions: int = 1) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3})
    for index, request in enumerate(requests):
        producer.produce(topic, json.dumps(request).encode(),
                         key=request["payload"]["message_id"].encode(),
                         partition=index % partitions)
        if index % 500 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
