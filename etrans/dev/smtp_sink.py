"""The SMTP server of ``etrans dev``: accepts every message, keeps it as an ``.eml`` file, and
emits the delivery-log events that an SMTP server plus Filebeat would.

A small Trio SMTP server (RFC 5321 subset: EHLO/HELO, AUTH PLAIN/LOGIN accepting any
credentials, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT; PIPELINING works since
commands are answered in order).  For each message it

1. writes the message, as received, to ``<mail_dir>/<YYYY-MM-DD>/<time>-<message id>.eml``;
2. publishes one ``Sender`` event with ``SMTP_Action`` ``delivered`` per envelope recipient to
   the log topic, in the Filebeat format of ``docs/wire-formats.md`` (``Event_ID`` derived from
   the message id and the recipient, so a redelivered message is stored once by fetchlog);
3. only then answers ``250``: an accepted message always has its events.

So GET /emails and GET /logs show a message sent through ``etrans dev`` as Delivered, and the
mail itself can be opened in any mail client from the data directory.

Every address at :data:`BOUNCE_DOMAIN` (``bounce.test``, a name RFC 2606 reserves) is refused at
RCPT with a hard bounce (``550 5.1.1``), as a real server refuses an unknown user: the sender's
own Reject event, the bounce class and the suppression list can be tried with ``etrans dev``
alone.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import email.utils
import json
import re
import socket
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from etrans.observability import get_logger

if TYPE_CHECKING:
    from pathlib import Path

    from etrans.app.ports import EventPublisher

log = get_logger(__name__)

# Event_ID namespace of the dev SMTP server's events (uuid5 of "<message_id>\n<recipient>").
EVENT_NAMESPACE = uuid.UUID("3a4c4b7e-2f0d-5d1e-9a63-6c0e4f1b2d90")
MAX_MESSAGE = 40 * 1024 * 1024
_ADDRESS = re.compile(r"<([^>]*)>")
BOUNCE_DOMAIN = "bounce.test"


class _Closed(Exception):
    pass


class _LineReader:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > MAX_MESSAGE:
                raise _Closed("line too long")
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise _Closed("peer closed")
            self._buffer += chunk


def _bare(message_id: str) -> str:
    return message_id.strip().removeprefix("<").removesuffix(">")


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class SmtpSink:
    """Serve with ``await nursery.start(sink.serve, host, port)`` (started with the bound port)."""

    def __init__(self, mail_dir: Path, events: EventPublisher, log_topic: str, *,
                 hostname: str | None = None) -> None:
        self.mail_dir = mail_dir
        self.events = events
        self.log_topic = log_topic
        self.hostname = hostname or socket.gethostname()
        self.received = 0
        self.port: int | None = None
        self._agent = {"id": str(uuid.uuid5(EVENT_NAMESPACE, self.hostname)),
                       "type": "etrans-dev-smtp", "hostname": self.hostname,
                       "name": f"etrans-dev-smtp@{self.hostname}",
                       "ephemeral_id": str(uuid.uuid4())}

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("dev smtp server listening", host=host, port=self.port,
                 mail_dir=str(self.mail_dir))
        task_status.started(self.port)
        await trio.serve_listeners(self._session, listeners)

    async def _session(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await self._converse(stream)
            except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except Exception:
                log.exception("dev smtp session failed")

    async def _converse(self, stream: trio.SocketStream) -> None:
        reader = _LineReader(stream)

        async def reply(text: str) -> None:
            await stream.send_all(text.encode() + b"\r\n")

        await reply(f"220 {self.hostname} etrans dev SMTP ready")
        sender: str | None = None
        recipients: list[str] = []
        while True:
            line = (await reader.line()).decode("utf-8", "replace").rstrip("\r\n")
            verb, _, argument = line.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                await reply(f"250-{self.hostname}\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                            f"250-SMTPUTF8\r\n250-SIZE {MAX_MESSAGE}\r\n250 AUTH PLAIN LOGIN")
            elif verb == "HELO":
                await reply(f"250 {self.hostname}")
            elif verb == "AUTH":
                await self._auth(argument, reader, reply)
            elif verb == "MAIL":
                match = _ADDRESS.search(argument)
                sender, recipients = (match.group(1) if match else ""), []
                await reply("250 2.1.0 OK")
            elif verb == "RCPT":
                match = _ADDRESS.search(argument)
                if sender is None or not match:
                    await reply("503 5.5.1 MAIL first" if sender is None
                                else "501 5.1.3 bad recipient")
                    continue
                if _domain(match.group(1)) == BOUNCE_DOMAIN:
                    await reply(f"550 5.1.1 <{match.group(1)}>: Recipient address rejected: "
                                f"User unknown (etrans dev: every address at {BOUNCE_DOMAIN} "
                                "bounces)")
                    continue
                recipients.append(match.group(1))
                await reply("250 2.1.5 OK")
            elif verb == "DATA":
                if sender is None or not recipients:
                    await reply("503 5.5.1 no valid recipients")
                    continue
                await reply("354 End data with <CR><LF>.<CR><LF>")
                data = await self._read_data(reader)
                queue_id = uuid.uuid4().hex[:12].upper()
                await self._accept(sender, recipients, data, queue_id)
                await reply(f"250 2.0.0 OK: queued as {queue_id}")
                sender, recipients = None, []
            elif verb == "RSET":
                sender, recipients = None, []
                await reply("250 2.0.0 OK")
            elif verb == "NOOP":
                await reply("250 2.0.0 OK")
            elif verb == "QUIT":
                await reply("221 2.0.0 Bye")
                return
            else:
                await reply("502 5.5.2 command not recognized")

    async def _auth(self, argument: str, reader: _LineReader, reply: Any) -> None:
        # Any credentials are accepted: this server exists to show what etrans sends.
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            if not initial:
                await reply("334 ")
                await reader.line()
        elif mechanism == "LOGIN":
            if not initial:
                await reply("334 " + base64.b64encode(b"Username:").decode())
                await reader.line()
            await reply("334 " + base64.b64encode(b"Password:").decode())
            await reader.line()
        else:
            await reply("504 5.5.4 unrecognized authentication type")
            return
        await reply("235 2.7.0 Authentication successful")

    async def _read_data(self, reader: _LineReader) -> bytes:
        lines: list[bytes] = []
        size = 0
        while True:
            line = await reader.line()
            if line in (b".\r\n", b".\n"):
                return b"".join(lines)
            if line.startswith(b"."):
                line = line[1:]
            size += len(line)
            if size > MAX_MESSAGE:
                raise _Closed("message too large")
            lines.append(line)

    async def _accept(self, sender: str, recipients: list[str], data: bytes,
                      queue_id: str) -> None:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
        message_id = _bare(str(headers.get("Message-ID") or f"{queue_id}@{self.hostname}"))
        from_name = email.utils.parseaddr(str(headers.get("From") or ""))[0]
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        await trio.to_thread.run_sync(self._write_eml, data, message_id, now)
        to_names = {addr.lower(): name for name, addr in email.utils.getaddresses(
            [str(v) for v in (headers.get_all("To") or []) + (headers.get_all("Cc") or [])])}
        for recipient in recipients:
            event = {
                "Event": "Sender",
                "@timestamp": stamp,
                "SMTP_Action": "delivered",
                "from": sender, "from_name": from_name,
                "recipient": recipient, "to_name": to_names.get(recipient.lower(), ""),
                "response": f"250 2.0.0 OK: queued as {queue_id}",
                "from_domain": _domain(sender),
                "Event_ID": str(uuid.uuid5(EVENT_NAMESPACE, f"{message_id}\n{recipient.lower()}")),
                "message_id": message_id,
                "to_domain": _domain(recipient),
                "agent": self._agent,
            }
            await self.events.publish(self.log_topic, json.dumps(event).encode(),
                                      key=message_id.encode())
        self.received += 1
        log.info("dev smtp accepted", message_id=message_id, recipients=len(recipients),
                 queue_id=queue_id)

    def _write_eml(self, data: bytes, message_id: str, now: datetime) -> None:
        folder = self.mail_dir / now.strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._@-]", "_", message_id)[:150]
        path = folder / f"{now.strftime('%H%M%S.%f')}-{safe}.eml"
        path.write_bytes(data.replace(b"\r\n", b"\n"))
