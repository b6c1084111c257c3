"""SuppressionStore (:mod:`etrans.app.ports`): PostgreSQL (``PgSuppressionStore``) and the
``etrans dev`` SQLite file (``SqliteSuppressionStore``) keep each user's suppression list alike.

What the send path, fetchlog and /suppressions rely on: ``suppressed`` answers the listed ones
among the given (normalised) addresses, for that user only; ``add`` keeps the entry that was
there first and answers how many were new; ``add_hard_bounces`` lists, for the email's sender,
the recipients whose outcome is a hard bounce of an API email (never soft or policy bounces,
never SMTP-submitted mail), idempotently; ``remove`` answers whether the address was listed;
``list`` pages newest first with the filtered total; a database that does not answer is
RetryLater.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from etrans.app.records import Suppression, SuppressionFilter
from etrans.domain.delivery_log import RecipientOutcome
from etrans.errors import RetryLater
from tests.contract.usend_backends import fresh_id, fresh_user, new_email, unreachable_backend

if TYPE_CHECKING:
    from pathlib import Path

AT = datetime(2026, 3, 10, 15, 0, 0, 250000, tzinfo=UTC)


def store_of(backend: Any) -> Any:
    """The store ``serve``, ``fetchlog`` and ``dev`` wire on that database."""
    from etrans.adapters.sql.suppressions_repo import PgSuppressionStore
    from etrans.bootstrap.stores import suppression_store
    from etrans.dev.sqlite_suppressions import SqliteSuppressionStore

    store = suppression_store(backend.db)
    expected = PgSuppressionStore if backend.name == "postgres" else SqliteSuppressionStore
    assert type(store) is expected
    return store


@pytest.fixture
def store(usend: Any) -> Any:
    return store_of(usend)


def entry(user: int, address: str, reason: str = "manual", **fields: Any) -> Suppression:
    return Suppression(user_id=user, address=address, reason=reason, **fields)


def bounce(message_id: str, recipient: str, bounce_class: str | None = "hard",
           outcome: str = "bounced", response: str = "550 5.1.1 no such user"
           ) -> RecipientOutcome:
    return RecipientOutcome(message_id, recipient, outcome, AT, bounce_class, response)


async def test_suppressed_answers_the_listed_addresses_of_that_user_only(store: Any) -> None:
    alice, bob = fresh_user(), fresh_user()
    assert await store.add([entry(alice, "gone@x.org", "complaint", message_id="m1@a.example",
                                  response="abuse report"),
                            entry(alice, "also@x.org")]) == 2
    found = await store.suppressed(alice, ["gone@x.org", "fine@x.org", "also@x.org", ""])
    assert set(found) == {"gone@x.org", "also@x.org"}
    gone = found["gone@x.org"]
    assert (gone.user_id, gone.reason, gone.message_id, gone.response) == (
        alice, "complaint", "m1@a.example", "abuse report")
    assert gone.created_at is not None
    assert gone.created_at.tzinfo is not None
    assert abs(gone.created_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert found["also@x.org"].message_id is None
    assert await store.suppressed(bob, ["gone@x.org", "also@x.org"]) == {}
    assert await store.suppressed(alice, []) == {}


async def test_an_address_already_listed_keeps_its_first_entry(store: Any) -> None:
    user = fresh_user()
    assert await store.add([entry(user, "a@x.org", "hard_bounce", message_id="m@a.example")]) == 1
    assert await store.add([entry(user, "a@x.org", "manual"), entry(user, "b@x.org")]) == 1
    assert await store.add([]) == 0
    found = await store.suppressed(user, ["a@x.org", "b@x.org"])
    assert (found["a@x.org"].reason, found["a@x.org"].message_id) == ("hard_bounce", "m@a.example")
    assert found["b@x.org"].reason == "manual"


async def test_hard_bounces_of_api_emails_list_the_recipient_for_the_sender(
        usend: Any, store: Any) -> None:
    alice, bob = fresh_user(), fresh_user()
    to_alice, to_bob = new_email(alice), new_email(bob)
    await usend.repo.save([to_alice, to_bob])
    smtp_only = fresh_id()  # no email row: SMTP-submitted mail
    outcomes = [
        bounce(to_alice.message_id, "Gone@X.org"),
        bounce(to_alice.message_id, "full@x.org", "soft", response="452 4.2.2 mailbox full"),
        bounce(to_alice.message_id, "spam@x.org", "policy", response="550 5.7.1 blocked"),
        bounce(to_alice.message_id, "ok@x.org", None, outcome="delivered", response="250 ok"),
        bounce(to_bob.message_id, "gone@x.org", response="550 5.1.1 user unknown"),
        bounce(smtp_only, "smtp@x.org"),
    ]
    assert await store.add_hard_bounces(outcomes) == 2
    mine = await store.suppressed(alice, ["gone@x.org", "full@x.org", "spam@x.org", "ok@x.org",
                                          "smtp@x.org"])
    assert list(mine) == ["gone@x.org"]
    gone = mine["gone@x.org"]
    assert (gone.reason, gone.message_id, gone.response) == (
        "hard_bounce", to_alice.message_id, "550 5.1.1 no such user")
    theirs = await store.suppressed(bob, ["gone@x.org"])
    assert theirs["gone@x.org"].response == "550 5.1.1 user unknown"
    # A replayed batch changes nothing.
    assert await store.add_hard_bounces(outcomes) == 0
    assert await store.suppressed(alice, ["gone@x.org"]) == mine
    assert await store.add_hard_bounces([]) == 0
    assert await store.add_hard_bounces([bounce(to_alice.message_id, "x@x.org", "soft")]) == 0


async def test_hard_bounces_keep_an_existing_entry(usend: Any, store: Any) -> None:
    user = fresh_user()
    email = new_email(user)
    await usend.repo.save([email])
    await store.add([entry(user, "kept@x.org", "complaint")])
    assert await store.add_hard_bounces([bounce(email.message_id, "kept@x.org"),
                                         bounce(email.message_id, "kept@x.org")]) == 0
    assert (await store.suppressed(user, ["kept@x.org"]))["kept@x.org"].reason == "complaint"


async def test_remove_takes_the_address_off_that_user_list(store: Any) -> None:
    alice, bob = fresh_user(), fresh_user()
    await store.add([entry(alice, "a@x.org"), entry(bob, "a@x.org")])
    assert await store.remove(alice, "a@x.org") is True
    assert await store.remove(alice, "a@x.org") is False
    assert await store.remove(alice, "never@x.org") is False
    assert await store.suppressed(alice, ["a@x.org"]) == {}
    assert list(await store.suppressed(bob, ["a@x.org"])) == ["a@x.org"]


async def test_a_page_past_the_last_entry_is_not_read(usend: Any) -> None:
    """The total comes first: past the last entry the page is empty without a query that would
    make the database skip every entry of the user."""
    from sqlalchemy import event

    store, user = store_of(usend), fresh_user()
    await store.add([entry(user, f"a{n}@x.org") for n in range(3)])
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(usend.db.engine, "before_cursor_execute", seen)
    try:
        far = await store.list(SuppressionFilter(user_id=user, page=1_000_000, per_page=100))
        last = await store.list(SuppressionFilter(user_id=user, page=2, per_page=2))
    finally:
        event.remove(usend.db.engine, "before_cursor_execute", seen)
    assert (far.rows, far.total, len(last.rows), last.total) == ([], 3, 1, 3)
    assert [s for s in statements if "OFFSET" in s.upper()] == statements[-1:], statements


async def test_list_pages_newest_first_with_the_filtered_total(store: Any) -> None:
    user, other = fresh_user(), fresh_user()
    at = [AT + timedelta(minutes=n) for n in range(5)]
    await store.add([
        entry(user, "old@x.org", "hard_bounce", created_at=at[0]),
        entry(user, "b100%@y.org", "manual", created_at=at[1]),
        entry(user, "b1000@y.org", "complaint", created_at=at[2]),
        entry(user, "new@x.org", "manual", created_at=at[3]),
        entry(user, "same@x.org", "manual", created_at=at[3]),
        entry(other, "new2@x.org", "manual", created_at=at[4]),
    ])

    async def addresses(**narrow: Any) -> tuple[list[str], int]:
        page = await store.list(SuppressionFilter(user_id=user, **narrow))
        return [r.address for r in page.rows], page.total

    everything = ["new@x.org", "same@x.org", "b1000@y.org", "b100%@y.org", "old@x.org"]
    assert await addresses() == (everything, 5)
    assert await addresses(page=2, per_page=2) == (everything[2:4], 5)
    assert await addresses(page=9, per_page=2) == ([], 5)
    assert await addresses(reason="manual") == (["new@x.org", "same@x.org", "b100%@y.org"], 3)
    assert await addresses(address="100%") == (["b100%@y.org"], 1)  # % is no wildcard
    assert await addresses(address="b100") == (["b1000@y.org", "b100%@y.org"], 2)
    assert await addresses(address="_") == ([], 0)
    assert await addresses(created_from=at[1], created_to=at[2]) == (
        ["b1000@y.org", "b100%@y.org"], 2)
    assert await addresses(created_from=at[3] + timedelta(microseconds=1)) == ([], 0)
    page = await store.list(SuppressionFilter(user_id=user, per_page=1))
    first = page.rows[0]
    assert (first.user_id, first.reason, first.created_at) == (user, "manual", at[3])


@pytest.mark.parametrize("name", ["postgres", "sqlite"])
async def test_a_database_that_does_not_answer_is_retry_later(name: str, tmp_path: Path) -> None:
    backend = unreachable_backend(name, tmp_path)
    store = store_of(backend)
    try:
        with pytest.raises(RetryLater):
            await store.suppressed(1, ["a@x.org"])
        with pytest.raises(RetryLater):
            await store.add([entry(1, "a@x.org")])
        with pytest.raises(RetryLater):
            await store.add_hard_bounces([bounce("m@a.example", "a@x.org")])
        with pytest.raises(RetryLater):
            await store.remove(1, "a@x.org")
        with pytest.raises(RetryLater):
            await store.list(SuppressionFilter(user_id=1))
    finally:
        await backend.close()
