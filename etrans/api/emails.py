"""Routes of emails: POST /emails, POST /emails/batch, GET /emails, GET /emails/{message_id}.

Each route turns the request into a command for the bus (use cases: :mod:`etrans.app.emails`)
and the record it answers into the JSON of ``docs/api.md`` (timestamps in whole seconds).
The request schemas below validate the requests *and* are published in ``/openapi.json``.
``Idempotency-Key`` (POST routes): see :func:`idempotent` and ``docs/api.md``.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import trio

from etrans.api.routing import RequestContext, ValidationFailed, json_response
from etrans.api.schema import (
    NO_LINE_BREAKS,
    TIMESTAMP,
    AnyJson,
    Array,
    Integer,
    MapOf,
    Object,
    Prop,
    QueryParam,
    SchemaError,
    String,
    first_message,
)
from etrans.api.trace import current_traceparent
from etrans.app.emails import GetEmail, ListEmails, SendBatch, SendEmail
from etrans.domain.addresses import has_line_break
from etrans.domain.api_keys import Permission
from etrans.domain.emails import (
    MAX_ATTACHMENTS,
    MAX_EMAIL_BYTES,
    MAX_RECIPIENTS,
    check_address,
    check_base64,
    check_header_name,
)
from etrans.domain.schedule import MAX_AHEAD, format_problem
from etrans.domain.timestamps import iso
from etrans.errors import Conflict, InvalidInput, UpstreamUnavailable
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from etrans.api.routing import Api
    from etrans.app.records import BatchOutcome, EmailDetail, EmailList, NewEmail

log = get_logger(__name__)

MAX_BATCH = 100


def _no_line_breaks(value: str) -> str | None:
    return "must not contain line breaks (CR/LF)" if has_line_break(value) else None


ADDRESS = String(min_length=3, max_length=640, pattern=NO_LINE_BREAKS,
                 checks=(_no_line_breaks, check_address),
                 description='"email@domain" or "Name <email@domain>"',
                 example="Acme <hello@example.com>")
ADDRESS_LIST = Array(ADDRESS, max_items=MAX_RECIPIENTS)
BODY_TEXT = String(max_length=MAX_EMAIL_BYTES, text=True)

ATTACHMENT = Object(
    name="Attachment",
    properties={
        "filename": Prop(String(min_length=1, max_length=255, pattern=r"^[^\r\n\"/\\]+$",
                                pattern_message="must not contain line breaks, quotes or slashes"),
                         required=True),
        "content": Prop(String(min_length=1, checks=(check_base64,),
                               description="base64 (standard alphabet, padded)"), required=True),
        "content_type": Prop(String(min_length=3, max_length=255,
                                    pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/"
                                            r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$",
                                    pattern_message="must be a MIME type such as application/pdf",
                                    example="application/pdf"), required=True),
    },
)
TAG = Object(
    name="Tag",
    properties={
        "name": Prop(String(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_-]+$",
                            pattern_message="may only contain letters, digits, _ and -"),
                     required=True),
        "value": Prop(String(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_-]+$",
                             pattern_message="may only contain letters, digits, _ and -"),
                      required=True),
    },
)
HEADER_VALUE = String(max_length=998, pattern=NO_LINE_BREAKS, checks=(_no_line_breaks,))
HEADER_NAME = String(min_length=1, max_length=100, pattern=r"^[!-9;-~]+$",
                     checks=(check_header_name,))
HEADERS_DESCRIPTION = (
    "Custom headers, name -> value (at most 50; no line breaks; not the headers etrans writes "
    "itself: From, To, Cc, Bcc, Subject, Reply-To, Message-ID, Date, Sender, MIME-Version, "
    "Content-Type, Content-Transfer-Encoding, Content-Disposition, Return-Path).  One-click "
    "unsubscribe (required by Gmail and Yahoo for bulk mail): List-Unsubscribe is one or more "
    "<URI> separated by commas, each https://host/... or mailto:address (optionally "
    "?subject=...), e.g. "
    '"<https://example.com/unsubscribe/abc>, <mailto:unsubscribe@example.com?subject=unsub>"; '
    "plain http, javascript:, data: and relative URIs are refused (400).  "
    'List-Unsubscribe-Post must be exactly "List-Unsubscribe=One-Click" and needs an https URI '
    'in List-Unsubscribe (RFC 8058).  See docs/api.md, "One-click unsubscribe".')

SCHEDULED_AT = String(
    max_length=64, checks=(format_problem,), format="date-time", example="2026-12-24T09:00:00Z",
    description=(f"Send at this moment instead of at once: RFC 3339 with its offset, in the "
                 f"future, at most {MAX_AHEAD.days} days ahead (docs/api.md, \"Scheduled "
                 "sending\")"))

SEND_EMAIL = Object(
    name="SendEmailRequest",
    properties={
        "from": Prop(ADDRESS, required=True),
        "to": Prop(Array(ADDRESS, min_items=1, max_items=MAX_RECIPIENTS), required=True),
        "subject": Prop(String(min_length=1, max_length=998, pattern=NO_LINE_BREAKS,
                               checks=(_no_line_breaks,),
                               description="required unless template_id gives it"),
                        nullable=True),
        "html": Prop(BODY_TEXT, nullable=True),
        "text": Prop(BODY_TEXT, nullable=True),
        "cc": Prop(ADDRESS_LIST, nullable=True),
        "bcc": Prop(ADDRESS_LIST, nullable=True),
        "reply_to": Prop(ADDRESS, nullable=True),
        "attachments": Prop(Array(ATTACHMENT, max_items=MAX_ATTACHMENTS), nullable=True),
        "headers": Prop(MapOf(HEADER_VALUE, key=HEADER_NAME, max_properties=50,
                              description=HEADERS_DESCRIPTION), nullable=True),
        "tags": Prop(Array(TAG, max_items=50), nullable=True),
        "template_id": Prop(String(max_length=255, description=(
            "tpl_<n> of a stored template (POST /templates): its subject, html and text, "
            "rendered with template_data, for the parts this request does not give")),
            nullable=True),
        "template_data": Prop(MapOf(AnyJson(text=True), key=String(
            min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$"),
            max_properties=200, description=(
                "Values of the template's variables, and of {{ name }} placeholders in this "
                "request's own subject/html/text")),
            nullable=True),
        "scheduled_at": Prop(SCHEDULED_AT, nullable=True),
    },
)
SEND_BATCH = Object(
    name="SendBatchRequest",
    properties={"emails": Prop(Array(SEND_EMAIL, min_items=1, max_items=MAX_BATCH),
                               required=True)},
)
# The batch route validates each item on its own (per-item errors): the request itself only needs
# to be an object with an array of at most 100 items.
_BATCH_ENVELOPE = Object(properties={"emails": Prop(Array(AnyJson(checked=False), min_items=1,
                                                          max_items=MAX_BATCH), required=True)})

_STR = String()
_STR_LIST = Array(String())
SUPPRESSED_LIST = Array(Object(name="SuppressedRecipient", properties={
    "email": Prop(_STR, required=True), "reason": Prop(_STR, required=True)}),
    description="Recipients not sent to: on the suppression list (hard_bounce, complaint, "
                "manual); [] when none")
SEND_STATUS = String(enum=("queued", "scheduled", "suppressed"),
                     description='"queued"; "scheduled" with a scheduled_at (sent then); or '
                                 '"suppressed" when every recipient is suppressed (stored, never '
                                 "sent)")
_SCHEDULED = Prop(String(format="date-time",
                         description="a scheduled email's scheduled_at (absent otherwise)"))
SEND_RESPONSE = Object(name="SendEmailResponse", properties={
    "id": Prop(_STR, required=True), "from": Prop(_STR, required=True),
    "to": Prop(_STR_LIST, required=True), "status": Prop(SEND_STATUS, required=True),
    "created_at": Prop(_STR, required=True), "suppressed": Prop(SUPPRESSED_LIST, required=True),
    "scheduled_at": _SCHEDULED})
BATCH_RESPONSE = Object(name="SendBatchResponse", properties={
    "data": Prop(Array(Object(properties={
        "id": Prop(_STR, required=True), "status": Prop(SEND_STATUS, required=True),
        "suppressed": Prop(SUPPRESSED_LIST, required=True), "scheduled_at": _SCHEDULED})),
        required=True),
    "errors": Prop(Array(Object(properties={"index": Prop(Integer(), required=True),
                                            "error": Prop(_STR, required=True)})),
                   required=True)})
STATS = Array(Object(name="Stat", properties={
    "label": Prop(_STR, required=True), "count": Prop(Integer(), required=True),
    "percentage": Prop(AnyJson(), required=True)}))
EMAIL_SUMMARY = Object(name="EmailSummary", properties={
    "id": Prop(_STR, required=True), "from": Prop(_STR, required=True),
    "to": Prop(_STR_LIST, required=True), "subject": Prop(_STR, required=True),
    "status": Prop(_STR, required=True), "created_at": Prop(_STR, required=True)})
LIST_RESPONSE = Object(name="EmailList", properties={
    "data": Prop(Array(EMAIL_SUMMARY), required=True), "total": Prop(Integer(), required=True),
    "page": Prop(Integer(), required=True), "per_page": Prop(Integer(), required=True),
    "stats": Prop(STATS, required=True)})
EMAIL_DETAIL = Object(name="EmailDetail", properties={
    key: Prop(AnyJson()) for key in (
        "id", "from", "to", "cc", "bcc", "reply_to", "subject", "html", "text", "headers", "tags",
        "attachments", "template_id", "template_data", "status", "created_at", "sent_at",
        "delivered_at", "failure_reason", "recipients", "opens", "clicks", "first_opened_at",
        "first_clicked_at", "scheduled_at")})

LIST_QUERY = {
    "page": QueryParam(Integer(minimum=1, maximum=1_000_000), default=1,
                       description="Page number (1..1000000)"),
    "per_page": QueryParam(Integer(minimum=1, maximum=100), default=20,
                           description="Items per page (1-100)"),
    "status": QueryParam(String(max_length=200), description=(
        "Comma-separated: queued, sent, delivered, bounced, deferred, delayed, failed, "
        "suppressed, scheduled, cancelled (raw or display)")),
    "created_at_from": QueryParam(TIMESTAMP, description="ISO-8601 UTC lower bound"),
    "created_at_to": QueryParam(TIMESTAMP, description="ISO-8601 UTC upper bound"),
}
IDEMPOTENCY_HEADER = {
    "Idempotency-Key": QueryParam(String(min_length=1, max_length=256, pattern=r"^[!-~]+$"),
                                  description="Same key + same body within 24 h: same response, "
                                              "one email. Different body or in flight: 409."),
}


def _fingerprint(ctx: RequestContext, method: str, path: str) -> str:
    try:
        canonical = json.dumps(json.loads(ctx.raw_body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = ctx.raw_body.decode("utf-8", "replace")
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


async def idempotent(api: Api, ctx: RequestContext, path: str,
                     run: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``run`` at most once per (user, path, Idempotency-Key) within 24 h."""
    key = ctx.headers.get("Idempotency-Key")
    store = api.services.idempotency
    if key is None:
        return await run()
    key = key.strip()
    if not key or len(key) > 256 or not key.isascii() or not key.isprintable():
        raise InvalidInput("Idempotency-Key must be 1 to 256 printable ASCII characters")
    scope = f"{ctx.user_id}:{path}:{key}"
    fingerprint = _fingerprint(ctx, "POST", path)
    state, stored = await store.begin(scope, fingerprint)
    if state == "replay":
        status, body = stored
        return json_response(body, status, {"Idempotent-Replayed": "true"})
    if state == "mismatch":
        raise Conflict("Idempotency-Key was already used with a different request")
    if state == "in_flight":
        raise Conflict("A request with this Idempotency-Key is still in progress")
    try:
        body = await run()
    except BaseException:
        await _release(store, scope)
        raise
    try:
        await store.complete(scope, fingerprint, 200, body)
    except UpstreamUnavailable as exc:
        # The email is queued: a 503 would invite a retry that sends it twice.  Answer what
        # happened; the key's in-flight claim expires on its own (120 s).
        log.error("idempotency record not stored", error=str(exc))
    return body


async def _release(store: Any, scope: str) -> None:
    """Drop the key's claim so the request may be retried at once, also when it was cancelled
    (shielded, at most 5 s); a failure is logged: the request already fails for its own reason."""
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        try:
            await store.abandon(scope)
        except Exception as exc:
            log.warning("idempotency claim not released", error=str(exc))


def _suppressed_view(new: NewEmail) -> list[dict[str, str]]:
    return [{"email": s.email, "reason": s.reason} for s in new.suppressed]


def _schedule_view(new: NewEmail) -> dict[str, Any]:
    """``scheduled_at`` of a scheduled email; nothing else (the answer of a send at once is the
    spec's, unchanged)."""
    if new.scheduled_at is None:
        return {}
    return {"scheduled_at": iso(new.scheduled_at, whole_seconds=True)}


def accepted_view(new: NewEmail) -> dict[str, Any]:
    return {"id": new.message_id, "from": new.from_address, "to": new.to, "status": new.status,
            "created_at": iso(new.created_at, whole_seconds=True),
            "suppressed": _suppressed_view(new), **_schedule_view(new)}


def batch_view(outcome: BatchOutcome) -> dict[str, Any]:
    return {"data": [{"id": new.message_id, "status": new.status,
                      "suppressed": _suppressed_view(new), **_schedule_view(new)}
                     for new in outcome.sent],
            "errors": [{"index": r.index, "error": r.error} for r in outcome.rejected]}


def list_view(listed: EmailList) -> dict[str, Any]:
    return {
        "data": [{"id": e.message_id, "from": e.from_address, "to": e.to, "subject": e.subject,
                  "status": e.status, "created_at": iso(e.created_at, whole_seconds=True)}
                 for e in listed.emails],
        "total": listed.total, "page": listed.page, "per_page": listed.per_page,
        "stats": listed.stats,
    }


def detail_view(e: EmailDetail) -> dict[str, Any]:
    return {
        "id": e.message_id, "from": e.from_address, "to": e.to, "cc": e.cc, "bcc": e.bcc,
        "reply_to": e.reply_to, "subject": e.subject, "html": e.html, "text": e.text,
        "headers": e.headers, "tags": e.tags, "attachments": e.attachments,
        "template_id": e.template_id, "template_data": e.template_data, "status": e.status,
        "created_at": iso(e.created_at, whole_seconds=True),
        "sent_at": iso(e.sent_at, whole_seconds=True),
        "delivered_at": iso(e.delivered_at, whole_seconds=True),
        "failure_reason": e.failure_reason,
        "recipients": [{"email": r.email, "outcome": r.outcome,
                        "bounce_class": r.bounce_class, "response": r.response,
                        "updated_at": iso(r.at, whole_seconds=True)} for r in e.recipients],
        "opens": e.opens, "clicks": e.clicks,
        "first_opened_at": iso(e.first_opened_at, whole_seconds=True),
        "first_clicked_at": iso(e.first_clicked_at, whole_seconds=True),
        "scheduled_at": iso(e.scheduled_at, whole_seconds=True),
    }


def register(api: Api) -> None:
    bus = api.services.bus

    @api.route("POST", "/emails", permission=Permission.sending_access, summary="Send email",
               tag="Emails", body=SEND_EMAIL, response=SEND_RESPONSE, errors=(409,),
               headers=IDEMPOTENCY_HEADER)
    async def send_email(ctx: RequestContext) -> Any:
        async def send() -> dict[str, Any]:
            new = await bus.handle(SendEmail(ctx.user_id, ctx.body, current_traceparent()))
            log.debug("email queued", message_id=new.message_id, status=new.status)
            return accepted_view(new)

        return await idempotent(api, ctx, "/emails", send)

    @api.route("POST", "/emails/batch", permission=Permission.sending_access,
               summary="Send batch emails", tag="Emails", body=SEND_BATCH,
               response=BATCH_RESPONSE, errors=(409,), headers=IDEMPOTENCY_HEADER,
               validate_body=False)
    async def send_batch(ctx: RequestContext) -> Any:
        command = _batch_command(ctx)

        async def send() -> dict[str, Any]:
            outcome = await bus.handle(command)
            for new in outcome.sent:
                log.debug("email queued", message_id=new.message_id, status=new.status)
            return batch_view(outcome)

        return await idempotent(api, ctx, "/emails/batch", send)

    @api.route("GET", "/emails", permission=Permission.read_only, summary="List emails",
               tag="Emails", query=LIST_QUERY, response=LIST_RESPONSE)
    async def list_emails(ctx: RequestContext) -> Any:
        q = ctx.query
        return list_view(await bus.handle(ListEmails(
            user_id=ctx.user_id, page=q["page"], per_page=q["per_page"], status=q["status"],
            created_at_from=q["created_at_from"], created_at_to=q["created_at_to"])))

    @api.route("GET", "/emails/{message_id}", permission=Permission.read_only,
               summary="Get email", tag="Emails", response=EMAIL_DETAIL, errors=(404,))
    async def get_email(ctx: RequestContext) -> Any:
        return detail_view(await bus.handle(GetEmail(ctx.user_id, ctx.path["message_id"])))


def _batch_command(ctx: RequestContext) -> SendBatch:
    """The envelope is checked as a whole (a 422); each item on its own (an error by index)."""
    try:
        envelope = _BATCH_ENVELOPE.validate(ctx.body, ("body",))
    except SchemaError as exc:
        raise ValidationFailed(exc.errors) from None
    valid: list[tuple[int, dict[str, Any]]] = []
    invalid: list[tuple[int, str]] = []
    for index, item in enumerate(envelope["emails"]):
        try:
            valid.append((index, SEND_EMAIL.validate(item)))
        except SchemaError as exc:
            invalid.append((index, first_message(exc.errors)))
    return SendBatch(ctx.user_id, valid, invalid, current_traceparent())
