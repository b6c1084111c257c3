"""EngagementStore (:mod:`etrans.app.ports`): ``SqlEngagementStore`` on PostgreSQL (one
``INSERT ... SELECT FROM unnest``) and on the ``etrans dev`` SQLite file (one ``executemany``).

What fetchlog relies on: each open / click of an email of the USEND DB is one row, whatever how
often its event is recorded (a replay, a retried batch); events of message ids that are no email
(SMTP mail) add nothing; the email's status never changes; GET /emails/{id} (the repository's
``get``) counts them and shows the first time of each kind.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from etrans.adapters.sql.engagement import SqlEngagementStore
from etrans.domain.delivery_log import StatusChange
from etrans.domain.engagement import CLICK, OPEN, Engagement
from etrans.domain.events import random_event_id
from tests.contract.usend_backends import fresh_user, new_email

AT = datetime(2026, 3, 10, 15, 0, 0, 250000, tzinfo=UTC)


def _hit(user: int, message_id: str, kind: str, seconds: int, url: str | None = None
         ) -> Engagement:
    return Engagement(event_id=random_event_id(), user_id=user, message_id=message_id,
                      kind=kind, at=AT + timedelta(seconds=seconds), url=url,
                      user_agent="Mail/1.0")


async def test_opens_and_clicks_are_counted_once_each(usend: Any) -> None:
    user = fresh_user()
    email, other = new_email(user), new_email(user)
    await usend.repo.save([email, other])
    store = SqlEngagementStore(usend.db)
    hits = [_hit(user, email.message_id, OPEN, 5), _hit(user, email.message_id, OPEN, 1),
            _hit(user, email.message_id, CLICK, 9, "https://shop.example/a"),
            _hit(user, email.message_id, CLICK, 3, "https://shop.example/b"),
            _hit(user, email.message_id, OPEN, 7),
            _hit(user, "smtp-only@mail.example", OPEN, 1)]  # no such email: nothing
    assert await store.record([]) == 0
    assert await store.record(hits) == 5
    assert await store.record(hits) == 0  # a replay
    assert await store.record(hits[:2]) == 0
    row = await usend.repo.get(user, email.message_id)
    assert row is not None
    assert (row["opens"], row["clicks"]) == (3, 2)
    assert row["first_opened_at"] == AT + timedelta(seconds=1)
    assert row["first_clicked_at"] == AT + timedelta(seconds=3)
    untouched = await usend.repo.get(user, other.message_id)
    assert untouched is not None
    assert (untouched["opens"], untouched["clicks"]) == (0, 0)
    assert (untouched["first_opened_at"], untouched["first_clicked_at"]) == (None, None)


async def test_an_open_does_not_change_the_status(usend: Any) -> None:
    user = fresh_user()
    email = new_email(user)
    await usend.repo.save([email])
    assert await usend.statuses.apply([StatusChange(email.message_id, "bounced", AT, "Reject",
                                                    "550 no such user")]) == 1
    store = SqlEngagementStore(usend.db)
    assert await store.record([_hit(user, email.message_id, OPEN, 60),
                               _hit(user, email.message_id, CLICK, 61, "https://x.example")]) == 2
    row = await usend.repo.get(user, email.message_id)
    assert row is not None
    assert (row["status"], row["opens"], row["clicks"]) == ("bounced", 1, 1)


async def test_another_users_email_is_not_found_with_its_counts(usend: Any) -> None:
    alice, bob = fresh_user(), fresh_user()
    email = new_email(alice)
    await usend.repo.save([email])
    await SqlEngagementStore(usend.db).record([_hit(alice, email.message_id, OPEN, 1)])
    assert await usend.repo.get(bob, email.message_id) is None
