"""Back-pressure pauses across a rebalance, on the consumer thread with a real consumer (tansu).

librdkafka keeps a partition's pause across revoke and re-assignment (confluentinc/librdkafka#1849),
while the pipeline may stop being paused between the two (the workers drain the revoked messages
while the eager protocol has nothing assigned): a newly assigned partition must then be resumed,
or it is never fetched again.
"""

from __future__ import annotations

import time
from typing import Any

import trio
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from etrans.pipeline import PipelineConfig
from etrans.pipeline.consumer_thread import ConsumerThread
from etrans.pipeline.state import SharedState
from tests.harness.servers import unique_name
from tests.integration.pipeline_helpers import produce


def _thread(config: PipelineConfig, state: SharedState) -> ConsumerThread:
    def ignore(*_args: object) -> None:
        return None

    return ConsumerThread(config, state, trio.lowlevel.current_trio_token(), deliver=ignore,
                          on_subscribed=ignore, on_assigned=ignore, on_end_reached=ignore,
                          on_exit=ignore)


async def test_a_partition_paused_before_a_rebalance_is_fetched_once_reassigned(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any
) -> None:
    topic = new_topic(partitions=1, prefix="pipeline-pause")
    produce(kafka_bootstrap, topic, 10, 1)
    config = PipelineConfig(topics=(topic,), group_id=unique_name("pipeline-pause-group"),
                            kafka={"bootstrap.servers": kafka_bootstrap, "log_level": 3,
                                   **kafka_test_config})
    state = SharedState()
    thread = _thread(config, state)
    consumer = Consumer(config.consumer_config())
    try:
        partition = TopicPartition(topic, 0, OFFSET_BEGINNING)
        thread._on_assign(consumer, [partition])
        state.handed_out = config.channel_size  # the workers are busy: back-pressure pauses
        thread._apply_back_pressure(consumer)
        assert state.paused
        # A rebalance revokes everything; the workers drain meanwhile, so back-pressure stops
        # pausing while nothing is assigned; then the partition is assigned again.
        thread._on_revoke(consumer, [partition])
        consumer.unassign()
        state.released = state.handed_out
        thread._apply_back_pressure(consumer)
        assert not state.paused
        thread._on_assign(consumer, [TopicPartition(topic, 0, OFFSET_BEGINNING)])
        records: list[Any] = []
        deadline = time.monotonic() + 10
        while len(records) < 10 and time.monotonic() < deadline:
            records += [r for r in consumer.consume(10, 0.5) if r.error() is None]
        assert len(records) == 10
    finally:
        consumer.close()
