"""The API's USEND DB queries: PostgreSQL (``UsendRepository``), the ``etrans dev`` SQLite file
(``SqliteUsendRepository``) and, for the EmailStore part, the fake of the unit tests.

What the use cases rely on (:mod:`etrans.app.ports`):

- EmailStore: ``save`` stores the rows and their outbox records all or nothing (a failed batch
  leaves none of its rows), with the outcome ``suppressed`` of each suppressed recipient (the
  reason as the response) in the same transaction, and no outbox record for an email whose
  status is ``suppressed``, data the database cannot hold is refused with InvalidInput (400,
  never a retry), concurrent saves are all stored; ``get``/``list`` only ever answer the user's
  own emails, as they were saved (addresses, JSON fields, aware timestamps), newest first,
  filtered by status and creation time (bounds included), with the counts of the whole set;
  ``existing_message_ids`` answers which ids are emails.
- ApiKeyStore: the live key of a hash (active, not deleted; expiry is the caller's check).
- SenderCredentials: the user's active sender of the domain, else the most recent one.
- MessageOwners (fetchlog): who sent each message id that is an email.
- SuppressionLookup (the send path): each caller gets its user's entries among its addresses,
  also when concurrent lookups share one statement; an outage is RetryLater.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import trio

from etrans.app.records import ApiKeyRecord, EmailFilter, SuppressedRecipient, Suppression
from etrans.domain.api_keys import Permission
from etrans.errors import InvalidInput, RetryLater, UpstreamUnavailable
from tests.contract.usend_backends import fresh_id, fresh_user, new_email, unreachable_backend

if TYPE_CHECKING:
    from pathlib import Path

T0 = datetime(2026, 3, 10, 14, 30, 15, 123456, tzinfo=UTC)


async def test_an_email_reads_back_as_it_was_saved(email_store: Any) -> None:
    repo, user = email_store.repo, fresh_user()
    email = new_email(user, reply_to="r@a.example")
    await repo.save([email])
    row = await repo.get(user, email.message_id)
    assert row is not None
    assert {name: row[name] for name in (
        "message_id", "user_id", "domain_id", "from_address", "to_addresses", "cc_addresses",
        "bcc_addresses", "reply_to", "subject", "html", "text", "headers", "tags",
        "attachments", "template_id", "template_data", "status", "sent_at", "delivered_at",
        "response")} == {
        "message_id": email.message_id, "user_id": user, "domain_id": 11,
        "from_address": "Alice <alice@a.example>", "to_addresses": ["bob@x.org", "Zoë <z@x.org>"],
        "cc_addresses": [], "bcc_addresses": ["hidden@x.org"], "reply_to": "r@a.example",
        "subject": "Hello ✓", "html": "<p>Hi</p>", "text": "Hi",
        "headers": {"X-Campaign": "spring"}, "tags": [{"name": "k", "value": "v"}],
        "attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "size": 3}],
        "template_id": None, "template_data": {"name": "Zoë"}, "status": "queued",
        "sent_at": None, "delivered_at": None, "response": None}
    assert row["created_at"] == T0
    assert row["created_at"].utcoffset() is not None


async def test_saved_rows_come_with_their_outbox_records(usend: Any) -> None:
    user = fresh_user()
    emails = [new_email(user) for _ in range(3)]
    await usend.repo.save(emails)
    assert usend.outbox([e.message_id for e in emails]) == [
        ("sendmail", e.message_id, e.kafka_value, e.message_id) for e in emails]


async def test_suppressed_recipients_are_stored_with_the_email(email_store: Any) -> None:
    repo, user = email_store.repo, fresh_user()
    mixed = new_email(user, suppressed=(SuppressedRecipient("Bob@X.org", "hard_bounce"),))
    none_left = new_email(user, status="suppressed", kafka_key=b"", kafka_value=b"",
                          suppressed=(SuppressedRecipient("z@x.org", "manual"),
                                      SuppressedRecipient("HIDDEN@x.org", "complaint"),
                                      SuppressedRecipient("bob@x.org", "hard_bounce")))
    plain = new_email(user)
    await repo.save([mixed, plain, none_left])
    row = await repo.get(user, mixed.message_id)
    assert row is not None
    assert row["status"] == "queued"
    assert row["to_addresses"] == ["bob@x.org", "Zoë <z@x.org>"]  # as requested
    assert [(r["recipient"], r["outcome"], r["bounce_class"], r["response"], r["event_at"])
            for r in row["recipients"]] == [("bob@x.org", "suppressed", None, "hard_bounce", T0)]
    row = await repo.get(user, none_left.message_id)
    assert row is not None
    assert row["status"] == "suppressed"
    assert [(r["recipient"], r["response"]) for r in row["recipients"]] == [
        ("bob@x.org", "hard_bounce"), ("hidden@x.org", "complaint"), ("z@x.org", "manual")]
    page = await repo.list(EmailFilter(user_id=user, raw_statuses=("suppressed",)))
    assert [r["message_id"] for r in page.rows] == [none_left.message_id]
    assert page.status_counts == {"suppressed": 1}
    ids = [mixed.message_id, plain.message_id, none_left.message_id]
    published = (email_store.outbox(ids) if email_store.name != "fake"
                 else [(t, k.decode(), v, k.decode()) for t, k, v in repo.outbox])
    assert [m for *_, m in published] == ids[:2]  # none for the suppressed email


async def test_a_user_sees_only_their_own_emails(email_store: Any) -> None:
    repo, alice, bob = email_store.repo, fresh_user(), fresh_user()
    mine, theirs = new_email(alice), new_email(bob)
    await repo.save([mine, theirs])
    assert await repo.get(alice, theirs.message_id) is None
    assert await repo.get(bob, mine.message_id) is None
    assert await repo.get(alice, fresh_id()) is None
    page = await repo.list(EmailFilter(user_id=alice))
    assert [row["message_id"] for row in page.rows] == [mine.message_id]
    assert page.status_counts == {"queued": 1}


async def test_the_list_is_newest_first_filtered_and_paged(email_store: Any) -> None:
    repo, user = email_store.repo, fresh_user()
    emails = [new_email(user, created_at=T0 + timedelta(minutes=n)) for n in range(5)]
    twin = new_email(user, created_at=T0 + timedelta(minutes=4))  # same time: saved later first
    await repo.save(emails[:3])
    await repo.save([emails[3]])
    await repo.save([emails[4], twin])
    newest = [twin, *reversed(emails)]
    page = await repo.list(EmailFilter(user_id=user, per_page=4))
    assert [row["message_id"] for row in page.rows] == [e.message_id for e in newest[:4]]
    assert set(page.rows[0]) == {"message_id", "from_address", "to_addresses", "subject",
                                 "status", "created_at"}
    assert page.status_counts == {"queued": 6}
    second = await repo.list(EmailFilter(user_id=user, page=2, per_page=4))
    assert [row["message_id"] for row in second.rows] == [e.message_id for e in newest[4:]]
    window = await repo.list(EmailFilter(user_id=user, created_from=emails[1].created_at,
                                         created_to=emails[3].created_at))
    assert [row["message_id"] for row in window.rows] == [
        e.message_id for e in reversed(emails[1:4])]  # bounds included
    assert window.status_counts == {"queued": 3}
    none = await repo.list(EmailFilter(user_id=user, raw_statuses=("delivered", "sent")))
    assert (none.rows, none.status_counts) == ([], {})
    queued = await repo.list(EmailFilter(user_id=user, raw_statuses=("queued",), per_page=1))
    assert (len(queued.rows), queued.status_counts) == (1, {"queued": 6})


async def test_a_page_past_the_last_row_is_not_read(usend: Any) -> None:
    """The counts come first: past the last row the page is empty without a query that would
    make the database skip every row of the user (page 1000000 of 2M emails took 3.7 s)."""
    from sqlalchemy import event

    repo, user = usend.repo, fresh_user()
    await repo.save([new_email(user, created_at=T0 + timedelta(minutes=n)) for n in range(3)])
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(usend.db.engine, "before_cursor_execute", seen)
    try:
        far = await repo.list(EmailFilter(user_id=user, page=1_000_000, per_page=100))
        last = await repo.list(EmailFilter(user_id=user, page=2, per_page=2))
    finally:
        event.remove(usend.db.engine, "before_cursor_execute", seen)
    assert (far.rows, far.status_counts) == ([], {"queued": 3})
    assert (len(last.rows), last.status_counts) == (1, {"queued": 3})
    assert [s for s in statements if "OFFSET" in s.upper()] == statements[-1:], statements


async def test_which_ids_are_emails(email_store: Any) -> None:
    repo, user = email_store.repo, fresh_user()
    emails = [new_email(user) for _ in range(2)]
    await repo.save(emails)
    unknown = fresh_id()
    assert await repo.existing_message_ids([emails[0].message_id, unknown, "",
                                            emails[1].message_id, emails[0].message_id]) == {
        emails[0].message_id, emails[1].message_id}
    assert await repo.existing_message_ids([]) == set()


async def test_a_failed_save_stores_none_of_its_rows(email_store: Any) -> None:
    repo, user = email_store.repo, fresh_user()
    first = new_email(user)
    await repo.save([first])
    batch = [new_email(user), new_email(user, message_id=first.message_id), new_email(user)]
    with pytest.raises(Exception):  # noqa: B017, PT011 - the store's own error: a 503 upstream
        await repo.save(batch)
    assert await repo.existing_message_ids([e.message_id for e in batch]) == {first.message_id}
    page = await repo.list(EmailFilter(user_id=user))
    assert page.status_counts == {"queued": 1}


@pytest.mark.parametrize("fields", [
    {"from_address": "a" * 620 + "@a.example" + "x" * 20},  # 650 > 640 characters
    {"template_id": "t" * 256},
    {"reply_to": "r" * 700 + "@a.example"},
], ids=["from_address", "template_id", "reply_to"])
async def test_data_the_database_cannot_hold_is_refused(usend: Any,
                                                        fields: dict[str, Any]) -> None:
    user = fresh_user()
    refused = new_email(user, **fields)
    with pytest.raises(InvalidInput, match="could not be stored"):
        await usend.repo.save([refused])
    assert await usend.repo.existing_message_ids([refused.message_id]) == set()
    assert usend.outbox([refused.message_id]) == []
    fine = new_email(user)  # the store still takes the next one
    await usend.repo.save([fine])
    assert await usend.repo.get(user, fine.message_id) is not None


async def test_concurrent_saves_are_all_stored(email_store: Any) -> None:
    repo, user = email_store.repo, fresh_user()
    emails = [new_email(user) for _ in range(30)]
    async with trio.open_nursery() as nursery:
        for email in emails:
            nursery.start_soon(repo.save, [email])
    assert await repo.existing_message_ids([e.message_id for e in emails]) == {
        e.message_id for e in emails}


# -- the send path's suppression lookup (SuppressionLookup) ----------------------------------------

async def test_concurrent_lookups_each_get_their_own_users_entries(usend: Any) -> None:
    """The lookup ``serve`` wires (one statement for concurrent sends on PostgreSQL): each caller
    gets the entries of its user among its addresses, whatever else shares the statement."""
    from etrans.bootstrap.stores import suppression_store

    alice, bob, carol = fresh_user(), fresh_user(), fresh_user()
    await suppression_store(usend.db).add([
        Suppression(alice, "gone@x.org", "hard_bounce", message_id="m1", response="550 5.1.1"),
        Suppression(alice, "spam@x.org", "complaint"),
        Suppression(bob, "gone@x.org", "manual")])
    asked = {alice: ["gone@x.org", "ok@x.org", "spam@x.org", "gone@x.org"],
             bob: ["gone@x.org", "spam@x.org"], carol: ["gone@x.org"]}
    answers: dict[int, Any] = {}

    async def look_up(user: int) -> None:
        answers[user] = await usend.repo.suppressed(user, asked[user])

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            for user in asked:
                nursery.start_soon(look_up, user)
    assert {user: sorted(found) for user, found in answers.items()} == {
        alice: ["gone@x.org", "spam@x.org"], bob: ["gone@x.org"], carol: []}
    gone = answers[alice]["gone@x.org"]
    assert (gone.user_id, gone.address, gone.reason, gone.message_id, gone.response) == (
        alice, "gone@x.org", "hard_bounce", "m1", "550 5.1.1")
    assert gone.created_at is not None
    assert gone.created_at.utcoffset() is not None
    assert answers[bob]["gone@x.org"].reason == "manual"
    assert await usend.repo.suppressed(alice, []) == {}


# -- API keys and senders (read only: the account use cases write them) ---------------------------

async def test_the_live_key_of_a_hash(usend: Any) -> None:
    from etrans.adapters.sql.usend import ApiKey

    user, now = fresh_user(), datetime.now(UTC)
    hashes = [f"{user:016x}{n:048x}" for n in range(5)]
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    ids = usend.seed(ApiKey.__table__, [
        {"user_id": user, "name": "live", "key_hash": hashes[0], "key_prefix": "etrans_live_a",
         "permission": "sending_access", "expires_at": expires},
        {"user_id": user, "name": "forever", "key_hash": hashes[1], "key_prefix": "etrans_live_b",
         "permission": "read_only"},
        {"user_id": user, "name": "inactive", "key_hash": hashes[2], "key_prefix": "x",
         "permission": "full_access", "active": False},
        {"user_id": user, "name": "deleted", "key_hash": hashes[3], "key_prefix": "x",
         "permission": "full_access", "deleted_at": now},
        {"user_id": user, "name": "expired", "key_hash": hashes[4], "key_prefix": "x",
         "permission": "full_access", "expires_at": now - timedelta(days=1)},
    ])
    live = await usend.repo.find_by_hash(hashes[0])
    assert live == ApiKeyRecord(id=ids[0], user_id=user, permission=Permission.sending_access,
                                expires_at=expires)
    assert live.expires_at.utcoffset() is not None
    assert await usend.repo.find_by_hash(hashes[1]) == ApiKeyRecord(
        id=ids[1], user_id=user, permission=Permission.read_only, expires_at=None)
    assert await usend.repo.find_by_hash(hashes[2]) is None
    assert await usend.repo.find_by_hash(hashes[3]) is None
    expired = await usend.repo.find_by_hash(hashes[4])  # expiry: checked by the caller
    assert expired is not None
    assert expired.id == ids[4]
    assert await usend.repo.find_by_hash("f" * 64) is None


async def test_the_sender_of_the_domain_else_the_most_recent(usend: Any) -> None:
    from etrans.adapters.sql.usend import Transport

    user, other = fresh_user(), fresh_user()
    usend.seed(Transport.__table__, [
        {"user_id": user, "domain": "a.example", "account": f"a{user}@a.example",
         "password_encrypted": "for-a"},
        {"user_id": user, "domain": "b.example", "account": f"b{user}@b.example",
         "password_encrypted": "for-b"},
        {"user_id": user, "domain": "c.example", "account": f"c{user}@c.example",
         "password_encrypted": "inactive", "active": False},
        {"user_id": other, "domain": "d.example", "account": f"d{other}@d.example",
         "password_encrypted": "someone else's"},
    ])
    assert await usend.repo.cache_value(user, "a.example") == "for-a"
    assert await usend.repo.cache_value(user, "b.example") == "for-b"
    assert await usend.repo.cache_value(user, "c.example") == "for-b"  # inactive: not used
    assert await usend.repo.cache_value(user, "d.example") == "for-b"
    assert await usend.repo.cache_value(fresh_user(), "a.example") is None


async def test_the_owners_of_messages_sent_through_the_api(usend: Any) -> None:
    """MessageOwners (fetchlog): the user of each id that is an email; SMTP mail is absent."""
    from etrans.adapters.sql.message_owners import MessageOwnerLookup

    alice, bob = fresh_user(), fresh_user()
    mine, theirs = new_email(alice), new_email(bob)
    await usend.repo.save([mine, theirs])
    owners = MessageOwnerLookup(usend.db)
    smtp = fresh_id()
    assert await owners.owners([mine.message_id, theirs.message_id, smtp, ""]) == {
        mine.message_id: alice, theirs.message_id: bob}
    assert await owners.owners([]) == {}


@pytest.mark.parametrize("name", ["postgres", "sqlite"])
async def test_a_database_that_does_not_answer(name: str, tmp_path: Path) -> None:
    """An outage is never a client error nor a wrong answer: authentication answers 503, fetchlog
    retries later, and a save fails with the store's own error (the use case's 503)."""
    from etrans.adapters.sql.message_owners import MessageOwnerLookup
    from etrans.domain.delivery_log import StatusChange

    down = unreachable_backend(name, tmp_path)
    try:
        with pytest.raises(UpstreamUnavailable):
            await down.repo.find_by_hash("a" * 64)
        with pytest.raises(RetryLater):
            await down.statuses.apply([StatusChange(fresh_id(), "sent", T0)])
        with pytest.raises(RetryLater):
            await MessageOwnerLookup(down.db).owners([fresh_id()])
        with pytest.raises(RetryLater):
            await down.repo.suppressed(fresh_user(), ["a@x.org"])
        with pytest.raises(Exception) as failed:  # noqa: PT011 - the store's own error
            await down.repo.save([new_email(fresh_user())])
        assert not isinstance(failed.value, InvalidInput)
    finally:
        await down.close()


async def test_event_records_are_saved_with_the_email_as_outbox_rows(usend: Any) -> None:
    """The email.suppressed events of an email (``NewEmail.events``) are outbox rows of their
    own, written in the same statement, without a message_id (not send requests)."""
    from sqlalchemy import select

    from etrans.adapters.sql.usend import EmailOutbox

    user = fresh_user()
    key = f"msg_{uuid.uuid4().hex}@x.org"
    events = (("email-events", key.encode(), b'{"id":"evt_1"}'),
              ("email-events", key.encode(), b'{"id":"evt_2"}'))
    with_events = new_email(user, suppressed=(SuppressedRecipient("Bob@X.org", "hard_bounce"),
                                              SuppressedRecipient("c@x.org", "manual")),
                            events=events)
    plain = new_email(user)
    await usend.repo.save([with_events, plain])
    table = EmailOutbox.__table__
    with usend.db.engine.connect() as conn:
        rows = conn.execute(select(table.c.topic, table.c.key, table.c.payload,
                                   table.c.message_id)
                            .where(table.c.key == key).order_by(table.c.id)).all()
    assert sorted((t, k, bytes(p), m) for t, k, p, m in rows) == [
        ("email-events", key, b'{"id":"evt_1"}', None),
        ("email-events", key, b'{"id":"evt_2"}', None)]
    assert usend.outbox([plain.message_id, with_events.message_id]) == [
        ("sendmail", e.message_id, e.kafka_value, e.message_id) for e in (with_events, plain)]


# -- guarded saves: the suppression check inside the insert (EmailDeps.guarded_saves) -------------

async def _list(backend: Any, entries: list[Suppression]) -> None:
    if backend.name == "fake":
        from tests.unit.fakes_sending import FakeSuppressions

        backend.repo.suppressions = backend.repo.suppressions or FakeSuppressions()
        await backend.repo.suppressions.add(entries)
        return
    from etrans.bootstrap.stores import suppression_store

    await suppression_store(backend.db).add(entries)


async def test_a_guarded_call_with_a_listed_recipient_saves_nothing(email_store: Any) -> None:
    """A guard (normalised recipients) that names an address on the user's list refuses the
    whole call (SendCheckNeeded, nothing stored); other users' lists and unguarded
    emails are not concerned; concurrent calls sharing a statement are refused alone."""
    from etrans.app.ports import SendCheckNeeded

    repo, alice, bob = email_store.repo, fresh_user(), fresh_user()
    await _list(email_store, [Suppression(alice, "gone@x.org", "hard_bounce")])
    fine = new_email(alice, guard=("ok@x.org", "other@x.org"))
    await repo.save([fine])
    refused = [new_email(alice, guard=("ok@x.org",)),
               new_email(alice, guard=("ok@x.org", "gone@x.org"))]
    with pytest.raises(SendCheckNeeded):
        await repo.save(refused)
    assert await repo.existing_message_ids([e.message_id for e in refused]) == set()
    others = [new_email(bob, guard=("gone@x.org",)), new_email(alice, to=["gone@x.org"])]
    await repo.save(others)
    assert await repo.existing_message_ids([e.message_id for e in others]) == {
        e.message_id for e in others}

    outcomes: dict[str, bool] = {}
    calls = [[new_email(alice, guard=("gone@x.org",) if n % 2 else ("ok@x.org",))]
             for n in range(10)]

    async def save(emails: list[Any]) -> None:
        try:
            await repo.save(emails)
            outcomes[emails[0].message_id] = True
        except SendCheckNeeded:
            outcomes[emails[0].message_id] = False

    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(save, call)
    saved = await repo.existing_message_ids([c[0].message_id for c in calls])
    assert saved == {c[0].message_id for n, c in enumerate(calls) if n % 2 == 0}
    assert {m for m, ok in outcomes.items() if ok} == saved
    assert len(outcomes) == 10


async def test_a_guarded_call_from_a_changed_template_saves_nothing(email_store: Any) -> None:
    """An email with a ``template_version`` is saved only while the user's template is still at
    that ``updated_at``: changed, deleted or another user's, the call is refused whole."""
    from etrans.app.ports import SendCheckNeeded
    from etrans.app.template_records import TemplateChanges, TemplateFields

    if email_store.name == "fake":
        from tests.unit.fakes_templates import FakeTemplateStore

        templates: Any = FakeTemplateStore()
        email_store.repo.templates = templates
    else:
        from etrans.adapters.sql.templates_repo import SqlTemplates

        templates = SqlTemplates(email_store.db)
    repo, alice, bob = email_store.repo, fresh_user(), fresh_user()
    row = await templates.create(alice, TemplateFields("t", "Hi {{ x }}", "<p>x</p>", None),
                                 max_per_user=10)
    current = new_email(alice, template_version=(row.id, row.updated_at))
    await repo.save([current])
    assert await repo.existing_message_ids([current.message_id]) == {current.message_id}
    theirs = new_email(bob, template_version=(row.id, row.updated_at))
    with pytest.raises(SendCheckNeeded):
        await repo.save([theirs])
    changed = await templates.update(alice, row.id, TemplateChanges(subject="New {{ x }}"))
    stale = [new_email(alice), new_email(alice, template_version=(row.id, row.updated_at))]
    with pytest.raises(SendCheckNeeded):
        await repo.save(stale)
    assert await repo.existing_message_ids([e.message_id for e in stale]) == set()
    fresh = new_email(alice, template_version=(row.id, changed.updated_at))
    await repo.save([fresh])
    assert await templates.delete(alice, row.id) is True
    gone = new_email(alice, template_version=(row.id, changed.updated_at))
    with pytest.raises(SendCheckNeeded):
        await repo.save([gone])
    assert await repo.existing_message_ids([fresh.message_id, gone.message_id, theirs.message_id]
                                           ) == {fresh.message_id}
