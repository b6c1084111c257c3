"""``etrans fetchlog``'s second pipeline, as a subprocess on the real services: ``email.opened``
/ ``email.clicked`` events on the broker -> GET /logs (the owner only) and GET /emails/{id}
(counts, first times), through the API on the same MongoDB-wire server and USEND DB.

- a replay (``--from-earliest``) stores and counts nothing twice;
- a malformed record is skipped, logged and committed past (a later run reads nothing);
- an open of a bounced email leaves it Bounced;
- GET /logs of another user shows none of it;
- the USEND DB down: RetryLater (nothing committed), and the retried batch counts once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from etrans.adapters.mongo.log_writer import MongoLogWriter
from etrans.adapters.sql import Database, usend_database
from etrans.adapters.sql.email_status import EmailStatusUpdater
from etrans.adapters.sql.engagement import SqlEngagementStore
from etrans.domain.delivery_log import StatusChange
from etrans.domain.events import EmailEvent, EventType, encode_event, random_event_id
from etrans.errors import RetryLater
from etrans.pipeline import Message
from etrans.settings import MongoSettings
from etrans.workers.engagement import EngagementTask
from tests.harness.servers import free_port, unique_name
from tests.integration.sending_api import SendingApi, email, open_sending_api
from tests.integration.test_fetchlog_cli import start_fetchlog, wait_exit
from tests.integration.test_fetchlog_suppressions import (
    _insert_email,
    _user,
    mongo_settings,  # noqa: F401  (fixture)
    usend,  # noqa: F401  (fixture)
)

pytestmark = pytest.mark.slow

EARLY = datetime(2026, 3, 1, tzinfo=UTC)
AT = datetime(2026, 3, 10, 9, 0, 0, 125000, tzinfo=UTC)


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db) as built:
        yield built


def _event(kind: EventType, user: int, message_id: str, seconds: int,
           url: str | None = None) -> tuple[bytes, bytes]:
    data = {"message_id": message_id, "user_agent": "Mail/16.0"}
    if url is not None:
        data["url"] = url
    key, value = encode_event(EmailEvent(id=random_event_id(), type=kind,
                                         timestamp=AT + timedelta(seconds=seconds),
                                         user_id=user, data=data))
    return key, value


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in records:
        producer.produce(topic, value, key=key)
    assert producer.flush(30) == 0


def _stopped(log_path: Path) -> dict[str, Any]:
    """The counters of the last ``engagement stopped`` line of a run."""
    lines = [json.loads(line) for line in log_path.read_text().splitlines()
             if line.startswith("{") and '"engagement stopped"' in line]
    assert lines, log_path.read_text()[-4000:]
    return lines[-1]


def _run(env: dict[str, str], tmp_path: Path, name: str, *args: str) -> dict[str, Any]:
    log_path = tmp_path / f"{name}.log"
    wait_exit(start_fetchlog(env, *args, "--stop-at-end", log_path=log_path), log_path)
    return _stopped(log_path)


async def _send(api: SendingApi, user: int, domain: str) -> str:
    status, sent = await api.call("POST", "/emails", api.bearer(user), json=email(domain))
    assert status == 200, sent
    return str(sent["id"])


async def _detail(api: SendingApi, user: int, message_id: str) -> dict[str, Any]:
    status, detail = await api.call("GET", f"/emails/{message_id}", api.bearer(user))
    assert status == 200, detail
    return detail


async def _logs(api: SendingApi, user: int) -> list[dict[str, Any]]:
    status, page = await api.call("GET", "/logs?per_page=100", api.bearer(user))
    assert status == 200, page
    return page["logs"]


async def test_opens_and_clicks_reach_the_logs_and_the_email(
        api: SendingApi, kafka_bootstrap: str, new_topic: Callable[..., str],
        tmp_path: Path) -> None:
    alice, _, alice_domain = api.sender(daily=100, hourly=100, verified_at=EARLY)
    bob, _, _ = api.sender(daily=100, hourly=100, verified_at=EARLY)
    opened, bounced, quiet = [await _send(api, alice, alice_domain) for _ in range(3)]
    await EmailStatusUpdater(api.usend).apply(
        [StatusChange(bounced, "bounced", AT, "Reject", "550 5.1.1 no such user")])
    topic = new_topic(prefix="email-events")
    url = "https://shop.example.org/sale?x=1"
    _produce(kafka_bootstrap, topic, [
        _event(EventType.OPENED, alice, opened, 30),
        _event(EventType.OPENED, alice, opened, 10),
        _event(EventType.CLICKED, alice, opened, 20, url),
        (b"x", b"this is not an event"),  # skipped, committed past
        _event(EventType.OPENED, alice, bounced, 40),
        _event(EventType.DELIVERED, alice, opened, 5),  # another type: ignored
    ])
    env = api.env | {"KAFKA_EVENTS_TOPIC": topic,
                     "ENGAGEMENT_GROUP_ID": unique_name("engagement-group"),
                     "KAFKA_GROUP_INSTANCE_ID": "none"}

    first = _run(env, tmp_path, "first")
    assert (first["stored"], first["recorded"], first["invalid"], first["ignored"]) == (
        4, 4, 1, 1)
    detail = await _detail(api, alice, opened)
    assert (detail["status"], detail["opens"], detail["clicks"]) == ("Queued", 2, 1)
    assert detail["first_opened_at"] == "2026-03-10T09:00:10Z"
    assert detail["first_clicked_at"] == "2026-03-10T09:00:20Z"
    still_bounced = await _detail(api, alice, bounced)
    assert (still_bounced["status"], still_bounced["opens"]) == ("Bounced", 1)
    none = await _detail(api, alice, quiet)
    assert (none["opens"], none["clicks"], none["first_opened_at"],
            none["first_clicked_at"]) == (0, 0, None, None)

    logs = await _logs(api, alice)
    events = sorted((entry["event"], entry["message_id"]) for entry in logs)
    assert events == sorted([("Open", opened), ("Open", opened), ("Click", opened),
                             ("Open", bounced)])
    click = next(entry for entry in logs if entry["event"] == "Click")
    assert (click["status"], click["action"], click["action_detail"], click["source"]) == (
        "Clicked", "clicked", url, "API")
    assert {entry["status"] for entry in logs if entry["event"] == "Open"} == {"Opened"}
    assert await _logs(api, bob) == []
    status, _ = await api.call("GET", f"/emails/{opened}", api.bearer(bob))
    assert status == 404

    # Everything was committed, the malformed record too: a plain restart reads nothing.
    again = _run(env, tmp_path, "restart")
    assert (again["stored"], again["invalid"], again["batches"]) == (0, 0, 0)
    # A replay from the earliest offset stores and counts nothing twice.
    replay = _run(env, tmp_path, "replay", "--from-earliest")
    assert (replay["stored"], replay["duplicates"], replay["recorded"], replay["invalid"]) == (
        0, 4, 0, 1)
    detail = await _detail(api, alice, opened)
    assert (detail["opens"], detail["clicks"]) == (2, 1)
    assert len(await _logs(api, alice)) == 4


async def test_a_usend_db_that_does_not_answer_is_retry_later(
        mongo_settings: MongoSettings, usend: Database) -> None:  # noqa: F811
    alice = _user()
    message_id = _insert_email(usend, alice)
    batch = [Message("email-events", 0, 0, None, _event(EventType.OPENED, alice, message_id, 1)[1])]
    down = usend_database(f"postgresql://postgres@127.0.0.1:{free_port()}/usend", pool_size=1)
    writer = MongoLogWriter(mongo_settings)
    try:
        await writer.ensure_indexes()
        failing = EngagementTask(writer, SqlEngagementStore(down))
        # The pipeline commits nothing past a batch that raised: it retries it.
        with pytest.raises(RetryLater):
            await failing(batch)
        assert failing.statistics().batches == 0
        retried = EngagementTask(writer, SqlEngagementStore(usend))
        await retried(batch)
        counters = retried.statistics()
        assert (counters.duplicates, counters.recorded) == (1, 1)
    finally:
        writer.close()
        down.dispose()
