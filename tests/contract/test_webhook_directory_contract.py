"""WebhookDirectory (:mod:`etrans.app.webhook_ports`) on PostgreSQL and on the ``etrans dev``
SQLite file (``SqlWebhookDirectory`` on both).

What ``etrans webhooks`` relies on: for an event of a user and a type, the user's enabled
endpoints subscribed to that type (an empty list = every type), oldest first, with the signing
secret in clear; never another user's; an endpoint whose secret does not unseal is left out
without hiding the others; a database that does not answer is RetryLater.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from etrans.adapters.crypto.webhook_secrets import WebhookSecretCipher
from etrans.domain.events import EventType
from etrans.domain.webhooks import new_signing_secret
from etrans.errors import RetryLater
from tests.contract.usend_backends import fresh_user
from tests.contract.webhook_backends import (
    postgres_webhooks,
    sqlite_webhooks,
    unreachable_webhooks,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SENT, BOUNCED = EventType.SENT.value, EventType.BOUNCED.value


@pytest.fixture(params=["postgres", "sqlite"])
def webhooks(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    backend = (postgres_webhooks(request.getfixturevalue("usend_db_url"))
               if request.param == "postgres" else sqlite_webhooks(tmp_path / "usend.sqlite3"))
    yield backend
    backend.close()


async def test_the_users_enabled_endpoints_subscribed_to_the_type(webhooks: Any) -> None:
    user, other = fresh_user(), fresh_user()
    secrets = [new_signing_secret() for _ in range(5)]
    every = webhooks.add_webhook(user, "https://a.example/all", secrets[0], [])
    sent = webhooks.add_webhook(user, "https://a.example/sent", secrets[1], [SENT, BOUNCED])
    webhooks.add_webhook(user, "https://a.example/bounced", secrets[2], [BOUNCED])
    webhooks.add_webhook(user, "https://a.example/off", secrets[3], [SENT], enabled=False,
                         disabled_reason="failing for 5 days")
    webhooks.add_webhook(other, "https://b.example/", secrets[4], [])

    found = await webhooks.directory.subscribers(user, SENT)
    assert [(e.id, e.user_id, e.url, e.secret, e.event_types) for e in found] == [
        (every, user, "https://a.example/all", secrets[0], ()),
        (sent, user, "https://a.example/sent", secrets[1], (SENT, BOUNCED)),
    ]
    assert all(e.subscribes_to(SENT) for e in found)
    assert secrets[0] not in repr(found[0])
    assert len(await webhooks.directory.subscribers(user, BOUNCED)) == 3
    assert [e.url for e in await webhooks.directory.subscribers(user, "email.opened")] == [
        "https://a.example/all"]
    assert await webhooks.directory.subscribers(fresh_user(), SENT) == []


async def test_an_endpoint_whose_secret_does_not_unseal_is_left_out(webhooks: Any) -> None:
    user, other = fresh_user(), fresh_user()
    foreign_key = WebhookSecretCipher("another secret of thirty-two b!!").seal(user, "whsec_x")
    webhooks.add_webhook(user, "https://a.example/1", "", [], secret_sealed=foreign_key)
    webhooks.add_webhook(user, "https://a.example/2", "",
                         [], secret_sealed=webhooks.sealer.seal(other, "whsec_y"))
    webhooks.add_webhook(user, "https://a.example/3", "", [], secret_sealed="garbage")
    good = new_signing_secret()
    webhooks.add_webhook(user, "https://a.example/4", good, [])
    assert [(e.url, e.secret) for e in await webhooks.directory.subscribers(user, SENT)] == [
        ("https://a.example/4", good)]


@pytest.mark.parametrize("name", ["postgres", "sqlite"])
async def test_a_database_that_does_not_answer_is_retry_later(name: str, tmp_path: Path
                                                              ) -> None:
    backend = unreachable_webhooks(name, tmp_path)
    try:
        with pytest.raises(RetryLater):
            await backend.directory.subscribers(1, SENT)
        with pytest.raises(RetryLater):
            await backend.directory.traceparent(1, "msg_x")
    finally:
        backend.close()


async def test_an_emails_traceparent_by_its_user_and_message_id(webhooks: Any) -> None:
    """``EmailTraces`` (the retries' trace): the email's own ``traceparent``, None for an
    email without one, another user's email or an unknown id."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from etrans.adapters.sql.usend import EmailMessage

    user, other = fresh_user(), fresh_user()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with webhooks.db.engine.begin() as conn:
        for message_id, trace in ((f"msg_t{user}", traceparent), (f"msg_n{user}", None)):
            conn.execute(insert(EmailMessage.__table__).values(
                message_id=message_id, user_id=user, from_address="s@example.test",
                to_addresses=["r@example.org"], subject="Hi", status="sent",
                created_at=datetime.now(UTC), traceparent=trace))
    traces = webhooks.directory
    assert await traces.traceparent(user, f"msg_t{user}") == traceparent
    assert await traces.traceparent(user, f"msg_n{user}") is None
    assert await traces.traceparent(other, f"msg_t{user}") is None
    assert await traces.traceparent(user, "msg_unknown") is None
