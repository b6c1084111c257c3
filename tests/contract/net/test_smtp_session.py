"""Conformance of the Trio-native SMTP session (etrans.adapters._net.smtp_session) against real
servers: aiosmtpd (with a CRAM-MD5 mechanism of our own, per-recipient replies, STARTTLS and
implicit TLS) and Postfix's smtp-sink (a server without ESMTP: the HELO fallback; soft-refused
recipients).  Each test drives :class:`SmtpSession` itself: connect, EHLO/HELO, STARTTLS, AUTH
PLAIN/LOGIN/CRAM-MD5, transactions (dot-stuffing, multi-line replies, 4xx/5xx per recipient).
The pool above it (retries, timeouts, PIPELINING on the wire) is ``test_smtp_client.py``.
"""

from __future__ import annotations

import hmac
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import trio

from etrans.adapters._net.smtp_session import SmtpProtocolError, SmtpSession
from etrans.adapters.crypto.credentials import SmtpCredentials
from tests.contract.net.test_smtp_client import _smtp_sink
from tests.harness.servers import free_port, port_open

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

USER, PASSWORD = "user@example.test", "pässword-1"
CREDENTIALS = SmtpCredentials(USER, PASSWORD)
MESSAGE = (b"Subject: conformance\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n")


@dataclass
class _Handler:
    """aiosmtpd hooks: per-recipient replies, received messages, and CRAM-MD5 (RFC 2195)."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    received: list[tuple[str, list[str], bytes, bool, str | None]] = field(default_factory=list)
    mechanisms: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        tls = server.transport.get_extra_info("ssl_object") is not None
        login = getattr(session.auth_data, "login", None)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content, tls,
                              login.decode() if isinstance(login, bytes) else login))
        return "250 2.0.0 queued"

    async def auth_CRAM__MD5(self, server: Any, args: list[str]) -> Any:
        from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword

        self.mechanisms.append("CRAM-MD5")
        challenge = f"<{uuid.uuid4().hex}@etrans.test>".encode()
        response = await server.challenge_auth(challenge)
        if response is MISSING:
            return AuthResult(success=False, handled=True)
        user, _, digest = response.partition(b" ")
        expected = hmac.new(PASSWORD.encode(), challenge, "md5").hexdigest().encode()
        ok = user == USER.encode() and hmac.compare_digest(digest, expected)
        return AuthResult(success=ok, handled=False, auth_data=LoginPassword(user, b""))


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult

    server.event_handler.mechanisms.append(mechanism)
    ok = (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@pytest.fixture
def aiosmtpd_server(smtp_certificates: Any) -> Iterator[Callable[..., tuple[_Handler, int]]]:
    """``start(tls="none"|"starttls"|"implicit", mechanisms=None|[...])``: (handler, port)."""
    from aiosmtpd.controller import Controller

    controllers: list[Any] = []

    def start(*, tls: str = "none", mechanisms: list[str] | None = None) -> tuple[_Handler, int]:
        handler, port = _Handler(), free_port()
        options: dict[str, Any] = {"hostname": "127.0.0.1", "port": port,
                                   "server_hostname": "aiosmtpd.test", "ready_timeout": 10}
        if mechanisms is not None:
            offered = {"PLAIN", "LOGIN", "CRAM-MD5"}
            options.update(authenticator=_authenticator, auth_required=True,
                           auth_require_tls=False,
                           auth_exclude_mechanism=sorted(offered - set(mechanisms)))
        if tls == "starttls":
            options["tls_context"] = smtp_certificates.server_context()
        elif tls == "implicit":
            options["ssl_context"] = smtp_certificates.server_context()
        controller = Controller(handler, **options)
        controller.start()
        controllers.append(controller)
        return handler, port

    yield start
    for controller in controllers:
        controller.stop()


def _client_context(certificates: Any) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificates.ca_file)


async def _connect(port: int, certificates: Any, *, implicit_tls: bool = False,
                   credentials: SmtpCredentials | None = None,
                   allow_plaintext_auth: bool = False) -> SmtpSession:
    with trio.fail_after(10):
        return await SmtpSession.connect(
            "127.0.0.1", port, implicit_tls=implicit_tls, context=_client_context(certificates),
            local_hostname="client.etrans.test", credentials=credentials,
            allow_plaintext_auth=allow_plaintext_auth)


async def test_ehlo_reads_the_multi_line_extensions_and_dot_stuffing_round_trips(
        aiosmtpd_server: Any, smtp_certificates: Any) -> None:
    handler, port = aiosmtpd_server()
    session = await _connect(port, smtp_certificates)
    assert session.esmtp
    assert session.tls is False
    assert {"size", "8bitmime", "smtputf8"} <= set(session.extensions)
    refused = await session.send_mail("from@example.test", ["to@example.test"], MESSAGE)
    assert refused == {}
    [(sender, recipients, data, tls, _)] = handler.received
    assert (sender, recipients, tls) == ("from@example.test", ["to@example.test"], False)
    assert data == MESSAGE  # the server undid the dot-stuffing: the lines as sent
    await trio.aclose_forcefully(session.stream)


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_tls_then_auth_with_each_mechanism(aiosmtpd_server: Any, smtp_certificates: Any,
                                                 tls: str, mechanism: str) -> None:
    handler, port = aiosmtpd_server(tls=tls, mechanisms=[mechanism])
    session = await _connect(port, smtp_certificates, implicit_tls=tls == "implicit",
                             credentials=CREDENTIALS)
    assert session.tls
    assert session.extensions["auth"].split() == [mechanism]
    assert "starttls" not in session.extensions  # the EHLO said again over TLS
    assert await session.send_mail("from@example.test", ["to@example.test"], MESSAGE) == {}
    assert handler.mechanisms == [mechanism]
    [(_, _, _, over_tls, login)] = handler.received
    assert over_tls
    assert login == USER
    await trio.aclose_forcefully(session.stream)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_a_wrong_password_is_refused_with_535(aiosmtpd_server: Any, smtp_certificates: Any,
                                                    mechanism: str) -> None:
    _, port = aiosmtpd_server(tls="starttls", mechanisms=[mechanism])
    with pytest.raises(SmtpProtocolError) as refused:
        await _connect(port, smtp_certificates,
                       credentials=SmtpCredentials(USER, "wrong-password"))
    assert (refused.value.code, refused.value.command) == (535, "AUTH")


async def test_no_auth_in_clear_unless_allowed(aiosmtpd_server: Any,
                                               smtp_certificates: Any) -> None:
    handler, port = aiosmtpd_server(mechanisms=["PLAIN"])
    with pytest.raises(SmtpProtocolError) as refused:
        await _connect(port, smtp_certificates, credentials=CREDENTIALS)
    assert refused.value.code == 454
    assert handler.mechanisms == []  # nothing was sent
    session = await _connect(port, smtp_certificates, credentials=CREDENTIALS,
                             allow_plaintext_auth=True)
    assert handler.mechanisms == ["PLAIN"]
    await trio.aclose_forcefully(session.stream)


async def test_replies_per_recipient(aiosmtpd_server: Any, smtp_certificates: Any) -> None:
    handler, port = aiosmtpd_server()
    handler.rcpt_replies = {
        "soft@example.test": "450 4.2.1 mailbox busy",
        "hard@example.test": "550-5.1.1 no such user\r\n550 5.1.1 (a multi-line reply)",
    }
    session = await _connect(port, smtp_certificates)
    recipients = ["soft@example.test", "ok@example.test", "hard@example.test"]
    refused = await session.send_mail("from@example.test", recipients, MESSAGE)
    assert {r: (reply.code, reply.text) for r, reply in refused.items()} == {
        "soft@example.test": (450, "4.2.1 mailbox busy"),
        "hard@example.test": (550, "5.1.1 no such user\n5.1.1 (a multi-line reply)"),
    }
    assert [r for _, r, _, _, _ in handler.received] == [["ok@example.test"]]
    # Every recipient refused: nothing sent, the session is reset and usable.
    refused = await session.send_mail("from@example.test", ["hard@example.test"], MESSAGE)
    assert list(refused) == ["hard@example.test"]
    assert len(handler.received) == 1
    assert not session.broken
    assert await session.send_mail("from@example.test", ["ok@example.test"], b"again\r\n") == {}
    assert len(handler.received) == 2
    await trio.aclose_forcefully(session.stream)


# -- smtp-sink --------------------------------------------------------------------------------

@pytest.fixture
def smtp_sink() -> Iterator[Callable[..., int]]:
    """``start(*options)``: an smtp-sink with those options; its port."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> int:
        port = free_port()
        process = subprocess.Popen([_smtp_sink(), "-u", "nobody", "-a", *options,
                                    f"127.0.0.1:{port}", "16"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        processes.append(process)
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "smtp-sink did not start"
            time.sleep(0.05)
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(5)


async def test_helo_when_the_server_refuses_ehlo(smtp_sink: Callable[..., int],
                                                 smtp_certificates: Any) -> None:
    port = smtp_sink("-f", "EHLO")  # EHLO gets a 5xx: an SMTP (not ESMTP) server
    session = await _connect(port, smtp_certificates)
    assert not session.esmtp
    assert session.extensions == {}
    assert await session.send_mail("from@example.test", ["to@example.test"], MESSAGE) == {}
    await trio.aclose_forcefully(session.stream)


async def test_soft_refused_recipients_send_nothing(smtp_sink: Callable[..., int],
                                                    smtp_certificates: Any) -> None:
    port = smtp_sink("-r", "RCPT")  # every RCPT: 450
    session = await _connect(port, smtp_certificates)
    refused = await session.send_mail("from@example.test", ["a@example.test", "b@example.test"],
                                      MESSAGE)
    assert {r: reply.code // 100 for r, reply in refused.items()} == {
        "a@example.test": 4, "b@example.test": 4}
    assert not session.broken
    await trio.aclose_forcefully(session.stream)


async def test_a_refused_mail_from_raises_and_the_session_goes_on(
        smtp_sink: Callable[..., int], smtp_certificates: Any) -> None:
    port = smtp_sink("-f", "MAIL")
    session = await _connect(port, smtp_certificates)
    with pytest.raises(SmtpProtocolError) as refused:
        await session.send_mail("from@example.test", ["to@example.test"], MESSAGE)
    assert (refused.value.code // 100, refused.value.command) == (5, "MAIL")
    assert not session.broken
    await trio.aclose_forcefully(session.stream)
