"""Kafka -> bounded channel -> worker nursery -> offsets committed after completion.

Public surface::

    from etrans.pipeline import Message, Task, BatchTask, PipelineConfig, RetryPolicy, run_pipeline

    pipeline = await nursery.start(run_pipeline, config, task, shutdown)   # -> Pipeline
    pipeline.statistics()                                                  # -> PipelineStats

or, holding the object first::

    pipeline = Pipeline(config, task)             # or Pipeline(config, batch_task=...)
    stats = await pipeline.run(shutdown)

The task contract (what returning / raising means for the offset) is in
:mod:`etrans.pipeline.task`.  Modules: ``message`` (Message), ``task`` (Protocols), ``config``
(PipelineConfig, RetryPolicy), ``offsets`` (OffsetTracker), ``stats``, ``consumer_thread`` (the
thread that owns the confluent-kafka Consumer), ``workers`` (the Trio side), ``dead_letter``,
``runner`` (Pipeline, run_pipeline).
"""

from etrans.pipeline.config import PipelineConfig, RetryPolicy
from etrans.pipeline.message import Message
from etrans.pipeline.offsets import OffsetTracker
from etrans.pipeline.runner import Pipeline, run_pipeline
from etrans.pipeline.stats import PartitionStats, PipelineStats
from etrans.pipeline.task import BatchTask, Task

__all__ = [
    "BatchTask",
    "Message",
    "OffsetTracker",
    "PartitionStats",
    "Pipeline",
    "PipelineConfig",
    "PipelineStats",
    "RetryPolicy",
    "Task",
    "run_pipeline",
]
