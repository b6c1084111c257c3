"""Rules of an email accepted by POST /emails, and the Kafka ``sendmail`` message it becomes.

Pure functions over the validated request (a dict with the API's field names).  Limits
(``docs/api.md``): at most :data:`MAX_RECIPIENTS` addresses in to+cc+bcc, at most
:data:`MAX_EMAIL_BYTES` (25 MB) for subject + html + text + decoded attachments, custom headers
may not set the headers etrans writes itself (:data:`RESERVED_HEADERS`), and
``List-Unsubscribe`` / ``List-Unsubscribe-Post`` follow the one-click unsubscribe rule
(:mod:`etrans.domain.unsubscribe`, which the sendmail worker applies too).

Templates (:mod:`etrans.domain.templates`, rendered by :mod:`etrans.app.templates` before these
rules run on an email sent by ``template_id``): the subject may come from the template, so the
request schema does not require it and :func:`check_email` does.  The stored row keeps
``template_data`` as sent and the ``template_id`` in its canonical form.
"""

from __future__ import annotations

import base64
import binascii
import html as html_lib
import re
import uuid
from typing import Any

from etrans.domain.addresses import canonical_address, parse_address
from etrans.domain.unsubscribe import unsubscribe_problem

MAX_EMAIL_BYTES = 25 * 1024 * 1024
MAX_RECIPIENTS = 50
MAX_ATTACHMENTS = 100
# The headers the MIME builder writes itself and drops from a request's own
# (etrans.domain.mime.RESERVED_HEADERS, checked equal by a test): refused, never lost.
RESERVED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "subject", "reply-to", "message-id", "date", "sender",
    "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
    "return-path",
})
HEADER_NAME = re.compile(r"^[!-9;-~]{1,100}$")  # printable ASCII except ':' (RFC 5322 ftext)


class EmailRuleError(ValueError):
    """The request breaks a rule; the message is the API's ``detail``."""


def decoded_size(b64: str) -> int:
    """Bytes that standard base64 ``b64`` decodes to (computed without decoding)."""
    length = len(b64)
    padding = 2 if b64.endswith("==") else 1 if b64.endswith("=") else 0
    return length * 3 // 4 - padding


def check_base64(value: str) -> str | None:
    """A schema check: None when ``value`` is standard base64 with padding, else why not."""
    if len(value) % 4:
        return "content must be base64 (standard alphabet, padded)"
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "content must be base64 (standard alphabet, padded)"
    return None


def check_address(value: str) -> str | None:
    try:
        parse_address(value)
    except ValueError as exc:
        return str(exc)
    return None


def check_header_name(name: str) -> str | None:
    if not HEADER_NAME.match(name):
        return f"invalid header name {name!r}"
    if name.lower() in RESERVED_HEADERS:
        return f"header {name!r} is set by etrans and cannot be given"
    return None


def email_size(email: dict[str, Any]) -> int:
    size = sum(len(email.get(k) or "") for k in ("subject", "html", "text"))
    for attachment in email.get("attachments") or []:
        size += decoded_size(attachment["content"])
    return size


def check_email(email: dict[str, Any]) -> None:
    """Cross-field rules the schema cannot express; raises EmailRuleError."""
    if not email.get("subject"):
        raise EmailRuleError("subject: field required (or a template_id whose template has one)")
    if not email.get("html") and not email.get("text"):
        raise EmailRuleError("At least one of html or text is required")
    recipients = len(email["to"]) + len(email.get("cc") or []) + len(email.get("bcc") or [])
    if recipients > MAX_RECIPIENTS:
        raise EmailRuleError(f"Too many recipients: {recipients}, the limit is {MAX_RECIPIENTS}"
                             " (to + cc + bcc)")
    size = email_size(email)
    if size > MAX_EMAIL_BYTES:
        raise EmailRuleError(f"Email too large: {size} bytes, the limit is {MAX_EMAIL_BYTES}"
                             " (25 MB: subject, bodies and decoded attachments)")
    headers = email.get("headers")
    if headers:
        problem = unsubscribe_problem(headers.items())
        if problem is not None:
            raise EmailRuleError(problem)


def text_as_html(text: str) -> str:
    """The HTML part of a text-only email (``body`` is HTML for the sendmail workers)."""
    return html_lib.escape(text).replace("\r\n", "\n").replace("\n", "<br>\n")


def new_message_id(domain: str) -> str:
    """A unique id that is also a valid RFC 5322 msg-id (``Message-ID: <id>``)."""
    return f"msg_{uuid.uuid4().hex}@{domain.lower()}"


def sendmail_message(email: dict[str, Any], *, message_id: str, user_id: int) -> dict[str, Any]:
    """The Kafka ``sendmail`` record (``docs/wire-formats.md``): the spec's fields, plus
    optional ones the old worker ignores (``text``, ``body_format``, ``reply_to``, ``headers``,
    ``tags``).

    Addresses are written in their canonical text (:func:`~etrans.domain.addresses.
    format_address`: display names quoted when needed), which the worker reads with the same
    parser the API validated them with: ``Smith, John <j@example.org>`` becomes
    ``"Smith, John" <j@example.org>``, never two recipients or none."""
    sender = parse_address(email["from"])
    body_format = "html" if email.get("html") else "text"
    payload: dict[str, Any] = {
        "sender": {"name": sender.name or "", "email": sender.email},
        "recipients": [canonical_address(a) for a in email["to"]],
        "cc": [canonical_address(a) for a in email.get("cc") or []],
        "bcc": [canonical_address(a) for a in email.get("bcc") or []],
        "subject": email["subject"],
        "body": email["html"] if body_format == "html" else text_as_html(email["text"]),
        "message_id": message_id,
        "attachments": [
            {"filename": a["filename"], "content": a["content"], "content_type": a["content_type"]}
            for a in email.get("attachments") or []
        ],
        "user_id": str(user_id),
        "body_format": body_format,
    }
    if email.get("text"):
        payload["text"] = email["text"]
    if email.get("reply_to"):
        payload["reply_to"] = canonical_address(email["reply_to"])
    for optional in ("headers", "tags"):
        if email.get(optional):
            payload[optional] = email[optional]
    return {"payload": payload}
