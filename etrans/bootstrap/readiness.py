"""When a subcommand is ready, told to the service manager (``READY=1``, ``STATUS=``; see
:mod:`etrans.systemd_notify` and docs/operations.md, "Readiness (systemd)").

A worker is ready once every one of its pipelines has its consumer subscribed and its workers
running: from then on it consumes whatever the group assigns it.  The first partition
assignment is not waited for: a group join can take a session timeout (a member that left
without a goodbye), or never come for a member beyond the partition count, and a start job
must not time out on the broker's schedule.  The assignment is reported as a ``STATUS=`` line
instead, which ``systemctl status`` shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from etrans.pipeline import Pipeline

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from etrans.runtime import Shutdown

    # Called with ``task_status=``; started with a Pipeline (a worker) or anything else (the
    # HTTP server of ``etrans dev``).
    Startable = Callable[..., Awaitable[object]]


async def run_ready(shutdown: Shutdown, what: str, *starts: Startable,
                    then: Callable[[], object] | None = None) -> list[object]:
    """Start each of ``starts`` in turn (each returns from ``nursery.start`` once serving or
    subscribed), call ``then``, notify READY with ``what`` (e.g. ``HTTP on 0.0.0.0:8000``) and
    the pipelines' topics; run them all to their end; their ``started`` values."""
    async with trio.open_nursery() as watchers:
        async with trio.open_nursery() as services:
            started = [await services.start(start) for start in starts]
            if then is not None:
                then()
            pipelines = [value for value in started if isinstance(value, Pipeline)]
            waiting = "; waiting for partitions" if pipelines else ""
            await shutdown.notify_ready(_status(what, pipelines, "subscribed to") + waiting)
            if pipelines:
                watchers.start_soon(_report_assignment, shutdown, what, pipelines)
        watchers.cancel_scope.cancel()  # the services ended: nothing left to report
    return started


async def _report_assignment(shutdown: Shutdown, what: str, pipelines: Sequence[Pipeline],
                             ) -> None:
    for pipeline in pipelines:
        await pipeline.wait_assigned()
    await shutdown.notify_status(_status(what, pipelines, "consuming"))


def _status(what: str, pipelines: Sequence[Pipeline], state: str) -> str:
    topics = ", ".join(f"{'+'.join(p.config.topics)} (group {p.config.group_id})"
                       for p in pipelines)
    return f"{what}: {state} {topics}" if pipelines else what
