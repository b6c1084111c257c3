"""SMTP client: Trio-native sessions (:mod:`etrans.adapters._net.smtp_session`), one reusable
connection per worker.

:class:`SmtpPool` hands out at most ``size`` connections (one per sendmail worker task).  A
connection stays open across messages and is reused by the next message with the same
credentials; one with other credentials, or idle longer than ``idle_seconds``, is closed and a
new one opened (SMTP has no way to re-authenticate a session).  A connection that failed is
never reused.  A kept connection the server closed meanwhile (without a word, or with the 421
servers send when they close an idle session) gets one fresh connection at once, not counted
as a retry.

Security (``SMTP_SECURE``): ``False`` = plain connection upgraded with STARTTLS whenever the
server offers it (and used as is when it does not); ``True`` = implicit TLS from the first byte.
AUTH (PLAIN, else LOGIN, else CRAM-MD5) runs with the user's credentials when the server offers
AUTH, over TLS only: on a plain session AUTH is not sent and the message fails with a transient
454 4.7.0 (retried later) unless ``allow_plaintext_auth`` (``SMTP_ALLOW_PLAINTEXT_AUTH``, meant
for a relay on the loopback interface).  PIPELINING is used when the server offers it.

Timeouts: connecting and setting a session up must finish within ``timeout_seconds``; a
transaction within ``timeout_seconds`` plus one second per 64 KiB of content (large attachments
on a slow link); neither later than the caller's ``deadline`` (the email's own cap).  Once the
content is written, the reply to it is waited for up to the caller's ``deadline`` (at most
:data:`CONTENT_REPLY_SECONDS` beyond the transaction's limit): content filters may take long,
RFC 5321 4.5.3.2.6 gives that reply 10 minutes, and giving up on it may duplicate the email
(RFC 1047).  Set-up runs
in a cancel scope; transactions (the hot path) do not: the pool's watchdog, a Trio system task
started on first use, checks the deadlines of the transactions in progress every
``min(1 s, timeout_seconds / 4)`` and closes the socket of one that is late, which makes it fail
as a timeout (451 4.4.2).  A cancel scope per message cost more than the rest of the pool.

Every outcome is reported as data (:class:`SendResult`) or as :class:`SmtpFailure`, which says
whether the failure is transient (connection errors, timeouts, 4xx) or permanent (5xx).  A
failure to set a session up without any reply from the server (connection refused, reset or
timed out; the server closing before its greeting), or with a 421 (a server greeting with
"421 too many connections", or closing during EHLO, STARTTLS or AUTH), is
:class:`SmtpUnavailable`: the server is down or overloaded, and the email waits for it (the use
case hands it back to the pipeline) instead of using up its retries.  TLS failures other than a
dropped connection (an untrusted certificate, no common protocol) are configuration problems and
stay ordinary transient failures.
"""

from __future__ import annotations

import math
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from etrans.adapters._net.smtp_session import SmtpProtocolError, SmtpSession
from etrans.app.sendmail import SendResult, SmtpFailure, SmtpUnavailable
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.adapters.crypto.credentials import SmtpCredentials

log = get_logger(__name__)

# RFC 5321 4.5.3.2.6: the reply to the content ("DATA Termination") is waited for 10 minutes.
CONTENT_REPLY_SECONDS = 600.0


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
    # Send AUTH on a session without TLS (a loopback relay only): SMTP_ALLOW_PLAINTEXT_AUTH.
    allow_plaintext_auth: bool = False

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
    # Anything else (2xx/3xx where they make no sense) counts as transient.
    return SmtpFailure(reply_text(code, message), transient=not 500 <= code < 600, code=code)


def _cert_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_problem(exc: BaseException) -> bool:
    """An SSL error other than the peer going away somewhere in the chain of ``exc``."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError) and not isinstance(
                seen, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def classify(exc: BaseException, where: str, *, setting_up: bool = False) -> SmtpFailure:
    """Map a protocol/stream/socket/ssl exception to transient or permanent.

    ``setting_up``: raised before the session was ready (connect, greeting, EHLO, STARTTLS,
    AUTH); a failure there without a reply, or with a 421 (RFC 5321: "service not available,
    closing transmission channel"), is :class:`SmtpUnavailable`."""
    if isinstance(exc, SmtpProtocolError):
        if setting_up and exc.code == 421:
            return SmtpUnavailable(reply_text(exc.code, exc.text))
        return _failure_from_code(exc.code, exc.text)
    failure = _transport_failure(exc, where)
    if setting_up and isinstance(exc, _UNREACHABLE) and not _tls_problem(exc):
        return SmtpUnavailable(failure.reply)
    return failure


# What a server that is down, restarting or unreachable makes the set-up raise.
_UNREACHABLE = (OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError,
                trio.TooSlowError, TimeoutError)


def _transport_failure(exc: BaseException, where: str) -> SmtpFailure:
    if isinstance(exc, trio.TooSlowError | TimeoutError | socket.timeout):
        return SmtpFailure(f"451 4.4.2 etrans: timeout talking to {where}", transient=True)
    cert = _cert_error(exc)
    if cert is not None:
        return SmtpFailure(f"454 4.7.0 etrans: TLS certificate of {where} not trusted: "
                           f"{cert.verify_message}", transient=True)
    if isinstance(exc, EOFError):
        return SmtpFailure(f"451 4.4.1 etrans: {where} closed the connection", transient=True)
    detail = str(exc) or type(exc).__name__
    return SmtpFailure(f"451 4.4.1 etrans: connection to {where} failed: {detail}",
                       transient=True)


# What a broken session or an unreachable server raises (classified, never propagated raw).
_SESSION_ERRORS = (SmtpProtocolError, trio.TooSlowError, trio.BrokenResourceError,
                   trio.ClosedResourceError, OSError, EOFError, ssl.SSLError, ValueError)


class SmtpConnection:
    """One pooled SMTP session and what the pool knows about it."""

    def __init__(self, credentials: SmtpCredentials) -> None:
        self.credentials = credentials
        self.session: SmtpSession | None = None
        self.last_used = time.monotonic()
        self.transactions = 0
        self.deadline = math.inf  # of the transaction in progress (trio clock)
        self.patience = math.inf  # of its reply to the content, once the content is written
        self.timed_out = False  # the watchdog aborted it

    @property
    def tls(self) -> bool:
        return self.session is not None and self.session.tls

    async def close(self) -> None:
        """QUIT politely; never raises."""
        session, self.session = self.session, None
        if session is not None:
            await session.quit()

    async def discard(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await trio.aclose_forcefully(session.stream)


class SmtpPool:
    """At most ``size`` open connections, reused per credentials."""

    def __init__(self, config: SmtpConfig, *, size: int) -> None:
        self.config = config
        self.size = size
        self._context = config.ssl_context()
        self._local_hostname = config.local_hostname
        # Idle connections, least recently used first (appended when released).
        self._idle: list[SmtpConnection] = []
        self._busy = 0
        self._opened = 0
        self._reused = 0
        self._timeouts = 0
        # Connections in a transaction, watched for their deadline by _watch.
        self._watched: set[SmtpConnection] = set()
        self._tick = max(0.01, min(1.0, config.timeout_seconds / 4))
        self._watchdog: trio.CancelScope | None = None

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def statistics(self) -> dict[str, int]:
        return {"idle": len(self._idle), "opened": self._opened, "reused": self._reused,
                "busy": self._busy, "timeouts": self._timeouts}

    def _checkout(self, credentials: SmtpCredentials) -> tuple[SmtpConnection | None,
                                                                   list[SmtpConnection]]:
        """An idle connection for these credentials (or None), and idle ones to close."""
        idle = self._idle
        stale: list[SmtpConnection] = []
        # Least recently used first: the stale ones are a prefix.
        oldest_allowed = time.monotonic() - self.config.idle_seconds
        while idle and idle[0].last_used < oldest_allowed:
            stale.append(idle.pop(0))
        for index in range(len(idle) - 1, -1, -1):
            known = idle[index].credentials
            if known is credentials or known == credentials:
                return idle.pop(index), stale
        # No match: the caller opens a new one.  Keep the total at most `size` by closing the
        # least recently used idle connection of other credentials when we are at the limit.
        if len(idle) >= self.size:
            stale.append(idle.pop(0))
        return None, stale

    async def send(self, credentials: SmtpCredentials, sender: str, recipients: Sequence[str],
                   data: bytes, *, deadline: float | None = None) -> SendResult:
        """Send one message, finished before ``deadline`` (trio clock) if given; raises
        :class:`SmtpFailure`."""
        connection, to_close = self._checkout(credentials)
        for old in to_close:
            await old.close()
        if self._watchdog is None:
            self._watchdog = trio.CancelScope()
            trio.lowlevel.spawn_system_task(self._watch, self._watchdog,
                                            name="etrans.smtp.pool-watchdog")
        self._busy += 1
        try:
            if connection is not None:
                self._reused += 1
                try:
                    return await self._transaction(connection, sender, recipients, data,
                                                   deadline, reused=True)
                except SmtpFailure as failure:
                    # A reused session may have been dropped by the server while idle: one
                    # fresh attempt now, without counting as a retry, when the server said
                    # nothing about the mail, or 421 (servers close idle sessions with one,
                    # e.g. Postfix's "421 4.4.2 ... timeout exceeded", read as MAIL's reply).
                    if not (failure.transient and failure.code in (None, 421)):
                        raise
                    log.debug("smtp reused connection failed, reconnecting", reply=failure.reply)
            connection = SmtpConnection(credentials)
            self._opened += 1
            return await self._transaction(connection, sender, recipients, data, deadline,
                                           reused=False)
        finally:
            self._busy -= 1

    async def _watch(self, scope: trio.CancelScope) -> None:
        """Abort the transactions that overran their deadline (see the module docstring)."""
        try:
            with scope:
                while True:
                    await trio.sleep(self._tick)
                    now = trio.current_time()
                    late = [c for c in self._watched if c.deadline <= now]
                    for connection in late:
                        session = connection.session
                        if (session is not None and session.content_sent
                                and connection.patience > now):
                            continue  # the content is sent: its reply may take long
                        self._watched.discard(connection)
                        connection.timed_out = True
                        self._timeouts += 1
                        if connection.session is not None:
                            connection.session.abort()
        except Exception as exc:  # a system task must not raise; the next send restarts it
            log.error("smtp pool watchdog failed", error=repr(exc))
        finally:
            if self._watchdog is scope:
                self._watchdog = None

    async def _open(self, connection: SmtpConnection, deadline: float | None) -> SmtpSession:
        cfg = self.config
        if self._local_hostname is None:
            # What smtplib says in EHLO too; getfqdn may do a DNS lookup, hence the thread.
            self._local_hostname = await trio.to_thread.run_sync(socket.getfqdn)
        limit = trio.current_time() + cfg.timeout_seconds
        if deadline is not None and deadline < limit:
            limit = deadline
        with trio.fail_at(limit):
            session = await SmtpSession.connect(
                cfg.host, cfg.port, implicit_tls=cfg.implicit_tls, context=self._context,
                local_hostname=self._local_hostname, credentials=connection.credentials,
                allow_plaintext_auth=cfg.allow_plaintext_auth)
        connection.session = session
        return session

    async def _transaction(self, connection: SmtpConnection, sender: str,
                           recipients: Sequence[str], data: bytes, deadline: float | None, *,
                           reused: bool) -> SendResult:
        keep = False
        try:
            session = connection.session or await self._open(connection, deadline)
            limit = trio.current_time() + self.config.timeout_seconds + len(data) / 65536
            if deadline is not None and deadline < limit:
                limit = deadline
            connection.deadline = limit
            connection.patience = max(limit, min(
                limit + CONTENT_REPLY_SECONDS, math.inf if deadline is None else deadline))
            self._watched.add(connection)
            try:
                refused = await session.send_mail(sender, recipients, data)
            finally:
                self._watched.discard(connection)
            # Aborted by the watchdog during the RSET after a refusal: the refusal stands, the
            # session (broken) is not kept.
            keep = not session.broken
        except _SESSION_ERRORS as exc:
            # The watchdog closed the socket: a timeout, unless the server had replied.
            error = (trio.TooSlowError() if connection.timed_out
                     and not isinstance(exc, SmtpProtocolError) else exc)
            # No session yet: it failed while being set up.
            failure = classify(error, self.where, setting_up=connection.session is None)
            keep = (isinstance(exc, SmtpProtocolError) and connection.session is not None
                    and not connection.session.broken and exc.code != 421)
            raise failure from exc
        finally:
            # A cancelled or failed session is in an unknown state: never reused.
            connection.transactions += 1
            connection.last_used = time.monotonic()
            if keep:
                self._idle.append(connection)
            else:
                with trio.CancelScope(shield=True):
                    await connection.discard()
        tls = connection.session is not None and connection.session.tls
        final = connection.session.last_data_reply if connection.session is not None else None
        response = reply_text(final.code, final.text) if final is not None else ""
        if not refused:
            return SendResult(list(recipients), {}, tls, reused, response)
        return SendResult(
            accepted=[r for r in recipients if r not in refused],
            refused={r: (reply.code, reply_text(reply.code, reply.text))
                     for r, reply in refused.items()},
            tls=tls, reused_connection=reused, response=response)

    async def aclose(self) -> None:
        """QUIT every idle connection; stop the watchdog."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        idle, self._idle = self._idle, []
        with trio.move_on_after(5):
            for connection in idle:
                await connection.close()
        for connection in idle:
            await connection.discard()
