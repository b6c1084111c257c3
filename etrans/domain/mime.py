"""The email the sendmail worker delivers, and its MIME rendering (standard library only).

:class:`OutgoingEmail` is what one Kafka send request means once decoded; :func:`build_mime`
turns it into the bytes handed to the SMTP server:

- text only -> ``text/plain``; html only -> ``text/html``; both -> ``multipart/alternative``
  (text first, so clients prefer the html); attachments wrap that in ``multipart/mixed``;
- ``From``/``To``/``Cc``/``Reply-To`` with UTF-8 display names encoded per RFC 2047, the subject
  too; ``Message-ID`` is the request's message_id; ``Date`` is the build time;
- bcc recipients appear only in the envelope (:meth:`OutgoingEmail.envelope_recipients`), never in
  a header;
- custom headers are added unless they would replace a header this module owns (listed in
  :data:`RESERVED_HEADERS`) or carry line breaks (header injection).
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import re
import secrets
import time
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from functools import lru_cache

# Headers that build_mime writes itself: a custom header with one of these names is dropped.
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From", "To", "Cc", "Bcc", "Reply-To", "Subject", "Message-ID", "Date", "MIME-Version",
        "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Sender",
        "Return-Path",
    )
)

_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ':'
# A bare dot-atom address (RFC 5322 atext, one "@", no dot at either end of a part): the common
# case, parsed without email.utils.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")

# CRLF line ends, 78-column folding, RFC 2047 for non-ASCII headers (no SMTPUTF8 needed).
_POLICY = email.policy.SMTP


@dataclass(frozen=True)
class Mailbox:
    """An address with an optional display name."""

    email: str
    name: str = ""

    @classmethod
    def parse(cls, value: str) -> Mailbox:
        """``"a@b"`` or ``"Name <a@b>"`` -> Mailbox; ``ValueError`` when there is no address."""
        if _PLAIN_ADDRESS.fullmatch(value):
            return cls(email=value)  # what parseaddr gives for it, ~20x cheaper
        name, address = email.utils.parseaddr(value)
        if "@" not in address:
            raise ValueError(f"not an email address: {value!r}")
        return cls(email=address, name=name)

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2].lower()

    def header_address(self) -> Address:
        local, _, domain = self.email.rpartition("@")
        return Address(display_name=self.name, username=local, domain=domain)


@lru_cache(maxsize=8192)
def parse_mailbox(value: str) -> Mailbox:
    """:meth:`Mailbox.parse`, memoised (pure, and its result is immutable): requests repeat
    the same few addresses."""
    return Mailbox.parse(value)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class OutgoingEmail:
    """One send request, decoded.  ``message_id`` is the API's id, used verbatim in logs."""

    message_id: str
    user_id: str
    sender: Mailbox
    to: tuple[Mailbox, ...]
    subject: str
    html: str | None = None
    text: str | None = None
    cc: tuple[Mailbox, ...] = ()
    bcc: tuple[Mailbox, ...] = ()
    reply_to: tuple[Mailbox, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()
    tags: tuple[tuple[str, str], ...] = field(default=())

    def envelope_recipients(self) -> list[str]:
        """RCPT TO addresses: to, cc and bcc, each once, in that order."""
        if not self.cc and not self.bcc and len(self.to) == 1:
            return [self.to[0].email]
        seen: set[str] = set()
        recipients: list[str] = []
        for mailbox in (*self.to, *self.cc, *self.bcc):
            key = mailbox.email.lower()
            if key not in seen:
                seen.add(key)
                recipients.append(mailbox.email)
        return recipients

    def header_message_id(self) -> str:
        """The Message-ID header value: the message_id, in angle brackets."""
        bare = self.message_id.strip().removeprefix("<").removesuffix(">")
        return f"<{bare}>"


def _one_line(value: str) -> str:
    # Header values never carry their own line breaks: that would let a sender inject headers.
    return " ".join(value.splitlines())


def _body_part(outgoing: OutgoingEmail, target: EmailMessage) -> None:
    text, html = outgoing.text, outgoing.html
    if text is not None and html is not None:
        target.set_content(text, subtype="plain", charset="utf-8")
        target.add_alternative(html, subtype="html", charset="utf-8")
    elif html is not None:
        target.set_content(html, subtype="html", charset="utf-8")
    else:
        target.set_content(text or "", subtype="plain", charset="utf-8")


def build_mime(outgoing: OutgoingEmail, *, date: str | None = None) -> EmailMessage:
    """The message as the recipients see it (headers and body); no Bcc header."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = outgoing.sender.header_address()
    message["To"] = [m.header_address() for m in outgoing.to]
    if outgoing.cc:
        message["Cc"] = [m.header_address() for m in outgoing.cc]
    if outgoing.reply_to:
        message["Reply-To"] = [m.header_address() for m in outgoing.reply_to]
    message["Subject"] = _one_line(outgoing.subject)
    message["Message-ID"] = outgoing.header_message_id()
    message["Date"] = date or email.utils.formatdate(usegmt=True)
    for name, value in outgoing.headers:
        if name.lower() in RESERVED_HEADERS or not _HEADER_NAME.fullmatch(name):
            continue
        message[name] = _one_line(value)

    _body_part(outgoing, message)
    for attachment in outgoing.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        if not maintype or not subtype:
            maintype, subtype = "application", "octet-stream"
        # add_attachment turns a single-part or alternative body into multipart/mixed.
        message.add_attachment(
            attachment.content, maintype=maintype.strip(), subtype=subtype.strip(),
            filename=attachment.filename,
        )
    return message


def render(outgoing: OutgoingEmail, *, date: str | None = None) -> bytes:
    """The bytes sent in DATA (CRLF line ends): the same message as :func:`build_mime`.

    The common case (no attachments, ASCII headers short enough not to need folding) is written
    directly, about 20 times faster than the ``email`` package; anything else goes through
    :func:`build_mime`.  The unit tests check that both give the same message.
    """
    fast = _render_simple(outgoing, date)
    if fast is not None:
        return fast
    return build_mime(outgoing, date=date).as_bytes(policy=_POLICY)


# -- the fast path ------------------------------------------------------------------------------

_date_cache: tuple[int, str] = (0, "")


def _now_date() -> str:
    """``formatdate(usegmt=True)`` for the current second, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*")
_PRINTABLE = re.compile(r"[ -~]*")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_MAX_HEADER_LINE = 78
_MAX_BODY_LINE = 998


def _simple_address(mailbox: Mailbox) -> str | None:
    if not (_PRINTABLE.fullmatch(mailbox.email) and _PRINTABLE.fullmatch(mailbox.name)):
        return None
    if " " in mailbox.email or "<" in mailbox.email or '"' in mailbox.email:
        return None
    name = mailbox.name.strip()
    if not name:
        return mailbox.email
    if not _ATOM_PHRASE.fullmatch(name) or "  " in name:
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        name = f'"{escaped}"'
    return f"{name} <{mailbox.email}>"


@lru_cache(maxsize=4096)  # pure, on immutable values: the same senders/recipients recur
def _address_header(name: str, mailboxes: tuple[Mailbox, ...]) -> str | None:
    addresses = [_simple_address(m) for m in mailboxes]
    if any(a is None for a in addresses):
        return None
    # One address per line: folding at the commas keeps every line short.
    return f"{name}: " + ",\r\n ".join(addresses)  # type: ignore[arg-type]


def _printable(value: str) -> bool:
    """Only printable ASCII (``[ -~]*``)."""
    return value.isascii() and value.isprintable()


def _body(content: str, subtype: str) -> bytes:
    lines = content.split("\n") if "\r" not in content else _NEWLINES.split(content)
    if content.isascii() and all(len(line) <= _MAX_BODY_LINE for line in lines):
        encoding, payload = "7bit", "\r\n".join(lines).encode("ascii")
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
    else:
        encoding = "base64"
        raw = "\r\n".join(lines).encode("utf-8")
        if not raw.endswith(b"\r\n"):
            raw += b"\r\n"
        payload = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    head = (f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n").encode("ascii")
    return head + payload


def _render_simple(outgoing: OutgoingEmail, date: str | None) -> bytes | None:
    if outgoing.attachments:
        return None
    headers: list[str | None] = [
        _address_header("From", (outgoing.sender,)),
        _address_header("To", outgoing.to),
    ]
    if outgoing.cc:
        headers.append(_address_header("Cc", outgoing.cc))
    if outgoing.reply_to:
        headers.append(_address_header("Reply-To", outgoing.reply_to))
    subject = _one_line(outgoing.subject)
    headers.append(f"Subject: {subject}" if _printable(subject) else None)
    headers.append(f"Message-ID: {outgoing.header_message_id()}")
    headers.append(f"Date: {date or _now_date()}")
    for name, value in outgoing.headers:
        if name.lower() in RESERVED_HEADERS or not _HEADER_NAME.fullmatch(name):
            continue
        value = _one_line(value)
        headers.append(f"{name}: {value}" if _printable(value) else None)
    headers.append("MIME-Version: 1.0")
    if any(h is None for h in headers):
        return None
    text_lines = "\r\n".join(headers).split("\r\n")  # type: ignore[arg-type]
    if any(len(line) > _MAX_HEADER_LINE for line in text_lines):
        return None
    head = "\r\n".join(text_lines).encode("ascii") + b"\r\n"

    text, html = outgoing.text, outgoing.html
    if text is not None and html is not None:
        parts = (_body(text, "plain"), _body(html, "html"))
        boundary = f"==============={secrets.randbits(63):019d}=="
        marker = b"--" + boundary.encode()
        if any(marker in part for part in parts):
            return None
        body = (f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
                .encode() + b"".join(marker + b"\r\n" + part for part in parts)
                + marker + b"--\r\n")
        return head + body
    if html is not None:
        return head + _body(html, "html")
    return head + _body(text or "", "plain")
