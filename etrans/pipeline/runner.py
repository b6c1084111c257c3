"""Pipeline: wires the consumer thread, the worker nursery and the offset tracker together."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from etrans.pipeline.config import PipelineConfig
    from etrans.pipeline.stats import PipelineStats
    from etrans.pipeline.task import BatchTask, Task
    from etrans.runtime import Shutdown


class Pipeline:
    """One consumer (one thread) feeding ``config.workers`` Trio tasks.

    Give exactly one of ``task`` (one message per call) or ``batch_task`` (up to
    ``config.batch_size`` messages per call).
    """

    def __init__(
        self,
        config: PipelineConfig,
        task: Task | None = None,
        *,
        batch_task: BatchTask | None = None,
    ) -> None:
        if (task is None) == (batch_task is None):
            raise ValueError("give exactly one of task or batch_task")
        self.config = config
        self._task = task
        self._batch_task = batch_task

    async def wait_assigned(self) -> None:
        """Wait until the consumer has received its first (possibly empty) assignment."""
        raise NotImplementedError("pipeline implementation lands in the next commit")

    def statistics(self) -> PipelineStats:
        raise NotImplementedError("pipeline implementation lands in the next commit")

    async def run(
        self,
        shutdown: Shutdown,
        *,
        task_status: trio.TaskStatus[Pipeline] = trio.TASK_STATUS_IGNORED,
    ) -> PipelineStats:
        """Consume until ``shutdown.requested`` (or the end, with ``stop_at_end``); drain; commit.

        ``task_status.started(self)`` is called once the consumer thread has subscribed;
        ``await pipeline.wait_assigned()`` waits for the first partition assignment.
        """
        raise NotImplementedError("pipeline implementation lands in the next commit")


async def run_pipeline(
    config: PipelineConfig,
    task: Task,
    shutdown: Shutdown,
    *,
    batch: bool = False,
    task_status: trio.TaskStatus[Pipeline] = trio.TASK_STATUS_IGNORED,
) -> PipelineStats:
    """Run a pipeline; with ``batch=True``, ``task`` is a :class:`BatchTask`."""
    pipeline = Pipeline(config, batch_task=task) if batch else Pipeline(config, task)  # type: ignore[arg-type]
    return await pipeline.run(shutdown, task_status=task_status)
