"""SMTP client: smtplib in worker threads, one reusable connection per worker.

:class:`SmtpPool` hands out at most ``size`` connections (one per sendmail worker task).  A
connection stays open across messages and is reused by the next message with the same
credentials; one with other credentials, or idle longer than ``idle_seconds``, is closed and a
new one opened (SMTP has no way to re-authenticate a session).  A connection that failed is
never reused.

Security (``SMTP_SECURE``): ``False`` = plain connection upgraded with STARTTLS whenever the
server offers it (and used as is when it does not); ``True`` = implicit TLS from the first byte.
AUTH (PLAIN/LOGIN/CRAM-MD5, smtplib picks) runs with the user's credentials when the server
offers AUTH.

Every outcome is reported as data (:class:`SendResult`) or as :class:`SmtpFailure`, which says
whether the failure is transient (connection errors, timeouts, 4xx) or permanent (5xx).
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from etrans.app.sendmail import SendResult, SmtpFailure
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.adapters.credentials import SmtpCredentials

log = get_logger(__name__)


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool = False
    timeout_seconds: float = 30.0
    idle_seconds: float = 60.0
    # TLS: None = the system's trust store; verify=False accepts any certificate.
    ca_file: str | None = None
    verify_tls: bool = True
    local_hostname: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def reply_text(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    text = " ".join(text.split())
    return f"{code} {text}".strip()


def _failure_from_code(code: int, message: bytes | str) -> SmtpFailure:
    # 4xx: the server asks us to try again later; 5xx: it will never accept this message.
    # Anything else (-1 from smtplib, 2xx/3xx where they make no sense) counts as transient.
    return SmtpFailure(reply_text(code, message), transient=not 500 <= code < 600, code=code)


def classify(exc: BaseException, where: str) -> SmtpFailure:
    """Map an smtplib/socket/ssl exception to transient or permanent."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return _failure_from_code(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):  # not a ResponseException subclass
        code, message = next(iter(exc.recipients.values()), (451, b"all recipients refused"))
        return _failure_from_code(code, message)
    if isinstance(exc, TimeoutError | socket.timeout):
        return SmtpFailure(f"451 4.4.2 etrans: timeout talking to {where}", transient=True)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return SmtpFailure(f"554 5.5.1 etrans: {where}: {exc}", transient=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SmtpFailure(f"454 4.7.0 etrans: TLS certificate of {where} not trusted: "
                           f"{exc.verify_message}", transient=True)
    detail = str(exc) or type(exc).__name__
    return SmtpFailure(f"451 4.4.1 etrans: connection to {where} failed: {detail}",
                       transient=True)


class SmtpConnection:
    """One SMTP session, used by one thread at a time."""

    def __init__(self, config: SmtpConfig, credentials: SmtpCredentials) -> None:
        self.config = config
        self.credentials = credentials
        self.client: smtplib.SMTP | None = None
        self.tls = False
        self.last_used = time.monotonic()
        self.transactions = 0
        self.broken = False

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def open(self) -> None:
        """Connect, say EHLO, upgrade to TLS as configured, authenticate.  Runs in a thread."""
        cfg = self.config
        if cfg.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                cfg.host, cfg.port, local_hostname=cfg.local_hostname,
                timeout=cfg.timeout_seconds, context=cfg.ssl_context(),
            )
            self.tls = True
        else:
            client = smtplib.SMTP(cfg.host, cfg.port, local_hostname=cfg.local_hostname,
                                  timeout=cfg.timeout_seconds)
        self.client = client
        client.ehlo_or_helo_if_needed()
        if not cfg.implicit_tls and client.has_extn("starttls"):
            client.starttls(context=cfg.ssl_context())
            client.ehlo()
            self.tls = True
        if client.has_extn("auth"):
            client.login(self.credentials.username, self.credentials.password)

    def send(self, sender: str, recipients: Sequence[str],
             data: bytes) -> dict[str, tuple[int, str]]:
        """MAIL/RCPT/DATA; the refused recipients (when some were accepted).  Runs in a thread."""
        assert self.client is not None
        try:
            refused = self.client.sendmail(sender, list(recipients), data)
        except smtplib.SMTPRecipientsRefused as exc:
            # Every RCPT refused: the session itself is fine (smtplib sent RSET) unless the
            # server said 421, after which smtplib has closed it.
            refused = exc.recipients
            if any(code == 421 for code, _ in refused.values()):
                self.broken = True
        self.transactions += 1
        self.last_used = time.monotonic()
        return {rcpt: (code, reply_text(code, msg)) for rcpt, (code, msg) in refused.items()}

    def close(self) -> None:
        """QUIT politely; never raises.  Runs in a thread."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.quit()
        except Exception:
            client.close()

    def abort(self) -> None:
        """Shut the socket down so that a thread blocked on it returns at once."""
        self.broken = True
        client = self.client
        sock = getattr(client, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class SmtpPool:
    """At most ``size`` open connections, reused per credentials; smtplib runs in threads."""

    def __init__(self, config: SmtpConfig, *, size: int) -> None:
        self.config = config
        self.size = size
        self.limiter = trio.CapacityLimiter(size)
        self._idle: list[SmtpConnection] = []
        self._opened = 0
        self._reused = 0

    def statistics(self) -> dict[str, int]:
        return {"idle": len(self._idle), "opened": self._opened, "reused": self._reused,
                "threads_busy": self.limiter.borrowed_tokens}

    def _checkout(self, credentials: SmtpCredentials) -> tuple[SmtpConnection | None,
                                                                   list[SmtpConnection]]:
        """An idle connection for these credentials (or None), and idle ones to close."""
        now = time.monotonic()
        stale = [c for c in self._idle if now - c.last_used > self.config.idle_seconds]
        self._idle = [c for c in self._idle if c not in stale]
        for index in range(len(self._idle) - 1, -1, -1):
            if self._idle[index].credentials == credentials:
                return self._idle.pop(index), stale
        # No match: the caller opens a new one.  Keep the total at most `size` by closing the
        # least recently used idle connection of other credentials when we are at the limit.
        if len(self._idle) >= self.size:
            stale.append(self._idle.pop(0))
        return None, stale

    async def send(self, credentials: SmtpCredentials, sender: str, recipients: Sequence[str],
                   data: bytes) -> SendResult:
        """Send one message; raises :class:`SmtpFailure`."""
        connection, to_close = self._checkout(credentials)
        for old in to_close:
            await trio.to_thread.run_sync(old.close, limiter=self.limiter)
        if connection is not None:
            self._reused += 1
            try:
                return await self._transaction(connection, sender, recipients, data, reused=True)
            except SmtpFailure as failure:
                # A reused session may have been dropped by the server while idle: one fresh
                # attempt now, without counting as a retry, when nothing was said about the mail.
                if not (failure.transient and failure.code is None):
                    raise
                log.debug("smtp reused connection failed, reconnecting", reply=failure.reply)
        connection = SmtpConnection(self.config, credentials)
        self._opened += 1
        return await self._transaction(connection, sender, recipients, data, reused=False,
                                       fresh=True)

    async def _transaction(self, connection: SmtpConnection, sender: str,
                           recipients: Sequence[str], data: bytes, *, reused: bool,
                           fresh: bool = False) -> SendResult:
        def work() -> dict[str, tuple[int, str]]:
            try:
                if fresh:
                    connection.open()
                return connection.send(sender, recipients, data)
            except BaseException:
                connection.broken = True
                raise

        try:
            refused = await trio.to_thread.run_sync(work, limiter=self.limiter,
                                                    abandon_on_cancel=True)
        except trio.Cancelled:
            # The thread may still be blocked on the socket: unblock it; the session is lost.
            connection.abort()
            raise
        except Exception as exc:
            await trio.to_thread.run_sync(self._discard, connection, limiter=self.limiter)
            raise classify(exc, connection.where) from exc
        if connection.broken:
            await trio.to_thread.run_sync(self._discard, connection, limiter=self.limiter)
        else:
            self._idle.append(connection)
        accepted = [r for r in recipients if r not in refused]
        return SendResult(accepted=accepted, refused=refused, tls=connection.tls,
                          reused_connection=reused)

    @staticmethod
    def _discard(connection: SmtpConnection) -> None:
        client, connection.client = connection.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def aclose(self) -> None:
        """QUIT every idle connection."""
        idle, self._idle = self._idle, []
        with trio.move_on_after(5):
            for connection in idle:
                await trio.to_thread.run_sync(connection.close, limiter=self.limiter,
                                              abandon_on_cancel=True)
