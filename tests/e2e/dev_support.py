"""Backends of the end-to-end flow suite (send -> deliver -> log -> status).

A backend is a running etrans reachable over HTTP with an API key of a user who owns a verified
domain, plus the directory where the SMTP server that received the mail keeps it:

- :class:`DevBackend`: ``etrans dev`` (one subprocess, embedded stand-ins, temp data dir; extra
  environment variables mix real services in);
- :class:`RealBackend`: ``etrans serve`` + ``etrans sendmail`` + ``etrans fetchlog``
  subprocesses on the harness's Kafka, Redis, PostgreSQL and MongoDB, delivering to the dev SMTP
  sink (:class:`etrans.dev.smtp_sink.SmtpSink`, run here in a thread) which publishes the
  Filebeat-format delivery events onto LOG_TOPIC through a real Kafka producer.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.harness.servers import free_port


class EtransProcess:
    """``python -m etrans <args>``; output in a log file; stopped with SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EtransProcess:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "etrans", *self.args], env=self.env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_http(self, base_url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"etrans {self.args[0]} exited: {self.tail()}")
            try:
                if httpx.get(base_url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"etrans {self.args[0]} did not answer /healthz: {self.tail()}")

    def stop(self, timeout: float = 40.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"etrans {self.args[0]} did not stop on SIGTERM: "
                                 f"{self.tail()}") from None


@dataclass
class Backend:
    name: str
    base_url: str
    api_key: str
    domain: str
    mail_dir: Path
    processes: list[EtransProcess] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-KEY": self.api_key}

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.base_url + path, headers=self.headers, timeout=30, **kw)

    def tails(self) -> str:
        return "\n".join(f"--- {p.args[0]} ---\n{p.tail()}" for p in self.processes)

    def stop(self) -> list[int]:
        return [p.stop() for p in reversed(self.processes)]


def base_env(**extra: str) -> dict[str, str]:
    """A bare environment: nothing of the real services unless given."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "SENDMAIL_RETRY_BASE_SECONDS": "0.2"}
    env.update(extra)
    return env


def start_dev(data_dir: Path, *, env: dict[str, str] | None = None,
              port: int | None = None) -> Backend:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    process = EtransProcess(["dev", "--data-dir", str(data_dir), "--bind", f"127.0.0.1:{port}"],
                            env or base_env(), data_dir.parent / f"{data_dir.name}.log").start()
    base_url = f"http://127.0.0.1:{port}"
    process.wait_http(base_url)
    demo = json.loads((data_dir / "demo.json").read_text())
    return Backend("dev", base_url, demo["api_key"], demo["domain"], data_dir / "mail", [process])


# -- the real-services configuration --------------------------------------------------------------

class SinkThread:
    """The dev SMTP sink in a thread of this process, publishing to Kafka LOG_TOPIC."""

    def __init__(self, mail_dir: Path, bootstrap: str, log_topic: str) -> None:
        from etrans.adapters.kafka.client import KafkaProducer
        from etrans.dev.smtp_sink import SmtpSink

        self.producer = KafkaProducer({"bootstrap.servers": bootstrap})
        self.sink = SmtpSink(mail_dir, self.producer, log_topic)
        self.port = free_port()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        with trio.CancelScope() as scope:
            self._cancel = scope
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.sink.serve, "127.0.0.1", self.port)
                self._ready.set()

    def start(self) -> SinkThread:
        self._thread.start()
        assert self._ready.wait(10), "the SMTP sink did not start"
        return self

    def stop(self) -> None:
        if self._token is not None and self._cancel is not None:
            self._token.run_sync_soon(self._cancel.cancel)
        self._thread.join(10)
        self.producer.close(5.0)


def seed_account(usend_url: str, token_secret: str, token_iv: str) -> tuple[str, str]:
    """A new user (local billing tables of the USEND DB) with a verified domain, an SMTP sender
    and a full-access API key; returns (api key, domain)."""
    from sqlalchemy import create_engine, insert

    from etrans.adapters.crypto.credentials import CredentialCipher, SmtpCredentials
    from etrans.adapters.sql import sqlalchemy_url
    from etrans.adapters.sql.usend import ApiKey, LocalDomain, LocalMktDomain, LocalUser, Transport
    from etrans.domain.api_keys import generate_api_key, hash_api_key

    user_id = secrets.randbelow(2**40) + 10**9
    domain = f"d{uuid.uuid4().hex[:12]}.example.test"
    key = generate_api_key()
    now = datetime.now(UTC)
    cipher = CredentialCipher(token_secret, token_iv)
    engine = create_engine(sqlalchemy_url(usend_url))
    try:
        with engine.begin() as conn:
            conn.execute(insert(LocalUser).values(id=user_id, email=f"u{user_id}@{domain}"))
            domain_id = conn.execute(insert(LocalDomain).values(
                user_id=user_id, name=domain, status="verified", verified_at=now)
                .returning(LocalDomain.id)).scalar_one()
            conn.execute(insert(LocalMktDomain).values(domain_id=domain_id, daily_limit=1000,
                                                       hourly_limit=1000))
            conn.execute(insert(Transport).values(
                user_id=user_id, domain_id=domain_id, domain=domain, account=f"smtp@{domain}",
                password_encrypted=cipher.encrypt(SmtpCredentials(f"smtp@{domain}", "pw"))))
            conn.execute(insert(ApiKey).values(
                user_id=user_id, name="e2e", key_hash=hash_api_key(key), key_prefix=key[:16],
                permission="full_access"))
    finally:
        engine.dispose()
    return key, domain


def start_real(env: dict[str, str], work_dir: Path) -> tuple[Backend, SinkThread]:
    """serve + sendmail + fetchlog on the services of ``env`` (the harness's ``etrans_env``)."""
    mail_dir = work_dir / "mail"
    sink = SinkThread(mail_dir, env["KAFKA_BOOTSTRAP_SERVERS"], env["LOG_TOPIC"]).start()
    # The sink listens on 127.0.0.1 and offers AUTH without TLS: the loopback relay opt-in.
    env = {**env, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.port),
           "SMTP_ALLOW_PLAINTEXT_AUTH": "true",
           "SENDMAIL_RETRY_BASE_SECONDS": "0.2", "KAFKA_COMMIT_INTERVAL_SECONDS": "0.2"}
    env.pop("BILLING_V4_URI", None)
    key, domain = seed_account(env["USEND_DB_URI"], env["TOKEN_SECRET"], env["TOKEN_IV"])
    processes = [EtransProcess([command], env, work_dir / f"{command}.log").start()
                 for command in ("serve", "sendmail", "fetchlog")]
    base_url = f"http://{env['ETRANS_BIND']}"
    backend = Backend("real", base_url, key, domain, mail_dir, processes)
    try:
        processes[0].wait_http(base_url)
    except BaseException:
        backend.stop()
        sink.stop()
        raise
    return backend, sink


def wait_for(predicate: Any, timeout: float, what: str, details: Any = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{details()}")
        time.sleep(0.25)
