"""An outbox relay process for the kill -9 test: ``python -m tests.integration.outbox_relay_child
<usend db url> <bootstrap> <events topic>``: relays (50 rows per pass, email.queued events)
until killed."""

from __future__ import annotations

import sys

import trio

from etrans.adapters.kafka.client import KafkaProducer
from etrans.adapters.sql import usend_database
from etrans.adapters.sql.outbox import OutboxRelay
from etrans.adapters.sql.outbox_store import PgOutboxStore


async def _relay(url: str, bootstrap: str, events_topic: str) -> None:
    db = usend_database(url, pool_size=1)
    producer = KafkaProducer({"bootstrap.servers": bootstrap})
    relay = OutboxRelay(PgOutboxStore.of(db), producer, batch_size=50, idle_seconds=0.05,
                        events_topic=events_topic)
    await relay.run()


if __name__ == "__main__":
    trio.run(_relay, *sys.argv[1:4])
