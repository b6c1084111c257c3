"""The release of scheduled emails on PostgreSQL (:meth:`PgOutboxStore.release_due
<etrans.adapters.sql.outbox_store.PgOutboxStore.release_due>`) with the suppression list checked
again (:mod:`etrans.app.scheduled_release`).

One transaction on the relay's connection: the due rows are locked (``FOR UPDATE SKIP LOCKED``,
by the waiting rows' index, the outbox before the emails: the order of the schedule's cancel and
move, :mod:`etrans.adapters.sql.schedules_repo`) and their emails' recipients read with the
recipients already suppressed when they were accepted (``BEGIN`` with the claim, one round
trip); the screen looks the list up (one lookup per user, on the send path's connection); then
what it found is written and the rows released with the ``COMMIT`` (one round trip when nothing
was newly suppressed).  Until the commit the rows are held, so a row is released once; a failure
or a crash before it rolls everything back and the rows stay due.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import trio

from etrans.app.scheduled_release import DueEmail

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.adapters._net.trio_pq import TrioPqConnection
    from etrans.app.schedule_ports import DueEmailScreen
    from etrans.app.scheduled_release import Release

# Only integers are formatted in (simple query protocol, after BEGIN).
_CLAIM_DUE = """BEGIN;
SELECT o.id, o.message_id, o.traceparent, e.user_id, e.to_addresses::text,
    e.cc_addresses::text, e.bcc_addresses::text,
    (SELECT json_agg(r.recipient) FROM email_recipient_outcomes AS r
     WHERE r.message_id = e.message_id AND r.outcome = 'suppressed')::text, e.from_address
FROM (
    SELECT id, message_id, traceparent, due_at FROM email_outbox
    WHERE published_at IS NULL AND failed_at IS NULL AND due_at IS NOT NULL AND due_at <= now()
    ORDER BY due_at LIMIT {limit:d} FOR UPDATE SKIP LOCKED
) AS o
LEFT JOIN email_messages AS e ON e.message_id = o.message_id AND e.status = 'scheduled'
ORDER BY o.due_at
"""
# The rows left: pending, their emails queued; then the commit.
_RELEASE_AND_COMMIT = """WITH released AS (
    UPDATE email_outbox SET due_at = NULL WHERE id = ANY('{ids}'::bigint[])
    RETURNING message_id
)
UPDATE email_messages SET status = 'queued', updated_at = now()
WHERE message_id IN (SELECT message_id FROM released) AND status = 'scheduled';
COMMIT"""
_READ_PAYLOADS = b"""
SELECT id, encode(payload, 'hex') FROM email_outbox WHERE id = ANY($1::bigint[])
"""
_REWRITE_PAYLOAD = b"""
UPDATE email_outbox SET payload = $2::bytea WHERE id = $1::bigint
"""
# $1: [{message_id, recipient, reason}] (the recipient normalised), and their events
# [{topic, key, payload, traceparent}] as outbox records of their own (released at once).
_WRITE_SUPPRESSED = b"""
WITH outcomes AS (
    INSERT INTO email_recipient_outcomes (message_id, recipient, outcome, response, event_at,
        updated_at)
    SELECT s.message_id, s.recipient, 'suppressed', s.reason, now(), now()
    FROM json_to_recordset($1::json) AS s(message_id text, recipient text, reason text)
    ON CONFLICT (message_id, recipient) DO UPDATE SET outcome = 'suppressed',
        response = excluded.response, updated_at = excluded.updated_at
)
INSERT INTO email_outbox (topic, key, payload, created_at, traceparent)
SELECT e.topic, e.key, convert_to(e.payload, 'UTF8'), now(), e.traceparent
FROM json_to_recordset($2::json) AS e(topic text, key text, payload text, traceparent text)
"""
# An email whose sending domain went away: never handed to the delivery queue; the row failed
# (never retried), the email failed with the reason (GET /emails/{id} failure_reason).
_FAIL = b"""
WITH failed AS (
    UPDATE email_outbox AS o SET failed_at = now(), due_at = NULL, last_error = f.response
    FROM json_to_recordset($1::json) AS f(id bigint, response text) WHERE o.id = f.id
    RETURNING o.message_id, f.response
)
UPDATE email_messages AS e SET status = 'failed', last_event = 'outbox',
    response = failed.response, updated_at = now()
FROM failed WHERE e.message_id = failed.message_id AND e.status = 'scheduled'
"""
# An email with no recipient left: never sent, its send request gone with the transaction.
_DROP_SUPPRESSED = b"""
WITH dropped AS (
    DELETE FROM email_outbox WHERE id = ANY($1::bigint[]) RETURNING message_id
)
UPDATE email_messages SET status = 'suppressed', updated_at = now()
WHERE message_id IN (SELECT message_id FROM dropped) AND status = 'scheduled'
"""


async def release_due(conn: TrioPqConnection, screen: DueEmailScreen, limit: int) -> int:
    """Release up to ``limit`` due rows, earliest first; how many (those dropped included)."""
    try:
        found = await conn.execute_script(_CLAIM_DUE.format(limit=int(limit)).encode())
        ids = [int(values[0] or 0) for values in found.rows]
        if not ids:
            await conn.execute(b"COMMIT")
            return 0
        due = [_due(values) for values in found.rows if values[3] is not None]
        releases = list(await screen.screen(due)) if due else []
        if releases:
            traceparents = {int(values[0] or 0): values[2] for values in found.rows}
            await _write(conn, releases, traceparents)
        dropped = {r.row_id for r in releases if r.nothing_left or r.failure is not None}
        await conn.execute_script(_RELEASE_AND_COMMIT.format(
            ids=_pg_array([i for i in ids if i not in dropped])).encode())
    except BaseException:
        # As a relay pass: roll back, shielded but within 5 s (a ROLLBACK that fails closes the
        # connection, and the transaction goes with it).
        with trio.move_on_after(5) as cleanup:
            cleanup.shield = True
            if conn.connected:
                try:
                    await conn.execute(b"ROLLBACK")
                except Exception:
                    await conn.aclose()
        raise
    return len(ids)


def _due(values: tuple[str | None, ...]) -> DueEmail:
    _, message_id, _, user_id, to, cc, bcc, suppressed, from_address = values
    return DueEmail(int(values[0] or 0), message_id or "", int(user_id or 0),
                    tuple(json.loads(to or "[]")), tuple(json.loads(cc or "null") or ()),
                    tuple(json.loads(bcc or "null") or ()),
                    frozenset(json.loads(suppressed or "null") or ()), from_address or "")


async def _write(conn: TrioPqConnection, releases: Sequence[Release],
                 traceparents: dict[int, str | None]) -> None:
    from etrans.domain.suppressions import normalise_address

    await conn.execute(_WRITE_SUPPRESSED, [
        json.dumps([{"message_id": r.message_id, "recipient": normalise_address(s.email),
                     "reason": s.reason} for r in releases for s in r.suppressed]),
        json.dumps([{"topic": topic, "key": key.decode(), "payload": value.decode(),
                     "traceparent": traceparents.get(r.row_id)}
                    for r in releases for topic, key, value in r.events])])
    failed = [{"id": r.row_id, "response": r.failure} for r in releases if r.failure is not None]
    if failed:
        await conn.execute(_FAIL, [json.dumps(failed)])
    dropped = [r.row_id for r in releases if r.nothing_left]
    if dropped:
        await conn.execute(_DROP_SUPPRESSED, [_pg_array(dropped)])
    rewritten = {r.row_id: r for r in releases if r.suppressed and not r.nothing_left}
    if rewritten:
        found = await conn.execute(_READ_PAYLOADS, [_pg_array(list(rewritten))])
        for row_id, payload in found.rows:
            release = rewritten[int(row_id or 0)]
            new = release.payload(bytes.fromhex(payload or ""))
            await conn.execute(_REWRITE_PAYLOAD, [str(release.row_id), b"\\x" + new.hex().encode()])


def _pg_array(ids: Sequence[int]) -> str:
    return "{" + ",".join(map(str, ids)) + "}"
