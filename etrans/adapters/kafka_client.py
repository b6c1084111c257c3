"""confluent-kafka producer and admin helpers for Trio.

The producer is thread-safe: ``produce`` is called from Trio (it never blocks while the local
queue has room) and delivery reports are collected by a polling thread.  Consumers live in
:mod:`etrans.pipeline`, one thread each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from etrans.settings import KafkaSettings


class KafkaAdmin:
    name = "kafka"

    def __init__(self, settings: KafkaSettings, *, timeout: float = 3.0) -> None:
        from confluent_kafka.admin import AdminClient

        self._admin = AdminClient(settings.librdkafka())
        self._timeout = timeout

    def _list_topics(self) -> None:
        self._admin.list_topics(timeout=self._timeout)

    async def check(self) -> None:
        await trio.to_thread.run_sync(self._list_topics, abandon_on_cancel=True)
