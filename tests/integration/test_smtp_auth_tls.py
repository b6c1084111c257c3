"""SMTP credentials never cross the network in clear (issue 13 item 7): against a real SMTP
server on a socket that offers AUTH but no STARTTLS and records every line it receives, the
client sends no AUTH (the message fails with a transient 454, retried later) unless
SMTP_ALLOW_PLAINTEXT_AUTH; over STARTTLS (aiosmtpd with a test CA) AUTH is sent."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from etrans.adapters.crypto.credentials import SmtpCredentials
from etrans.adapters.smtp.pool import SmtpConfig, SmtpPool
from etrans.app.sendmail import SmtpFailure
from etrans.settings import for_command
from tests.harness.smtp import SmtpTestServer

CREDENTIALS = SmtpCredentials("relay-user", "relay-secret-pw")
MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


@dataclass
class PlainAuthServer:
    """Offers AUTH PLAIN LOGIN without STARTTLS; accepts anything; records what arrives."""

    received: bytearray = field(default_factory=bytearray)
    messages: int = 0
    port: int = 0

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._session, listeners)

    async def _session(self, stream: trio.SocketStream) -> None:
        buffer = b""
        in_data = False
        async with stream:
            await stream.send_all(b"220 plain ESMTP\r\n")
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                self.received += chunk
                buffer += chunk
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    verb = line.split(b" ", 1)[0].upper()
                    if in_data:
                        if line == b".":
                            in_data = False
                            self.messages += 1
                            await stream.send_all(b"250 queued\r\n")
                    elif verb == b"EHLO":
                        await stream.send_all(b"250-plain\r\n250 AUTH PLAIN LOGIN\r\n")
                    elif verb == b"AUTH":
                        await stream.send_all(b"235 ok\r\n")
                    elif verb == b"DATA":
                        in_data = True
                        await stream.send_all(b"354 go ahead\r\n")
                    elif verb == b"QUIT":
                        await stream.send_all(b"221 bye\r\n")
                        return
                    else:
                        await stream.send_all(b"250 ok\r\n")


def _secret_forms() -> list[bytes]:
    user, password = CREDENTIALS.username.encode(), CREDENTIALS.password.encode()
    return [password, base64.b64encode(password),
            base64.b64encode(b"\0" + user + b"\0" + password)]


async def test_no_auth_in_clear_without_the_setting() -> None:
    server = PlainAuthServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        pool = SmtpPool(SmtpConfig("127.0.0.1", server.port, timeout_seconds=5), size=1)
        with pytest.raises(SmtpFailure) as failure:
            await pool.send(CREDENTIALS, "from@example.com", ["to@example.com"], MESSAGE)
        await pool.aclose()
        nursery.cancel_scope.cancel()
    assert failure.value.transient  # tried again later, like any 4xx
    assert failure.value.code == 454
    assert "SMTP_ALLOW_PLAINTEXT_AUTH" in failure.value.reply
    assert b"AUTH" not in bytes(server.received)
    for secret in _secret_forms():
        assert secret not in bytes(server.received)
    assert server.messages == 0


async def test_auth_in_clear_when_explicitly_allowed() -> None:
    server = PlainAuthServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        pool = SmtpPool(SmtpConfig("127.0.0.1", server.port, timeout_seconds=5,
                                   allow_plaintext_auth=True), size=1)
        result = await pool.send(CREDENTIALS, "from@example.com", ["to@example.com"], MESSAGE)
        await pool.aclose()
        nursery.cancel_scope.cancel()
    assert result.accepted == ["to@example.com"]
    assert not result.tls
    assert b"AUTH PLAIN " + _secret_forms()[2] in bytes(server.received)


async def test_auth_over_starttls_needs_no_setting(
        smtp_server_factory: Callable[..., SmtpTestServer], smtp_certificates: Any) -> None:
    server = smtp_server_factory(tls="starttls", users={"relay-user": "relay-secret-pw"})
    pool = SmtpPool(SmtpConfig(server.host, server.port, timeout_seconds=10,
                               ca_file=smtp_certificates.ca_file), size=1)
    result = await pool.send(CREDENTIALS, "from@example.com", ["to@example.com"], MESSAGE)
    await pool.aclose()
    assert result.tls
    [received] = await server.wait_received_async(1)
    assert received.login == "relay-user"


def test_the_setting_is_read_and_off_by_default() -> None:
    base = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "KAFKA_TOPIC": "t", "KAFKA_GROUP_ID": "g",
            "REDIS_URI": "redis://127.0.0.1:6379/0", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "25",
            "TOKEN_SECRET": "s" * 32, "TOKEN_IV": "i" * 16}
    smtp = for_command("sendmail", base).smtp
    assert smtp is not None
    assert smtp.allow_plaintext_auth is False
    smtp = for_command("sendmail", {**base, "SMTP_ALLOW_PLAINTEXT_AUTH": "true"}).smtp
    assert smtp is not None
    assert smtp.allow_plaintext_auth is True
