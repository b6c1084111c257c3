"""The Trio-native SMTP client (etrans.adapters._net.smtp_session / smtp.SmtpPool) on the wire.

- PIPELINING: against a scripted SMTP server on a real socket that records which commands
  arrived before it answered: with PIPELINING advertised, MAIL/RCPT/DATA arrive in one go (the
  server answers nothing until it has DATA, so a client that waited would time out); without
  it, the client waits for each reply.
- Against Postfix's smtp-sink with and without PIPELINING (``-p``): the messages arrive intact
  (dot-stuffing included), over one reused connection.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from etrans.adapters._net.smtp_session import dot_stuffed
from etrans.adapters.crypto.credentials import SmtpCredentials
from etrans.adapters.smtp.pool import SmtpConfig, SmtpPool
from etrans.app.sendmail import SmtpFailure
from tests.harness.servers import free_port, port_open

CREDENTIALS = SmtpCredentials("user", "password")


@dataclass
class ScriptedServer:
    """A minimal SMTP server: records, per received chunk, the command lines it held."""

    pipelining: bool
    # Answer nothing after the content of message number N (0-based): a server that hangs.
    stall_after: int | None = None
    # Answer nothing once MAIL arrives: a server that hangs before the content.
    stall_at_mail: bool = False
    chunks: list[list[bytes]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    port: int = 0

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._session, listeners)

    async def _session(self, stream: trio.SocketStream) -> None:
        buffer = b""

        async def lines_until(done: bytes) -> list[bytes]:
            """Read until a line starting with ``done`` arrived; the lines, in order."""
            nonlocal buffer
            got: list[bytes] = []
            while True:
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    got.append(line)
                    if line.upper().startswith(done):
                        return got
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return got
                self.chunks.append(chunk.split(b"\r\n")[:-1] or [chunk])
                buffer += chunk

        async with stream:
            await stream.send_all(b"220 scripted ESMTP\r\n")
            await lines_until(b"EHLO")
            extensions = b"250-scripted\r\n" + (b"250-PIPELINING\r\n" if self.pipelining
                                                else b"") + b"250 8BITMIME\r\n"
            await stream.send_all(extensions)
            while True:
                first = await lines_until(b"MAIL")
                if not first or first[-1].upper().startswith(b"QUIT"):
                    return
                if self.stall_at_mail:
                    await trio.sleep_forever()
                if self.pipelining:
                    # Say nothing until DATA: only a pipelining client gets here.
                    lines = await lines_until(b"DATA")
                    rcpts = [x for x in lines if x.upper().startswith(b"RCPT")]
                    await stream.send_all(b"250 ok\r\n" + b"250 ok\r\n" * len(rcpts)
                                          + b"354 go ahead\r\n")
                else:
                    await stream.send_all(b"250 ok\r\n")
                    while True:
                        [line] = await lines_until(b"")
                        if line.upper().startswith(b"DATA"):
                            await stream.send_all(b"354 go ahead\r\n")
                            break
                        await stream.send_all(b"250 ok\r\n")
                body: list[bytes] = []
                while True:
                    [line] = await lines_until(b"")
                    if line == b".":
                        break
                    body.append(line)
                self.messages.append(b"\r\n".join(body))
                if self.stall_after is not None and len(self.messages) > self.stall_after:
                    await trio.sleep_forever()
                await stream.send_all(b"250 queued\r\n")


MESSAGE = b"Subject: hi\r\n\r\nline one\r\n.starts with a dot\r\n..two dots\r\nlast\r\n"


@pytest.mark.parametrize("pipelining", [True, False])
async def test_pipelining_is_used_exactly_when_offered(pipelining: bool) -> None:
    server = ScriptedServer(pipelining=pipelining)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        pool = SmtpPool(SmtpConfig("127.0.0.1", server.port, timeout_seconds=5,
                                   local_hostname="client.test"), size=1)
        recipients = ["a@example.com", "b@example.com"]
        for _ in range(2):
            result = await pool.send(CREDENTIALS, "from@example.com", recipients, MESSAGE)
            assert result.accepted == recipients
            assert result.refused == {}
        assert pool.statistics()["opened"] == 1  # the session was reused
        await pool.aclose()
        nursery.cancel_scope.cancel()

    envelope_chunks = [c for c in server.chunks
                       if any(x.upper().startswith((b"MAIL", b"RCPT", b"DATA")) for x in c)]
    if pipelining:
        # One chunk per message holding MAIL, both RCPTs and DATA.
        assert len(envelope_chunks) == 2
        for chunk in envelope_chunks:
            assert [x.split(b":")[0].split()[0].upper() for x in chunk] == [
                b"MAIL", b"RCPT", b"RCPT", b"DATA"]
    else:
        # Each command in its own chunk: the client waited for every reply.
        assert len(envelope_chunks) == 2 * 4
        assert all(len(chunk) == 1 for chunk in envelope_chunks)
    # Dot-stuffed on the wire, i.e. leading dots doubled.
    assert server.messages == [dot_stuffed(MESSAGE).rstrip(b"\r\n")] * 2


@pytest.mark.parametrize("cap", ["timeout_seconds", "deadline", "content_reply"])
async def test_a_server_that_stops_answering_times_out(cap: str) -> None:
    """The pool's watchdog (no cancel scope per transaction) aborts a late transaction: a
    transient timeout; the session is dropped and the next message opens a new one.  The reply
    to the content is waited for beyond timeout_seconds, up to the deadline (content_reply)."""
    server = ScriptedServer(pipelining=True, stall_after=0 if cap != "timeout_seconds" else None,
                            stall_at_mail=cap == "timeout_seconds")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        timeout = 30.0 if cap == "deadline" else 0.4
        pool = SmtpPool(SmtpConfig("127.0.0.1", server.port, timeout_seconds=timeout,
                                   local_hostname="client.test"), size=1)
        recipients = ["a@example.com"]
        started = trio.current_time()
        expected = 1.5 if cap == "content_reply" else 0.4
        deadline = None if cap == "timeout_seconds" else started + expected
        with pytest.raises(SmtpFailure) as caught:
            await pool.send(CREDENTIALS, "from@example.com", recipients, MESSAGE,
                            deadline=deadline)
        waited = trio.current_time() - started
        assert caught.value.transient
        assert caught.value.reply.startswith("451 4.4.2 etrans: timeout")
        # Checked every min(1 s, timeout/4): late by at most one tick (plus a loaded machine).
        assert expected <= waited < expected + 1.0 + 2.0
        assert pool.statistics()["timeouts"] == 1
        assert pool.statistics()["idle"] == 0  # the aborted session was not kept
        server.stall_after = None
        server.stall_at_mail = False
        result = await pool.send(CREDENTIALS, "from@example.com", recipients, MESSAGE)
        assert result.accepted == recipients
        assert pool.statistics()["opened"] == 2
        await pool.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(("sender", "recipient"), [
    ("from@example.com>\r\nRCPT TO:<extra@evil.test", "a@example.com"),
    ("from@example.com", "a@example.com>\r\nRCPT TO:<extra@evil.test"),
    ("from@example.com", "a@example.com\nRCPT TO:<extra@evil.test>"),
    ("from@example.com\x00", "a@example.com"),
    ("from@example.com", "a@example.com> NOTIFY=NEVER"),
])
async def test_no_command_is_smuggled_through_an_address(pipelining: bool, sender: str,
                                                         recipient: str) -> None:
    """Defence in depth below the worker's decoder: an address that would end the command
    line (or the path) early is refused before a byte of the transaction is written."""
    server = ScriptedServer(pipelining=pipelining)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        pool = SmtpPool(SmtpConfig("127.0.0.1", server.port, timeout_seconds=5,
                                   local_hostname="client.test"), size=1)
        with pytest.raises(SmtpFailure) as caught:
            await pool.send(CREDENTIALS, sender, [recipient, "b@example.com"], MESSAGE)
        assert not caught.value.transient
        assert caught.value.code == 501
        # The session is intact and goes on with the next message.
        result = await pool.send(CREDENTIALS, "from@example.com", ["b@example.com"], MESSAGE)
        assert result.accepted == ["b@example.com"]
        assert pool.statistics()["opened"] == 1
        nursery.cancel_scope.cancel()
    await pool.aclose()  # the server is gone: no 5 s wait for its QUIT reply
    lines = [line for chunk in server.chunks for line in chunk]
    assert not any(b"evil.test" in line or b"NOTIFY" in line for line in lines)
    assert [line for line in lines if line.upper().startswith((b"MAIL", b"RCPT"))] == [
        b"MAIL FROM:<from@example.com>", b"RCPT TO:<b@example.com>"]
    assert server.messages == [dot_stuffed(MESSAGE).rstrip(b"\r\n")]


def test_dot_stuffing_and_line_ends() -> None:
    assert dot_stuffed(b".a\r\nb\r\n.c") == b"..a\r\nb\r\n..c\r\n"
    assert dot_stuffed(b"x\ny\rz\r\n") == b"x\r\ny\r\nz\r\n"
    assert dot_stuffed(b"plain\r\n") == b"plain\r\n"


# -- against Postfix's smtp-sink -----------------------------------------------------------------

def _smtp_sink() -> str:
    path = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not Path(path).exists():
        pytest.fail("smtp-sink not found: it comes with Postfix "
                    "(DEBIAN_FRONTEND=noninteractive apt-get install -y postfix)")
    return path


@pytest.mark.parametrize("pipelining", [True, False])
async def test_delivery_to_smtp_sink(pipelining: bool) -> None:
    port = free_port()
    # smtp-sink drops its privileges (-u nobody) before writing the dump: a directory of its
    # own, not pytest's tmp_path (whose parents are private to root).
    directory = Path(tempfile.mkdtemp(prefix="etrans-smtp-sink-"))
    directory.chmod(0o777)  # noqa: ASYNC240 - test set-up
    dump = directory / "dump"
    # -a: no AUTH offered (smtp-sink answers AUTH with 250 where RFC 4954 says 235).
    command = [_smtp_sink(), "-u", "nobody", "-a", "-D", str(dump)]
    if not pipelining:
        command.append("-p")
    command += [f"127.0.0.1:{port}", "64"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL,  # noqa: ASYNC220
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "smtp-sink did not start"
            await trio.sleep(0.05)
        pool = SmtpPool(SmtpConfig("127.0.0.1", port, timeout_seconds=10), size=1)
        for index in range(3):
            data = MESSAGE.replace(b"hi", f"hi {index}".encode())
            result = await pool.send(CREDENTIALS, "from@example.com", ["to@example.com"], data)
            assert result.accepted == ["to@example.com"]
        assert pool.statistics()["opened"] == 1
        await pool.aclose()
        with trio.fail_after(10):
            while not dump.exists() or dump.read_bytes().count(b"last") < 3:  # noqa: ASYNC110
                await trio.sleep(0.05)
        dumped = dump.read_bytes()
        for index in range(3):
            assert f"Subject: hi {index}".encode() in dumped
        # smtp-sink undoes the dot-stuffing: the original lines come back.
        assert dumped.count(b"\n.starts with a dot") == 3
        assert dumped.count(b"\n..two dots") == 3
    finally:
        process.terminate()
        process.wait(5)
        shutil.rmtree(directory, ignore_errors=True)
