"""A real SMTP server for tests and benchmarks (aiosmtpd in a thread), and its pytest fixtures.

:class:`SmtpTestServer` listens on a free port of 127.0.0.1 and records every transaction:
``received`` (accepted messages: envelope, raw bytes, TLS, AUTH login) and ``attempts`` (every
DATA, with the reply given).  Options:

``tls``        ``"none"`` (plain), ``"starttls"`` (offers STARTTLS) or ``"implicit"`` (TLS from the
               first byte); certificates come from a ``trustme`` CA (:class:`TestCertificates`)
``users``      ``{"login": "password"}``: AUTH LOGIN/PLAIN is offered (also without TLS) and
               required; wrong credentials get ``535``.  None: no AUTH offered
``replies``    scripted DATA replies, consumed one per transaction, e.g.
               ``["421 4.3.0 Try again later", "421 4.3.0 Try again later"]`` then 250 as usual;
               ``["550 5.7.1 Rejected"] * 10`` rejects ten transactions
``rcpt_replies`` ``{"address": "550 5.1.1 No such user"}``: per-recipient RCPT replies
``max_recipients`` RCPTs accepted per transaction; the next ones get ``452 4.5.3 Too many
               recipients`` (RFC 5321 4.5.3.1.10)

``stop()`` takes the server down (connections dropped, port closed) and ``start()`` brings it back
on the same port.  Fixtures (a pytest plugin listed in ``tests/conftest.py``):

``smtp_certificates``   session: the trustme CA and server certificate (``.ca_file`` for clients)
``smtp_server_factory`` ``smtp_server_factory(**options) -> SmtpTestServer``, started; all are
                        stopped at teardown
``smtp_server``         a plain server without AUTH
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness.servers import free_port, port_open


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None
    session_id: int
    received_at: float

    def parsed(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]

    @property
    def message_id(self) -> str:
        return str(self.parsed()["Message-ID"] or "")


@dataclass
class Attempt:
    """One DATA command (or a transaction refused at RCPT), with the reply the server gave."""

    mail_from: str
    rcpt_tos: list[str]
    reply: str
    at: float
    session_id: int


class TestCertificates:
    """A trustme CA and a certificate for 127.0.0.1/localhost, with the CA written to a file."""

    def __init__(self) -> None:
        import trustme

        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self._dir = tempfile.TemporaryDirectory(prefix="etrans-smtp-tls-")
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        return context

    def cleanup(self) -> None:
        self._dir.cleanup()


class _Handler:
    def __init__(self, server: SmtpTestServer) -> None:
        self.server = server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.server.rcpt_replies.get(address.lower())
        if reply is not None:
            return reply
        limit = self.server.max_recipients
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        owner = self.server
        if owner.data_delay:
            await asyncio.sleep(owner.data_delay)
        with owner.lock:
            reply = owner.replies.pop(0) if owner.replies else None
        now = time.monotonic()
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object") \
            is not None
        login = None
        if session.authenticated and session.auth_data is not None:
            login = getattr(session.auth_data, "login", None)
            login = login.decode() if isinstance(login, bytes) else login
        owner.attempts.append(Attempt(envelope.mail_from, list(envelope.rcpt_tos),
                                      reply or "250 OK", now, id(session)))
        if reply is not None and not reply.startswith("2"):
            return reply
        data = envelope.original_content or envelope.content
        owner.received.append(ReceivedMessage(
            mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
            data=data if isinstance(data, bytes) else data.encode(),
            tls=tls, login=login, session_id=id(session), received_at=now,
        ))
        return reply or "250 2.0.0 OK queued"


@dataclass
class SmtpTestServer:
    tls: str = "none"
    users: dict[str, str] | None = None
    replies: list[str] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    max_recipients: int | None = None  # RCPTs accepted per transaction, then 452 4.5.3
    data_delay: float = 0.0
    certificates: TestCertificates | None = None
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        if self.tls not in ("none", "starttls", "implicit"):
            raise ValueError(f"tls must be none, starttls or implicit, not {self.tls!r}")
        if self.tls != "none" and self.certificates is None:
            raise ValueError("tls needs certificates (TestCertificates)")
        self.port = self.port or free_port(self.host)
        self.rcpt_replies = {k.lower(): v for k, v in self.rcpt_replies.items()}
        self.lock = threading.Lock()
        self.received: list[ReceivedMessage] = []
        self.attempts: list[Attempt] = []
        self.auth_failures = 0
        self._controller: Any = None

    # -- lifecycle -------------------------------------------------------------------------------

    def _authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str,
                       auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if isinstance(auth_data, LoginPassword) and self.users is not None:
            login = auth_data.login.decode()
            if self.users.get(login) == auth_data.password.decode():
                return AuthResult(success=True, auth_data=auth_data)
        self.auth_failures += 1
        return AuthResult(success=False, handled=False)

    def start(self) -> SmtpTestServer:
        from aiosmtpd.controller import Controller

        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port,
                                  "server_hostname": "etrans-test-smtp", "ready_timeout": 10}
        if self.users is not None:
            kwargs.update(authenticator=self._authenticator, auth_required=True,
                          auth_require_tls=False)
        if self.tls == "starttls":
            assert self.certificates is not None
            kwargs["tls_context"] = self.certificates.server_context()
        elif self.tls == "implicit":
            assert self.certificates is not None
            kwargs["ssl_context"] = self.certificates.server_context()
        self._controller = Controller(_Handler(self), **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        """Take the server down: open sessions are dropped and the port is closed."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    # -- what was received -------------------------------------------------------------------------

    def message_ids(self) -> list[str]:
        return [m.message_id for m in self.received]

    def wait_received(self, count: int, timeout: float = 30.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages were accepted (for non-Trio callers)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"SMTP server received {len(self.received)} of {count}")
            time.sleep(0.02)
        return list(self.received)

    async def wait_received_async(self, count: int, seconds: float = 30.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages were accepted (Trio).  The server runs in
        another thread, hence polling rather than an event."""
        import trio

        with trio.fail_after(seconds):
            while len(self.received) < count:  # noqa: ASYNC110
                await trio.sleep(0.02)
        return list(self.received)

    def env(self) -> dict[str, str]:
        """SMTP_* variables pointing etrans at this server."""
        variables = {"SMTP_HOST": self.host, "SMTP_PORT": str(self.port),
                     "SMTP_SECURE": "true" if self.tls == "implicit" else "false"}
        if self.tls == "none":  # a loopback relay offering AUTH in clear: the explicit opt-in
            variables["SMTP_ALLOW_PLAINTEXT_AUTH"] = "true"
        if self.certificates is not None:
            variables["SMTP_CA_FILE"] = self.certificates.ca_file
        return variables

    def __enter__(self) -> SmtpTestServer:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def smtp_port_open(server: SmtpTestServer) -> bool:
    return port_open(server.host, server.port)


def pytest_configure(config: pytest.Config) -> None:
    # The test server offers AUTH without TLS on purpose (the plain-connection case).
    config.addinivalue_line(
        "filterwarnings", "ignore:Requiring AUTH while not requiring TLS:UserWarning")


@pytest.fixture(scope="session")
def smtp_certificates() -> Iterator[TestCertificates]:
    certificates = TestCertificates()
    try:
        yield certificates
    finally:
        certificates.cleanup()


@pytest.fixture
def smtp_server_factory(
    smtp_certificates: TestCertificates,
) -> Iterator[Callable[..., SmtpTestServer]]:
    servers: list[SmtpTestServer] = []

    def make(**options: Any) -> SmtpTestServer:
        options.setdefault("certificates", smtp_certificates)
        server = SmtpTestServer(**options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: Callable[..., SmtpTestServer]) -> SmtpTestServer:
    return smtp_server_factory()
