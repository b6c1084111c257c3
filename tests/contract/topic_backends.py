"""The topics the topic contract runs on: the Kafka-API broker of the session (``KafkaProducer``
and the pipeline's Kafka consumer thread) and the in-process topics of ``etrans dev``
(``LocalPublisher`` and ``LocalTopics.source()``), each built by one function here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.pipeline import PipelineConfig
from tests.harness.servers import unique_name

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


class KafkaTopics:
    name = "kafka"

    def __init__(self, bootstrap: str, new_topic: Callable[..., str],
                 consumer_overrides: dict[str, Any]) -> None:
        from etrans.adapters.kafka.client import KafkaProducer

        self._bootstrap = bootstrap
        self._new_topic = new_topic
        # tansu answers the JoinGroup of a new (classic) group after session.timeout.ms / 2:
        # measured 3.0 s at the harness's 6000 ms, 1.0 s at 2000 ms.  The runs here last about
        # a second, so a short session keeps each group join at a second.
        self._consumer = {"bootstrap.servers": bootstrap, "log_level": 3, **consumer_overrides,
                          "session.timeout.ms": 2000, "heartbeat.interval.ms": 500}
        self.publisher = KafkaProducer({"bootstrap.servers": bootstrap, "log_level": 3})
        self.source = None  # the pipeline's default: a confluent-kafka consumer thread

    def new_topic(self, partitions: int) -> str:
        return self._new_topic(partitions=partitions, prefix="contract")

    def config(self, topic: str, group_id: str, **fields: Any) -> PipelineConfig:
        return PipelineConfig(topics=(topic,), group_id=group_id, kafka=self._consumer, **fields)

    def close(self) -> None:
        self.publisher.close(timeout=5.0)


class LocalTopicsBackend:
    name = "local"

    def __init__(self, path: Path) -> None:
        from etrans.dev.topics import LocalPublisher, LocalTopics

        self.topics = LocalTopics(path)
        self.publisher = LocalPublisher(self.topics)
        self.source = self.topics.source()

    def new_topic(self, partitions: int) -> str:
        name = unique_name("contract")
        self.topics.create_topic(name, partitions)
        return name

    def config(self, topic: str, group_id: str, **fields: Any) -> PipelineConfig:
        return PipelineConfig(topics=(topic,), group_id=group_id, kafka={}, **fields)

    def close(self) -> None:
        self.topics.close()
