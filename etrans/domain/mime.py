"""The email the sendmail worker delivers, and its MIME rendering (standard library only).

:class:`OutgoingEmail` is what one Kafka send request means once decoded; :func:`build_mime`
turns it into the bytes handed to the SMTP server:

- bodies are 7bit when ASCII with lines of at most 998 octets and no NUL, else
  quoted-printable or base64 (never 8bit: see ``_POLICY``);
- text only -> ``text/plain``; html only -> ``text/html``; both -> ``multipart/alternative``
  (text first, so clients prefer the html); attachments wrap that in ``multipart/mixed``;
- ``From``/``To``/``Cc``/``Reply-To`` are written by this module (:func:`address_field`), not by
  the ``email`` package (whose folding splits UTF-8 characters across encoded words and drops
  quotes around doubled spaces): a display name is a plain phrase, a quoted-string, or RFC 2047
  encoded words (non-ASCII, or text that would read as an encoded word); the subject is RFC 2047
  encoded too; ``Message-ID`` is the request's message_id; ``Date`` is the build time;
- bcc recipients appear only in the envelope (:meth:`OutgoingEmail.envelope_recipients`), never in
  a header; a request without a to recipient (cc or bcc only: the API leaves suppressed
  recipients out, and every to may be suppressed) gets ``To: undisclosed-recipients:;`` (an empty
  group, RFC 5322 section 3.6.3) rather than an empty, invalid ``To:``;
- attachments are base64-encoded with their content type, except ``multipart/*`` and
  ``message/*`` (e.g. a forwarded ``message/rfc822``), which RFC 2045 forbids to encode: those are
  sent as ``application/octet-stream`` (same bytes, same filename);
- custom headers are added unless they would replace a header this module owns (listed in
  :data:`RESERVED_HEADERS`) or carry line breaks (header injection); ``List-Unsubscribe`` and
  ``List-Unsubscribe-Post`` are written by :func:`etrans.domain.unsubscribe.header_field`
  (canonical names, folded between URIs, never encoded: the email package would turn a long URI
  into RFC 2047 encoded words).
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import re
import secrets
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import lru_cache

from etrans.domain.unsubscribe import header_field, is_unsubscribe_header

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

# Attachments are base64: a composite type may not be (RFC 2045 6.4), and the email package
# wrote one without a boundary (multipart) or with bare LFs (message/rfc822).
_COMPOSITE = frozenset(("multipart", "message"))

# CRLF line ends, 78-column folding, RFC 2047 for non-ASCII headers (no SMTPUTF8 needed).
# refold_source="none": the address fields, set raw (already folded by address_field), are
# written as they are instead of being re-folded by the email package.  cte_type="7bit": a
# non-ASCII body is quoted-printable or base64, never "8bit" (the SMTP policy's default): MAIL
# FROM never says BODY=8BITMIME, and a relay converting 8bit for a next hop without 8BITMIME
# would break the DKIM signature (RFC 6376 5.3).
_POLICY = email.policy.SMTP.clone(refold_source="none", cte_type="7bit")


@dataclass(frozen=True)
class Mailbox:
    """An address with an optional display name (see :mod:`etrans.domain.addresses` for the
    parser both the API and the worker read addresses with)."""

    email: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2].lower()


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
    # W3C traceparent of the delivery's span (not of the wire format: the Kafka header's child),
    # put on the Reject events it publishes.
    traceparent: str | None = None

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
        """The Message-ID header value: the message_id, in angle brackets (on one line)."""
        bare = _one_line(self.message_id).strip().removeprefix("<").removesuffix(">")
        return f"<{bare}>"


def _one_line(value: str) -> str:
    # Header values never carry their own line breaks (nor NULs): that would let a sender inject
    # headers.  The worker refuses such requests already (etrans.workers.send_request).
    return " ".join(value.replace("\x00", "").splitlines())


# -- address fields -----------------------------------------------------------------------------

_MAX_HEADER_LINE = 78
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ATOM_PHRASE = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*")
_QUOTED_FOLD = re.compile(r"(?<=\S) (?=\S)")  # single spaces a quoted-string may fold at
# UTF-8 bytes per encoded word: 48 base64 characters, a 60-character word, so that "Reply-To: "
# and one word stay within 78 columns (RFC 2047 allows 75).
_ENCODED_WORD_BYTES = 36
# The longest plain or quoted word of a name: "Reply-To: " + word + "," within 78 columns.
_MAX_NAME_TOKEN = 66


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 ``B`` encoded words for ``text``, never splitting a character between two."""
    words: list[str] = []
    chunk = bytearray()
    for char in text:
        data = char.encode("utf-8")
        if len(chunk) + len(data) > _ENCODED_WORD_BYTES:
            words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode()}?=")
            chunk.clear()
        chunk += data
    words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode()}?=")
    return words


def _name_tokens(name: str) -> list[str]:
    """The display name as header tokens; the field may be folded between any two of them."""
    if "=?" not in name:
        tokens = None
        if _ATOM_PHRASE.fullmatch(name):
            tokens = name.split(" ")
        elif name.isascii() and name.isprintable():
            quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            tokens = _QUOTED_FOLD.split(quoted)
        if tokens is not None and all(len(token) <= _MAX_NAME_TOKEN for token in tokens):
            return tokens
    # Non-ASCII, ASCII that a reader would decode as an encoded word, or a word too long for
    # one line: encoded words, which RFC 2047 readers join without the folding whitespace
    # between them.
    return _encoded_words(name)


NO_RECIPIENT = "undisclosed-recipients:;"


@lru_cache(maxsize=4096)  # pure, on immutable values: the same senders/recipients recur
def address_field(name: str, mailboxes: tuple[Mailbox, ...]) -> str:
    """The value of the address field ``name`` (From, To, Cc, Reply-To), folded with CRLF +
    space: one address per line, a long display name folded between its words, every line
    within 78 columns unless one address alone is longer.  No mailbox: an empty group."""
    if not mailboxes:
        return NO_RECIPIENT
    lines: list[str] = []
    line = f"{name}:"
    last = len(mailboxes) - 1
    for index, mailbox in enumerate(mailboxes):
        tokens = ([*_name_tokens(mailbox.name), f"<{mailbox.email}>"] if mailbox.name
                  else [mailbox.email])
        if index < last:
            tokens[-1] += ","
        for position, token in enumerate(tokens):
            starts_address = position == 0 and index > 0
            if starts_address or (len(line) + 1 + len(token) > _MAX_HEADER_LINE
                                  and line != f"{name}:"):
                lines.append(line)
                line = " " + token
            else:
                line += " " + token
    lines.append(line)
    return "\r\n".join(lines)[len(name) + 2:]


def _cte(content: str) -> str | None:
    """The email package picks 7bit for ASCII text, which may not hold a NUL (RFC 2045 2.7):
    base64 for a body with one (the API refuses them, a record written by anything else may
    carry them)."""
    return "base64" if "\x00" in content else None


def _body_part(outgoing: OutgoingEmail, target: EmailMessage) -> None:
    text, html = outgoing.text, outgoing.html
    if text is not None and html is not None:
        target.set_content(text, subtype="plain", charset="utf-8", cte=_cte(text))
        target.add_alternative(html, subtype="html", charset="utf-8", cte=_cte(html))
    elif html is not None:
        target.set_content(html, subtype="html", charset="utf-8", cte=_cte(html))
    else:
        target.set_content(text or "", subtype="plain", charset="utf-8", cte=_cte(text or ""))


def build_mime(outgoing: OutgoingEmail, *, date: str | None = None) -> EmailMessage:
    """The message as the recipients see it (headers and body); no Bcc header."""
    message = EmailMessage(policy=_POLICY)
    message.set_raw("From", address_field("From", (outgoing.sender,)))
    message.set_raw("To", address_field("To", outgoing.to))
    if outgoing.cc:
        message.set_raw("Cc", address_field("Cc", outgoing.cc))
    if outgoing.reply_to:
        message.set_raw("Reply-To", address_field("Reply-To", outgoing.reply_to))
    message["Subject"] = _one_line(outgoing.subject)
    message["Message-ID"] = outgoing.header_message_id()
    message["Date"] = date or email.utils.formatdate(usegmt=True)
    for name, value in outgoing.headers:
        if name.lower() in RESERVED_HEADERS or not _HEADER_NAME.fullmatch(name):
            continue
        if is_unsubscribe_header(name):
            # Folded by etrans between URIs: the email package would encode a long URI.
            unsubscribe = header_field(name, value)
            if unsubscribe is not None:
                message.set_raw(*unsubscribe)
            continue
        message[name] = _one_line(value)

    _body_part(outgoing, message)
    for attachment in outgoing.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        if not maintype or not subtype or maintype.strip().lower() in _COMPOSITE:
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


_NEWLINES = re.compile(r"\r\n|\r|\n")
_MAX_BODY_LINE = 998


def _address_header(name: str, mailboxes: tuple[Mailbox, ...]) -> str | None:
    value = address_field(name, mailboxes)
    return f"{name}: {value}" if value.isascii() else None


def _printable(value: str) -> bool:
    """Only printable ASCII (``[ -~]*``)."""
    return value.isascii() and value.isprintable()


def _body(content: str, subtype: str) -> bytes:
    lines = content.split("\n") if "\r" not in content else _NEWLINES.split(content)
    if (content.isascii() and "\x00" not in content
            and all(len(line) <= _MAX_BODY_LINE for line in lines)):
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
        if is_unsubscribe_header(name):
            unsubscribe = header_field(name, value)
            if unsubscribe is not None:
                headers.append(f"{unsubscribe[0]}: {unsubscribe[1]}")
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
