"""``etrans dev`` runs the webhooks worker too: an endpoint stored in dev's SQLite USEND DB (its
secret sealed with the data directory's TOKEN_SECRET) receives the events of
KAFKA_EVENTS_TOPIC, signed; loopback receivers are allowed by default in dev.  The events come
from a real Kafka topic here (the harness's broker), as when KAFKA_BOOTSTRAP_SERVERS is set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from etrans.dev.demo import data_secrets
from tests.e2e.dev_support import base_env, start_dev, wait_for
from tests.harness.servers import unique_name
from tests.integration.webhook_support import (
    Receiver,
    add_webhook,
    email_event,
    fresh_user,
    produce_events,
)


def test_etrans_dev_delivers_webhooks(kafka_bootstrap: str, new_topic: Any,
                                      tmp_path: Path) -> None:
    events_topic = new_topic(prefix="events")
    env = base_env(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=new_topic(prefix="send"),
                   LOG_TOPIC=new_topic(prefix="logs"), KAFKA_EVENTS_TOPIC=events_topic,
                   KAFKA_GROUP_ID=unique_name("dev-send"), LOG_GROUP_ID=unique_name("dev-log"),
                   WEBHOOKS_GROUP_ID=unique_name("dev-hooks"),
                   KAFKA_CONF_SESSION_TIMEOUT_MS="6000", KAFKA_CONF_HEARTBEAT_INTERVAL_MS="2000",
                   KAFKA_CONF_GROUP_PROTOCOL="classic")
    receiver = Receiver().start()
    dev = start_dev(tmp_path / "data", env=env)
    try:
        token_secret, _ = data_secrets(tmp_path / "data")
        user = fresh_user()
        usend_url = f"sqlite:///{tmp_path / 'data' / 'usend.sqlite3'}"  # dev's SQLite USEND DB
        add_webhook(usend_url, token_secret, user, receiver.url, receiver.secret)
        events = [email_event(user, i) for i in range(3)]
        produce_events(kafka_bootstrap, events_topic, events)
        got = wait_for(lambda: len(receiver.snapshot()) >= 3 and receiver.snapshot(), 60,
                       "three webhook calls", dev.tails)
        assert sorted(r.webhook_id for r in got) == sorted(e.id for e in events)
        assert all(r.verified for r in got)
        assert dev.stop() == [0], dev.tails()
    finally:
        receiver.stop()
        dev.stop()
