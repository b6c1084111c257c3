"""The pipelines' consumers let the broker hold an empty fetch for 50 ms, not librdkafka's
500 ms: tansu answers a held fetch only at the end of the wait, so a record produced meanwhile
waited for it (docs/performance.md); KAFKA_CONF_FETCH_WAIT_MAX_MS still wins."""

from __future__ import annotations

from etrans.pipeline.config import PipelineConfig


def test_the_consumer_asks_the_broker_to_hold_an_empty_fetch_50_ms_at_most() -> None:
    config = PipelineConfig(topics=("sendmail",), group_id="g",
                            kafka={"bootstrap.servers": "127.0.0.1:9092"})
    assert config.consumer_config()["fetch.wait.max.ms"] == 50


def test_a_configured_fetch_wait_wins() -> None:
    config = PipelineConfig(topics=("sendmail",), group_id="g",
                            kafka={"bootstrap.servers": "127.0.0.1:9092",
                                   "fetch.wait.max.ms": 200})
    assert config.consumer_config()["fetch.wait.max.ms"] == 200
