"""The sendmail worker's task: Kafka send request -> :class:`OutgoingEmail` -> EmailDelivery.

Input: the spec's "Kafka Message Format" (``{"payload": {sender, recipients, cc, bcc, subject,
body, message_id, attachments, user_id}}``) plus the optional superset fields ``reply_to``,
``text``, ``headers`` and ``tags`` (``docs/wire-formats.md``).  ``body`` is the HTML part;
``text`` the plain-text alternative.

What the pipeline sees (:mod:`etrans.pipeline.task`):

- not JSON, or no message_id / sender / recipient to report against: :class:`PoisonMessage`
  (dead-lettered, committed past; there is no email to mark as bounced);
- known message, invalid detail (bad attachment base64, ...): rejected with a Reject event;
- delivered, rejected or skipped: returns;
- Redis/Kafka unavailable, SMTP server unreachable: :class:`RetryLater` (retried by the pipeline).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from structlog.contextvars import bind_contextvars, unbind_contextvars

from etrans.domain.mime import Attachment, Mailbox, OutgoingEmail, parse_mailbox
from etrans.errors import PoisonMessage

if TYPE_CHECKING:
    from etrans.app.sendmail import EmailDelivery
    from etrans.pipeline.message import Message


class InvalidRequest(ValueError):
    """The request is unusable.  ``email`` is set when enough of it was read to reject it."""

    def __init__(self, reason: str, email: OutgoingEmail | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.email = email


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{what} must be a string")


@lru_cache(maxsize=4096)
def _sender_mailbox(address: str, name: str) -> Mailbox:
    """Mailbox of a ``{email, name}`` sender (memoised: a pure function of immutable values;
    most requests come from few senders)."""
    address = address.strip()
    if "@" not in address:
        raise ValueError(f"sender.email is not an address: {address!r}")
    return Mailbox(email=address, name=name.strip())


def _sender(value: Any) -> Mailbox:
    if isinstance(value, dict):
        address, name = value.get("email"), value.get("name")
        if type(address) is str and (name is None or type(name) is str):
            return _sender_mailbox(address, name or "")
    if isinstance(value, Mapping):
        return _sender_mailbox(_text(value.get("email"), "sender.email"),
                               _text(value.get("name"), "sender.name"))
    if isinstance(value, str):
        return parse_mailbox(value)
    raise ValueError("sender must be an object {name, email}")


def _mailboxes(value: Any, what: str) -> tuple[Mailbox, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (parse_mailbox(value),)
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of addresses")
    if len(value) == 1 and type(value[0]) is str and value[0]:
        return (parse_mailbox(value[0]),)
    return tuple(parse_mailbox(_text(item, what)) for item in value if item)


def _attachments(value: Any) -> tuple[Attachment, ...]:
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
        result.append(Attachment(
            filename=_text(item.get("filename"), "filename") or f"attachment-{index + 1}",
            content=content,
            content_type=_text(item.get("content_type"), "content_type")
            or "application/octet-stream",
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


def decode_request(raw: bytes | None) -> OutgoingEmail:
    """Decode one Kafka send request; :class:`InvalidRequest` when it cannot be sent."""
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

    # First what a Reject event needs: message_id, sender, recipients.
    get = payload.get
    try:
        message_id = get("message_id")
        if type(message_id) is not str:
            message_id = _text(message_id, "message_id")
        message_id = message_id.strip()
        if not message_id:
            raise ValueError("message_id is missing")
        user_id = get("user_id")
        user_id = (user_id if type(user_id) is str else _text(user_id, "user_id")).strip()
        sender = _sender(get("sender"))
        to = _mailboxes(get("recipients"), "recipients")
        cc = _mailboxes(get("cc"), "cc")
        bcc = _mailboxes(get("bcc"), "bcc")
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    if not (to or cc or bcc):
        raise InvalidRequest("no recipients")

    try:
        html = get("body")
        if html is None:
            html = get("html")
        text = get("text")
        subject = get("subject")
        reply_to, headers, attachments, tags = (get("reply_to"), get("headers"),
                                                get("attachments"), get("tags"))
        return OutgoingEmail(
            message_id=message_id,
            user_id=user_id,
            sender=sender,
            to=to,
            cc=cc,
            bcc=bcc,
            subject=subject if type(subject) is str else _text(subject, "subject"),
            html=(html if type(html) is str else _text(html, "body")) if html is not None
            else None,
            text=(text if type(text) is str else _text(text, "text")) if text is not None
            else None,
            reply_to=_mailboxes(reply_to, "reply_to") if reply_to is not None else (),
            headers=_pairs(headers, "headers") if headers else (),
            attachments=_attachments(attachments) if attachments else (),
            tags=_pairs(tags, "tags") if tags else (),
        )
    except ValueError as exc:
        envelope = OutgoingEmail(message_id=message_id, user_id=user_id, sender=sender, to=to,
                                 cc=cc, bcc=bcc, subject="")
        raise InvalidRequest(str(exc), envelope) from None


class SendmailTask:
    """The pipeline task (:class:`etrans.pipeline.Task`) of ``etrans sendmail``."""

    def __init__(self, delivery: EmailDelivery) -> None:
        self.delivery = delivery

    async def __call__(self, message: Message) -> None:
        invalid_reason: str | None = None
        try:
            outgoing = decode_request(message.value)
        except InvalidRequest as exc:
            if exc.email is None:
                unbind_contextvars("message_id")  # not the previous message's any more
                raise PoisonMessage(f"undeliverable send request: {exc.reason}") from None
            outgoing, invalid_reason = exc.email, exc.reason
        # Each pipeline worker runs in its own context (Trio copies it per task): binding
        # without unbinding is enough (the next message rebinds), and cheaper than
        # bound_contextvars, a generator context manager.
        bind_contextvars(message_id=outgoing.message_id)
        await self.delivery.deliver(outgoing, invalid_reason=invalid_reason)

    def statistics(self) -> dict[str, int]:
        return self.delivery.statistics()
