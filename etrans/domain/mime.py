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

import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage

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
    """The bytes of :func:`build_mime` as sent in DATA (CRLF line ends)."""
    return build_mime(outgoing, date=date).as_bytes(policy=_POLICY)
