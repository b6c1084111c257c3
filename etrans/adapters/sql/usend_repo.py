"""Queries of the API on the USEND DB: API keys (auth), emails (send, list, get), senders, and
the send path's suppression lookup.

Every method but ``save`` and ``suppressed`` runs its blocking SQLAlchemy work in a worker thread
(:meth:`Database.run`).  ``save`` writes the ``email_messages`` rows and their ``email_outbox``
records with one statement (one transaction): either both exist or neither does (the outbox relay
publishes them, :mod:`etrans.adapters.sql.outbox`).  It is the hot path of POST /emails, so it
runs on the Trio thread over a connection of its own (:mod:`etrans.adapters._net.trio_pq`), and
concurrent ``save`` calls share a statement (:mod:`etrans.adapters.sql.group_commit`): each caller
still returns only once its rows are committed, and its rows are still all-or-nothing.

``suppressed`` (port ``SuppressionLookup``) is on the hot path too, before ``save``: it runs on
the Trio thread over a second connection of its own, and concurrent lookups share one statement
(the same :class:`~etrans.adapters.sql.group_commit.GroupCommit`, here for a read), each address
one probe of the primary key of ``suppressions``.  Measured with ``bench/api.py``: the lookup of
:class:`~etrans.adapters.sql.suppressions_repo.PgSuppressionStore` (a worker thread and a pooled
SQLAlchemy connection per send) took POST /emails from 1,303 to 578 sends/s.  The read of a
stored template by a send (:meth:`UsendRepository.template`) shares that connection
(:mod:`etrans.adapters.sql.template_reads`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import and_, func, select

from etrans.adapters._net.trio_pq import TrioPqConnection
from etrans.adapters.sql.engagement import engagement_summary
from etrans.adapters.sql.group_commit import GroupCommit
from etrans.adapters.sql.template_reads import GroupedTemplateReads
from etrans.adapters.sql.usend import (
    ApiKey,
    EmailMessage,
    EmailOutbox,
    EmailRecipientOutcome,
    Transport,
)
from etrans.app.ports import SendCheckNeeded
from etrans.app.records import ApiKeyRecord, EmailPage, Suppression
from etrans.domain.api_keys import Permission
from etrans.domain.suppressions import normalise_address
from etrans.errors import InvalidInput, RetryLater, UpstreamUnavailable
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.adapters.sql import Database
    from etrans.app.records import EmailFilter, NewEmail
    from etrans.app.template_records import Template

log = get_logger(__name__)

_KEYS = ApiKey.__table__
_EMAILS = EmailMessage.__table__
_OUTCOMES = EmailRecipientOutcome.__table__
_OUTBOX = EmailOutbox.__table__
_TRANSPORT = Transport.__table__

# One statement writes every email of a group, its outbox record and the outcomes of its
# suppressed recipients with their email.suppressed events (outbox records without message_id;
# ``events`` is null for an email without suppressed recipients) (autocommit: one statement,
# one transaction).  A scheduled email's outbox record waits for its ``scheduled_at``
# (``due_at``); its email.suppressed events do not.  $1 is a JSON array of rows
# (see ``_row``); ``n`` keeps the outbox ids in the callers' order.  ``g`` numbers the callers
# (``save`` calls): a caller with a guarded email (``guard``: its normalised recipients) one of
# whose recipients is on its user's suppression list gets none of its rows written, and its
# ``g`` is returned (the send path then looks the list up and prepares it again); so too a
# caller with an email rendered from a template (``template_key``) that is no longer at
# ``template_version`` (its ``updated_at``), or gone.
# ``payload`` is the Kafka message as text (convert_to gives back its UTF-8 bytes), null for an
# email whose every recipient is suppressed: it gets no outbox record.
# Prepared once per connection (parsed and planned once, not per round): PostgreSQL CPU per
# send 0.35-0.40 ms before, 0.20-0.21 ms after (bench/api.py, docs/performance.md).
_INSERT_EMAILS_AND_OUTBOX = b"""
WITH r AS (
    SELECT * FROM json_to_recordset($1::json) AS r(
        n int, message_id text, user_id bigint, domain_id bigint, from_address text,
        to_addresses jsonb, cc_addresses jsonb, bcc_addresses jsonb, reply_to text, subject text,
        html text, "text" text, headers jsonb, tags jsonb, attachments jsonb, template_id text,
        template_data jsonb, status text, created_at timestamptz, suppressed json, topic text,
        key text, payload text, events json, scheduled_at timestamptz, g int, guard jsonb,
        traceparent text, template_key bigint, template_version timestamptz)
), refused AS (
    SELECT r.g FROM r
    CROSS JOIN jsonb_array_elements_text(r.guard) AS a(address)
    JOIN suppressions AS s ON s.user_id = r.user_id AND s.address = a.address
    UNION
    SELECT r.g FROM r WHERE r.template_key IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM email_templates AS t WHERE t.id = r.template_key
        AND t.user_id = r.user_id AND t.updated_at = r.template_version)
), email AS (
    INSERT INTO email_messages (message_id, user_id, domain_id, from_address, to_addresses,
        cc_addresses, bcc_addresses, reply_to, subject, html, text, headers, tags, attachments,
        template_id, template_data, status, created_at, updated_at, scheduled_at, traceparent)
    SELECT message_id, user_id, domain_id, from_address, to_addresses, cc_addresses,
        bcc_addresses, reply_to, subject, html, "text", headers, tags, attachments, template_id,
        template_data, status, created_at, created_at, scheduled_at, traceparent
    FROM r WHERE r.g NOT IN (SELECT g FROM refused) ORDER BY n
    RETURNING message_id
), suppressed AS (
    INSERT INTO email_recipient_outcomes (message_id, recipient, outcome, response, event_at,
        updated_at)
    SELECT email.message_id, s.recipient, 'suppressed', s.reason, r.created_at, r.created_at
    FROM email JOIN r USING (message_id)
    CROSS JOIN json_to_recordset(r.suppressed) AS s(recipient text, reason text)
), events AS (
    INSERT INTO email_outbox (topic, key, payload, created_at, traceparent)
    SELECT e.topic, e.key, convert_to(e.payload, 'UTF8'), r.created_at, r.traceparent
    FROM email JOIN r USING (message_id)
    CROSS JOIN json_to_recordset(r.events) AS e(topic text, key text, payload text)
    WHERE r.events IS NOT NULL
), queued AS (
    INSERT INTO email_outbox (topic, key, payload, message_id, created_at, due_at, traceparent)
    SELECT r.topic, r.key, convert_to(r.payload, 'UTF8'), email.message_id, r.created_at,
        r.scheduled_at, r.traceparent
    FROM email JOIN r USING (message_id) WHERE r.payload IS NOT NULL ORDER BY r.n
)
SELECT g FROM refused
"""


# A round's statement carries every email of the round (Kafka payload with attachments, html,
# text) in one parameter, and PostgreSQL refuses a value over 1 GB: rounds stop at 64 MB (one
# email alone may pass it; the API caps a request at 25 MB).
_MAX_ROUND_BYTES = 64 * 1024 * 1024


@dataclass(eq=False)
class SaveCall:
    """One ``save`` call in a group commit: refused when one of its guarded emails has a
    listed recipient (then none of its rows is written)."""

    refused: bool = False


def _size(item: tuple[SaveCall, NewEmail]) -> int:
    e = item[1]
    return len(e.kafka_value) + len(e.html or "") + len(e.text or "") + 1024


def _row(n: int, e: NewEmail, g: int = 0) -> dict[str, Any]:
    return {
        "g": g, "guard": list(e.guard) if e.guard is not None else None,
        "template_key": e.template_version[0] if e.template_version else None,
        "template_version": e.template_version[1].isoformat() if e.template_version else None,
        "n": n, "message_id": e.message_id, "user_id": e.user_id, "domain_id": e.domain_id,
        "from_address": e.from_address, "to_addresses": e.to, "cc_addresses": e.cc,
        "bcc_addresses": e.bcc, "reply_to": e.reply_to, "subject": e.subject, "html": e.html,
        "text": e.text, "headers": e.headers, "tags": e.tags, "attachments": e.attachments,
        "template_id": e.template_id, "template_data": e.template_data, "status": e.status,
        "created_at": e.created_at.isoformat(), "suppressed": suppressed_outcomes(e),
        "topic": e.topic, "key": e.kafka_key.decode() if e.published else None,
        "payload": e.kafka_value.decode() if e.published else None,
        "events": [{"topic": topic, "key": key.decode(), "payload": value.decode()}
                   for topic, key, value in e.events] or None,
        "scheduled_at": e.scheduled_at.isoformat() if e.scheduled_at else None,
        "traceparent": e.traceparent,
    }


def suppressed_outcomes(e: NewEmail) -> list[dict[str, str]]:
    """The ``email_recipient_outcomes`` of the email's suppressed recipients: the normalised
    address (the table's recipients are lower-cased) and the reason as the response."""
    return [{"recipient": normalise_address(s.email), "reason": s.reason} for s in e.suppressed]


# The lookups of concurrent sends in one statement: $1 is a JSON array of {user_id, address}.
_SUPPRESSED = b"""
SELECT s.user_id, s.address, s.reason, s.message_id, s.response, s.created_at
FROM json_to_recordset($1::json) AS w(user_id bigint, address text)
JOIN suppressions AS s ON s.user_id = w.user_id AND s.address = w.address
"""


@dataclass(eq=False)
class _Lookup:
    """One send's lookup: its user and addresses, and what the shared statement found."""

    user_id: int
    addresses: list[str]
    found: dict[str, Suppression] = field(default_factory=dict)


_LIST_COLUMNS = (
    _EMAILS.c.message_id, _EMAILS.c.from_address, _EMAILS.c.to_addresses, _EMAILS.c.subject,
    _EMAILS.c.status, _EMAILS.c.created_at,
)


class UsendRepository:
    name = "usend_db"

    # Errors of ``_save`` that belong to the data (one caller's rows), not to the connection.
    data_errors: tuple[type[Exception], ...] = (psycopg.IntegrityError, psycopg.DataError)

    def __init__(self, db: Database) -> None:
        self._db = db
        self._writer_connection: TrioPqConnection | None = None  # opened by the first save
        # Requests saving while a commit is in flight are written together by the next one;
        # a data error in the shared statement retries each request's rows on their own.
        self._writer: GroupCommit[tuple[SaveCall, NewEmail]] = GroupCommit(
            self._save, split_on=self.data_errors, weight=_size, max_weight=_MAX_ROUND_BYTES)
        self._reader_connection: TrioPqConnection | None = None  # opened by the first lookup
        self._lookups: GroupCommit[_Lookup] = GroupCommit(self._look_up)
        self._template_reads = GroupedTemplateReads(self._reader)

    # -- API keys ------------------------------------------------------------------------------

    async def find_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The live key of that hash; UpstreamUnavailable (503) when the database cannot answer
        (authentication must not turn an outage into a 500, nor into a 401)."""
        from sqlalchemy.exc import InterfaceError, OperationalError
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        try:
            return await self._db.run(self._find_by_hash, key_hash)
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            log.warning("api key lookup: database unavailable", error=type(exc).__name__)
            raise UpstreamUnavailable("Database unavailable") from None

    def _find_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        query = select(_KEYS.c.id, _KEYS.c.user_id, _KEYS.c.permission, _KEYS.c.expires_at).where(
            _KEYS.c.key_hash == key_hash, _KEYS.c.active.is_(True), _KEYS.c.deleted_at.is_(None)
        )
        with self._db.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return ApiKeyRecord(id=row.id, user_id=row.user_id,
                            permission=Permission[row.permission], expires_at=row.expires_at)

    # -- senders (transport) ------------------------------------------------------------------

    async def cache_value(self, user_id: int, domain: str) -> str | None:
        """The encrypted credentials of the user's active sender: one of ``domain`` first, else
        the user's most recent one."""
        return await self._db.run(self._cache_value, user_id, domain)

    def _cache_value(self, user_id: int, domain: str) -> str | None:
        query = (
            select(_TRANSPORT.c.password_encrypted)
            .where(_TRANSPORT.c.user_id == user_id, _TRANSPORT.c.active.is_(True))
            .order_by((_TRANSPORT.c.domain == domain).desc(), _TRANSPORT.c.id.desc())
            .limit(1)
        )
        with self._db.engine.connect() as conn:
            return conn.execute(query).scalar()

    # -- emails ---------------------------------------------------------------------------------

    async def save(self, emails: Sequence[NewEmail]) -> None:
        if not emails:
            return
        call = SaveCall()
        try:
            await self._writer.write([(call, e) for e in emails])
        except psycopg.DataError as exc:
            # The data itself was refused (the request schema should have caught it): a 400,
            # not a 503 "please retry" that could never succeed.
            raise InvalidInput(f"The email could not be stored: {exc.sqlstate} "
                               f"{type(exc).__name__}") from exc
        if call.refused:
            raise SendCheckNeeded

    def statistics(self) -> dict[str, Any]:
        return {"group_commit": self._writer.statistics()}

    async def _save(self, items: list[tuple[SaveCall, NewEmail]]) -> None:
        if not items:
            return
        if self._writer_connection is None:
            self._writer_connection = TrioPqConnection.from_sqlalchemy_url(self._db.engine.url)
        calls: dict[SaveCall, int] = {}
        rows = json.dumps([_row(n, e, calls.setdefault(call, len(calls)))
                           for n, (call, e) in enumerate(items)], ensure_ascii=False,
                          separators=(",", ":"))
        result = await self._writer_connection.execute(_INSERT_EMAILS_AND_OUTBOX, [rows],
                                                       prepared=b"etrans_save_emails")
        refused = {int(g or -1) for (g,) in result.rows}
        for call, g in calls.items():
            call.refused = g in refused

    async def aclose(self) -> None:
        if self._writer_connection is not None:
            await self._writer_connection.aclose()
        if self._reader_connection is not None:
            await self._reader_connection.aclose()

    # -- the suppression list (the send path's lookup) ------------------------------------------

    async def suppressed(self, user_id: int, addresses: Sequence[str]) -> dict[str, Suppression]:
        wanted = sorted({a for a in addresses if a})
        if not wanted:
            return {}
        lookup = _Lookup(user_id, wanted)
        try:
            await self._lookups.write([lookup])
        except psycopg.Error as exc:
            raise RetryLater(f"suppression lookup failed: {type(exc).__name__}") from exc
        return lookup.found

    async def _reader(self) -> TrioPqConnection:
        if self._reader_connection is None:
            self._reader_connection = TrioPqConnection.from_sqlalchemy_url(self._db.engine.url)
        return self._reader_connection

    async def template(self, user_id: int, template_id: int) -> Template | None:
        """The send path's read of a stored template (port ``TemplateSource``)."""
        try:
            return await self._template_reads.get(user_id, template_id)
        except psycopg.OperationalError as exc:
            raise UpstreamUnavailable("USEND DB unavailable", retry_after_seconds=5) from exc

    async def _look_up(self, lookups: list[_Lookup]) -> None:
        wanted = json.dumps([{"user_id": one.user_id, "address": address}
                             for one in lookups for address in one.addresses])
        result = await (await self._reader()).execute(_SUPPRESSED, [wanted])
        waiting: dict[tuple[int, str], list[_Lookup]] = {}
        for one in lookups:
            for address in one.addresses:
                waiting.setdefault((one.user_id, address), []).append(one)
        for row in result.rows:
            user_id, listed, reason, message_id, response, created_at = row
            entry = Suppression(
                user_id=int(user_id or 0), address=listed or "", reason=reason or "",
                message_id=message_id, response=response,
                created_at=datetime.fromisoformat(created_at) if created_at else None)
            for one in waiting.get((entry.user_id, entry.address), ()):
                one.found[entry.address] = entry

    async def list(self, query: EmailFilter) -> EmailPage:
        return await self._db.run(self._list, query)

    def _list(self, query: EmailFilter) -> EmailPage:
        conditions = [_EMAILS.c.user_id == query.user_id]
        if query.raw_statuses is not None:
            conditions.append(_EMAILS.c.status.in_(query.raw_statuses))
        if query.created_from is not None:
            conditions.append(_EMAILS.c.created_at >= query.created_from)
        if query.created_to is not None:
            conditions.append(_EMAILS.c.created_at <= query.created_to)
        where = and_(*conditions)
        page = (
            select(*_LIST_COLUMNS).where(where)
            .order_by(_EMAILS.c.created_at.desc(), _EMAILS.c.id.desc())
            .offset((query.page - 1) * query.per_page).limit(query.per_page)
        )
        counts = select(_EMAILS.c.status, func.count()).where(where).group_by(_EMAILS.c.status)
        with self._db.engine.connect() as conn:
            status_counts = {status: int(n) for status, n in conn.execute(counts)}
            # A page past the last row is empty: not asked for, since PostgreSQL reads every
            # row it skips (page 1000000 of a user with 2M emails: 3.7 s, all for nothing).
            beyond = (query.page - 1) * query.per_page >= sum(status_counts.values())
            rows = [] if beyond else [dict(row._mapping) for row in conn.execute(page)]
        return EmailPage(rows=rows, status_counts=status_counts)

    async def get(self, user_id: int, message_id: str) -> dict[str, Any] | None:
        return await self._db.run(self._get, user_id, message_id)

    def _get(self, user_id: int, message_id: str) -> dict[str, Any] | None:
        query = select(_EMAILS).where(_EMAILS.c.user_id == user_id,
                                      _EMAILS.c.message_id == message_id)
        outcomes = (select(_OUTCOMES.c.recipient, _OUTCOMES.c.outcome, _OUTCOMES.c.bounce_class,
                           _OUTCOMES.c.response, _OUTCOMES.c.event_at)
                    .where(_OUTCOMES.c.message_id == message_id)
                    .order_by(_OUTCOMES.c.recipient))
        with self._db.engine.connect() as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            recipients = [dict(r._mapping) for r in conn.execute(outcomes)]
            engagement = engagement_summary(conn, message_id)
        # Each recipient the delivery log reported on (fetchlog): email_recipient_outcomes; the
        # opens and clicks: email_engagement_events.
        return {**row._mapping, "recipients": recipients, **engagement}

    async def existing_message_ids(self, message_ids: Sequence[str]) -> set[str]:
        ids = sorted({m for m in message_ids if m})
        if not ids:
            return set()
        return await self._db.run(self._existing, ids)

    def _existing(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self._db.engine.connect() as conn:
            # Chunks: one statement stays far below PostgreSQL's 65,535 bind parameters.
            for start in range(0, len(ids), 5_000):
                query = select(_EMAILS.c.message_id).where(
                    _EMAILS.c.message_id.in_(ids[start:start + 5_000]))
                found.update(row[0] for row in conn.execute(query))
        return found


__all__ = ["UsendRepository"]
