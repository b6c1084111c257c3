"""Real webhook receivers for the tests of ``etrans webhooks``: HTTP/1.1 servers on loopback
(the standard library's threading server, one thread per connection) that verify each request's
Standard Webhooks signature with the ``standardwebhooks`` package and keep what they got.
Plus the rows and records the tests need: webhooks in the USEND DB (secrets sealed as the API
seals them) and email events on the events topic."""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from confluent_kafka import Producer
from sqlalchemy import insert
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from etrans.domain.events import EmailEvent, EventType, encode_event, random_event_id
from etrans.domain.webhook_signing import new_secret

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


@dataclass(frozen=True)
class Received:
    webhook_id: str
    timestamp: str
    body: bytes
    verified: bool
    at: float
    host: str = ""

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class Receiver:
    """``answer(n)`` is the status of the n-th request (1-based); ``hang`` holds every request
    until the receiver stops."""

    answer: Callable[[int], int] = lambda n: 200
    hang: bool = False
    secret: str = field(default_factory=new_secret)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: with Nagle on, each answer waits ~40 ms for
            # the client's delayed ACK.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request (kill -9): not received
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                with receiver.lock:
                    receiver.received.append(Received(
                        headers.get("webhook-id", ""), headers.get("webhook-timestamp", ""),
                        body, verified, time.monotonic(), headers.get("host", "")))
                    count = len(receiver.received)
                if receiver.hang:
                    receiver.stopping.wait()
                    return
                status = receiver.answer(count)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", "http://127.0.0.1:9/elsewhere")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.snapshot()]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 30.0,
                 ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.snapshot()
            if predicate(got):
                return got
            assert time.monotonic() < deadline, f"receiver got {len(got)} requests"
            time.sleep(0.02)


def add_webhook(usend_url: str, token_secret: str, user_id: int, url: str, secret: str,
                event_types: Iterable[str] = ()) -> int:
    """A webhooks row as POST /webhooks writes it (the secret sealed for ``user_id``)."""
    from etrans.adapters.crypto.webhook_secrets import WebhookSecretCipher
    from etrans.adapters.sql import usend_database
    from etrans.adapters.sql.usend_webhooks import Webhook as WebhookModel

    db = usend_database(usend_url, pool_size=1)
    table = WebhookModel.__table__
    try:
        with db.engine.begin() as conn:
            return int(conn.execute(insert(table).returning(table.c.id), {
                "user_id": user_id, "url": url, "event_types": list(event_types),
                "secret_sealed": WebhookSecretCipher(token_secret).seal(user_id, secret),
            }).scalar_one())
    finally:
        db.dispose()


def fresh_user() -> int:
    return 2_000_000 + secrets.randbelow(2**40)


def email_event(user_id: int, index: int = 0,
                kind: EventType = EventType.DELIVERED) -> EmailEvent:
    return EmailEvent(id=random_event_id(), type=kind, timestamp=datetime.now(UTC),
                      user_id=user_id, data={"message_id": f"msg_{index}@a.example",
                                             "recipient": f"r{index}@x.org"})


def produce_events(bootstrap: str, topic: str, events: Iterable[EmailEvent]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3})
    for event in events:
        key, value = encode_event(event)
        producer.produce(topic, value, key=key)
        producer.poll(0)
    assert producer.flush(30) == 0
