"""Decoding one Kafka send request into an :class:`OutgoingEmail`: the worker's trust boundary.

Input: the spec's "Kafka Message Format" (``{"payload": {sender, recipients, cc, bcc, subject,
body, message_id, attachments, user_id}}``) plus the optional superset fields ``reply_to``,
``text``, ``headers`` and ``tags`` (``docs/wire-formats.md``).  ``body`` is the HTML part;
``text`` the plain-text alternative.

The topic is not trusted: whatever wrote the record, nothing of it reaches the SMTP conversation
or the rendered headers unchecked.  Addresses are read with the API's own parser
(:func:`etrans.domain.addresses.parse_address`, the reader of the canonical form the API writes),
so RCPT TO holds exactly the addresses the API validated.  :func:`decode_request` raises
:class:`InvalidRequest`:

- ``email`` None: not JSON, or no message_id / recipient to report against (poison: the task
  dead-letters it; there is no email to mark as bounced);
- ``refused``: the request is unsafe or its addresses unreadable - CR, LF or NUL (or a lone
  surrogate) in message_id, user_id, the sender, an address, the subject, a header name or value,
  an attachment's filename or type, an address :func:`parse_address` refuses, or a
  ``List-Unsubscribe`` / ``List-Unsubscribe-Post`` header the API would refuse
  (:func:`etrans.domain.unsubscribe.unsubscribe_problem`: e.g. a plain http or
  ``javascript:`` URI).  ``email``
  holds the envelope with those characters replaced by U+FFFD, only to report against: the task
  publishes a Reject event per recipient *and* dead-letters the record; it is never sent;
- otherwise an invalid detail (attachment not base64, wrong types): ``email`` is set, the task
  rejects it with a Reject event.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from etrans.domain.addresses import (
    AddressError,
    parse_address,
    validate_display_name,
    validate_email,
)
from etrans.domain.mime import Attachment, Mailbox, OutgoingEmail
from etrans.domain.unsubscribe import unsubscribe_problem

if TYPE_CHECKING:
    from collections.abc import Callable

# Characters that must never reach an SMTP command line or a header: CR and LF (command and
# header injection), NUL (truncates lines in C mailers) and lone surrogates (not text: rendering
# them fails, which would retry the message forever).
_UNSAFE = re.compile(r"[\r\n\x00\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
UNSAFE_DESCRIPTION = "CR, LF, NUL or a lone surrogate"


class InvalidRequest(ValueError):
    """The request is unusable.  ``email`` is set when enough of it was read to reject it;
    ``refused``: it is also dead-lettered (see the module docstring)."""

    def __init__(self, reason: str, email: OutgoingEmail | None = None, *,
                 refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.email = email
        self.refused = refused


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{what} must be a string")


def _safe(text: str) -> str:
    """``text`` with the unsafe characters replaced by U+FFFD (for Reject events only)."""
    return _UNSAFE.sub("\ufffd", text)


class _Problems:
    """What makes the request refused; the first one is the reason given."""

    __slots__ = ("reasons",)

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def unsafe(self, value: str, what: str) -> str:
        """``value``, noting it (and returning it made safe) when it holds unsafe characters."""
        if _UNSAFE.search(value) is None:
            return value
        self.reasons.append(f"{what} contains {UNSAFE_DESCRIPTION}")
        return _safe(value)


@lru_cache(maxsize=8192)
def _mailbox(text: str) -> Mailbox:
    """The address ``text`` as the API's parser reads it (memoised: pure, immutable result; the
    same few addresses recur).  Raises AddressError."""
    address = parse_address(text)
    return Mailbox(email=address.email, name=address.name or "")


@lru_cache(maxsize=4096)
def _sender_mailbox(email: str, name: str) -> Mailbox:
    """Mailbox of a ``{email, name}`` sender, checked as the API checks them (memoised).  The
    name is taken as it is: the API wrote the one it validated."""
    return Mailbox(email=validate_email(email.strip()), name=validate_display_name(name))


def _read(text: str, what: str, problems: _Problems, index: int | None = None) -> Mailbox:
    try:
        return _mailbox(text)
    except AddressError as exc:
        if index is not None:
            what = f"{what}[{index}]"
        reason = (f"{what} contains {UNSAFE_DESCRIPTION}" if _UNSAFE.search(text)
                  else f"{what}: {exc}")
        problems.reasons.append(reason)
        return Mailbox(email=_safe(text.strip()))


def _sender(value: Any, problems: _Problems) -> Mailbox:
    if isinstance(value, Mapping):
        address = value.get("email")
        name = value.get("name")
        address = address if type(address) is str else _text(address, "sender.email")
        name = name if type(name) is str else _text(name, "sender.name")
        try:
            return _sender_mailbox(address, name)
        except AddressError as exc:
            if _UNSAFE.search(address) or _UNSAFE.search(name):
                problems.reasons.append(f"sender contains {UNSAFE_DESCRIPTION}")
            else:
                problems.reasons.append(f"sender: {exc}")
            return Mailbox(email=_safe(address.strip()), name=_safe(name))
    if isinstance(value, str):
        return _read(value, "sender", problems)
    raise ValueError("sender must be an object {name, email}")


def _mailboxes(value: Any, what: str, problems: _Problems) -> tuple[Mailbox, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (_read(value, what, problems),)
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of addresses")
    if len(value) == 1 and type(value[0]) is str and value[0]:
        return (_read(value[0], what, problems, 0),)
    return tuple(_read(item if type(item) is str else _text(item, what), what, problems, index)
                 for index, item in enumerate(value) if item)


def _attachments(value: Any, problems: _Problems) -> tuple[Attachment, ...]:
    if not value:
        return ()
    if not isinstance(value, list):
        raise ValueError("attachments must be a list")
    result = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ValueError(f"attachments[{index}] must be an object")
        try:
            content = base64.b64decode(_text(item.get("content"), "content"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"attachments[{index}].content is not base64") from None
        filename = problems.unsafe(_text(item.get("filename"), "filename"),
                                   f"attachments[{index}].filename")
        content_type = problems.unsafe(_text(item.get("content_type"), "content_type"),
                                       f"attachments[{index}].content_type")
        result.append(Attachment(
            filename=filename or f"attachment-{index + 1}",
            content=content,
            content_type=content_type or "application/octet-stream",
        ))
    return tuple(result)


def _pairs(value: Any, what: str, *, key: str = "name") -> tuple[tuple[str, str], ...]:
    """``{"k": "v"}`` or ``[{"name": "k", "value": "v"}]`` -> (("k", "v"), ...)."""
    if not value:
        return ()
    if isinstance(value, Mapping):
        return tuple((str(k), _text(v, what)) for k, v in value.items())
    if isinstance(value, list):
        pairs = []
        for item in value:
            if not isinstance(item, Mapping):
                raise ValueError(f"{what} items must be objects")
            pairs.append((_text(item.get(key), what), _text(item.get("value"), what)))
        return tuple(pairs)
    raise ValueError(f"{what} must be an object or a list")


def _headers(value: Any, problems: _Problems) -> tuple[tuple[str, str], ...]:
    pairs = tuple((problems.unsafe(name, "a header name"), problems.unsafe(text, "a header value"))
                  for name, text in _pairs(value, "headers"))
    # List-Unsubscribe(-Post): the API's own rule, so a record written by anything else cannot
    # offer a javascript: or plain-http unsubscribe link, or a one-click POST without https.
    unsubscribe = unsubscribe_problem(pairs)
    if unsubscribe is not None:
        problems.reasons.append(unsubscribe)
    return pairs


def _body_text(value: Any, what: str, problems: _Problems) -> str | None:
    if value is None:
        return None
    text = value if type(value) is str else _text(value, what)
    # Bodies may hold line breaks; a lone surrogate cannot be encoded (checked only when the
    # text is not ASCII, which isascii() tells at memory speed).
    if not text.isascii() and _SURROGATE.search(text):
        problems.reasons.append(f"{what} contains a lone surrogate")
        return _SURROGATE.sub("\ufffd", text)
    return text


def _document(raw: bytes | None) -> Mapping[str, Any]:
    if raw is None:
        raise InvalidRequest("empty message (no value)")
    try:
        # UTF-8 (the spec's encoding) decoded here: json.loads(bytes) would first sniff for
        # UTF-16/32; anything else (a BOM, NULs) still goes through that path.
        document = (json.loads(raw.decode()) if raw[:1] == b"{" and raw[1:2] != b"\x00"
                    else json.loads(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"not JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise InvalidRequest("not a JSON object")
    payload = document.get("payload", document)
    if not isinstance(payload, Mapping):
        raise InvalidRequest("payload is not an object")
    return payload


_Addressing = tuple[str, str, Mailbox, tuple[Mailbox, ...], tuple[Mailbox, ...],
                    tuple[Mailbox, ...]]


def _addressing(get: Callable[[str], Any], problems: _Problems) -> _Addressing:
    """What a Reject event needs: message_id, user_id, sender and the recipients."""
    try:
        message_id = get("message_id")
        if type(message_id) is not str:
            message_id = _text(message_id, "message_id")
        message_id = problems.unsafe(message_id.strip(), "message_id")
        if not message_id:
            raise ValueError("message_id is missing")
        user_id = get("user_id")
        user_id = problems.unsafe(
            (user_id if type(user_id) is str else _text(user_id, "user_id")).strip(), "user_id")
        sender = _sender(get("sender"), problems)
        to = _mailboxes(get("recipients"), "recipients", problems)
        cc = _mailboxes(get("cc"), "cc", problems)
        bcc = _mailboxes(get("bcc"), "bcc", problems)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return message_id, user_id, sender, to, cc, bcc


def decode_request(raw: bytes | None, traceparent: str | None = None) -> OutgoingEmail:
    """Decode one Kafka send request; :class:`InvalidRequest` when it cannot be sent.
    ``traceparent``: of the delivery's span, kept on the email (its Reject events carry it)."""
    payload = _document(raw)
    problems = _Problems()
    get = payload.get
    message_id, user_id, sender, to, cc, bcc = _addressing(get, problems)
    if not (to or cc or bcc):
        raise InvalidRequest("no recipients")

    try:
        html = get("body")
        if html is None:
            html = get("html")
        subject = get("subject")
        reply_to, headers, attachments, tags = (get("reply_to"), get("headers"),
                                                get("attachments"), get("tags"))
        outgoing = OutgoingEmail(
            message_id=message_id,
            user_id=user_id,
            sender=sender,
            to=to,
            cc=cc,
            bcc=bcc,
            subject=problems.unsafe(
                subject if type(subject) is str else _text(subject, "subject"), "subject"),
            html=_body_text(html, "body", problems),
            text=_body_text(get("text"), "text", problems),
            reply_to=(_mailboxes(reply_to, "reply_to", problems) if reply_to is not None
                      else ()),
            headers=_headers(headers, problems) if headers else (),
            attachments=_attachments(attachments, problems) if attachments else (),
            tags=_pairs(tags, "tags") if tags else (),
            traceparent=traceparent,
        )
    except ValueError as exc:
        detail = str(exc)
    else:
        if not problems.reasons:
            return outgoing
        detail = ""
    envelope = OutgoingEmail(message_id=message_id, user_id=user_id, sender=sender, to=to,
                             cc=cc, bcc=bcc, subject="", traceparent=traceparent)
    if problems.reasons:
        raise InvalidRequest(problems.reasons[0], envelope, refused=True)
    raise InvalidRequest(detail, envelope)
