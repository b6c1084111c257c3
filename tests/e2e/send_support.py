"""Helpers of the end-to-end send tests: a real ``etrans serve`` subprocess, billing rows, a
Kafka reader."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt

JWT_SECRET = "e2e-jwt-secret-" + "z" * 32


def seed_sender(seed: Any, *, daily: int | None = 10_000_000,
                hourly: int | None = 1_000_000) -> tuple[int, str]:
    """A user (random big id) owning a verified domain, with SMTP credentials.  Its
    ``mkt_domain`` limits default to figures no test or benchmark reaches (NULL limits mean the
    pack's, and without a pack the FREE pack's 4 an hour: docs/api.md, quota rule)."""
    user_id = secrets.randbelow(2**40) + 10**9
    seed._insert("users", {"id": user_id, "email": f"u{user_id}@example.test"})
    domain = f"d{uuid.uuid4().hex[:12]}.example.test"
    domain_id = seed.domain(user_id, domain, status="verified")
    seed.mkt_domain(domain_id, pack_code=None, daily_limit=daily, hourly_limit=hourly)
    seed.temporary_password(user_id, f"smtp-{user_id}", f"pw-{user_id}-secret")
    return user_id, domain


def bearer(user_id: int) -> dict[str, str]:
    token = jwt.encode({"sub": str(user_id), "exp": int(time.time()) + 3600}, JWT_SECRET,
                       algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


class ServeProcess:
    """``python -m etrans serve`` with the given environment, stopped with SIGTERM."""

    def __init__(self, env: dict[str, str], *, python_args: tuple[str, ...] = (),
                 serve_args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.python_args = python_args
        self.serve_args = serve_args  # e.g. ("--workers", "2")
        self.base_url = f"http://{env['ETRANS_BIND']}"
        self.log = Path(tempfile.mkdtemp(prefix="etrans-serve-")) / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServeProcess:
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, *self.python_args, "-m", "etrans", "serve", *self.serve_args],
                env=self.env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=os.getcwd())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"etrans serve exited: {self.tail()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"etrans serve did not answer /healthz: {self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"etrans serve did not stop on SIGTERM: {self.tail()}") from None


def read_topic(bootstrap: str, topic: str, *, want: int, timeout: float = 60.0,
               overrides: dict[str, Any] | None = None,
               raw: bool = False) -> list[dict[str, Any]]:
    """Every record of partition 0 of ``topic`` from the start, until ``want`` were read
    (``raw``: the value as bytes, with the record's headers)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         **(overrides or {})})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < want and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            if raw:
                records.append({"key": message.key(), "value": message.value(),
                                "headers": message.headers() or []})
            else:
                records.append({"key": message.key(), "value": json.loads(message.value())})
    finally:
        consumer.close()
    return records
