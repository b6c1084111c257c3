"""Process lifetime: ``trio.run``, signals, graceful drain, hard stop.

The first SIGTERM/SIGINT sets :attr:`Shutdown.requested`: services stop intake and finish what
they hold.  If they have not returned ``drain_seconds`` later, their scope is cancelled.  A second
signal exits at once (status 128 + signal number), without waiting for anything.

A process that :mod:`etrans.bootstrap.processes` runs as one of N (``--processes``,
``--workers``) is also asked to stop by its parent: the parent closes the pipe on the child's
stdin (``parent_pipe``), which also happens when the parent dies.  That request drains like a
first signal, and is not counted as one: under systemd (KillMode=control-group) a child gets
the SIGTERM of the service manager and its parent's request, and must drain, not exit at once.

Under a service manager (``NOTIFY_SOCKET``, :mod:`etrans.systemd_notify`) it is told the
lifetime too: the service calls :meth:`Shutdown.notify_ready` once it serves (``READY=1``), the
first signal sends ``STOPPING=1`` before the drain, and with ``WATCHDOG_USEC`` a task of this
Trio loop sends ``WATCHDOG=1`` every half of it until the process ends.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from etrans.errors import ConfigError
from etrans.observability import get_logger
from etrans.systemd_notify import SystemdNotify

log = get_logger(__name__)


@dataclass
class Shutdown:
    """Handed to a service: ``requested`` is set when the process is asked to stop."""

    drain_seconds: float
    requested: trio.Event = field(default_factory=trio.Event)
    notify: SystemdNotify = field(default_factory=SystemdNotify)  # default: nowhere

    async def wait_requested(self) -> None:
        await self.requested.wait()

    def request(self) -> None:
        self.requested.set()

    async def notify_ready(self, status: str) -> None:
        """The service serves: ``READY=1`` and ``status`` to the service manager (nothing once
        a stop was requested: the manager already knows the service is going)."""
        if not self.requested.is_set():
            await self.notify.send("READY=1", f"STATUS={status}")

    async def notify_status(self, status: str) -> None:
        """A line for ``systemctl status`` (e.g. a worker's partitions assigned)."""
        if not self.requested.is_set():
            await self.notify.send(f"STATUS={status}")


ServiceMain = Callable[[Shutdown], Awaitable[None]]


async def _watch_signals(shutdown: Shutdown, service_scope: trio.CancelScope, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    signals_seen = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            if signals_seen.is_set():
                log.warning("second signal, exiting now", signal=signal.Signals(signum).name)
                sys.stdout.flush()
                os._exit(128 + signum)
            signals_seen.set()
            await _drain(shutdown, service_scope, signal=signal.Signals(signum).name)


async def _drain(shutdown: Shutdown, service_scope: trio.CancelScope, **why: str) -> None:
    """The first stop request (a signal or the parent process): drain, under a deadline."""
    if shutdown.requested.is_set():
        return
    log.info("stopping", **why, drain_seconds=shutdown.drain_seconds)
    shutdown.request()
    await shutdown.notify.send("STOPPING=1", "STATUS=draining in-flight work")
    # Hard deadline for the drain: whatever is still running then is cancelled.
    service_scope.deadline = min(service_scope.deadline,
                                 trio.current_time() + shutdown.drain_seconds)


async def _watch_parent(parent_pipe: int, shutdown: Shutdown,
                        service_scope: trio.CancelScope) -> None:
    """Drain once the parent closes its end of ``parent_pipe`` (or dies)."""
    async with trio.lowlevel.FdStream(os.dup(parent_pipe)) as pipe:
        while await pipe.receive_some():
            pass  # the parent writes nothing: only the end of the pipe means something
    await _drain(shutdown, service_scope, asked_by="parent process")


async def supervise(main: ServiceMain, drain_seconds: float,
                    notify: SystemdNotify | None = None, parent_pipe: int | None = None) -> bool:
    """Run ``main`` until it returns; returns False when the drain deadline cut it short.
    ``parent_pipe``: a file descriptor whose end (EOF) asks for a drain, as a signal does."""
    shutdown = Shutdown(drain_seconds=drain_seconds, notify=notify or SystemdNotify())
    async with trio.open_nursery() as nursery:
        service_scope = trio.CancelScope()
        # Handlers first: a SIGTERM during the service's startup must drain, not kill.
        await nursery.start(_watch_signals, shutdown, service_scope)
        if parent_pipe is not None:
            nursery.start_soon(_watch_parent, parent_pipe, shutdown, service_scope)
        # In this loop, not in a thread: pings stop when the loop is stuck (systemd restarts).
        nursery.start_soon(shutdown.notify.keep_alive)
        with service_scope:
            await main(shutdown)
        nursery.cancel_scope.cancel()
    if service_scope.cancelled_caught:
        log.warning("drain deadline reached, in-flight work was cancelled",
                    drain_seconds=drain_seconds)
        return False
    return True


def run(main: ServiceMain, drain_seconds: float, *, parent_pipe: int | None = None) -> int:
    """Run a service under Trio; the process exit status (2 when the service found its
    configuration unusable once started, e.g. a consumer-group member id already in use).
    ``parent_pipe``: see :func:`supervise` (the stdin of a child of etrans.bootstrap.processes)."""
    problems: list[str] = []
    notify = SystemdNotify.from_process_environment()
    try:
        completed = trio.run(supervise, main, drain_seconds, notify, parent_pipe)
    except* ConfigError as group:
        problems = [p for exc in _leaves(group) for p in exc.problems]
    if problems:
        print(ConfigError(problems).render(), file=sys.stderr, flush=True)
        return 2
    log.info("stopped", drained=completed)
    return 0


def _leaves(group: BaseExceptionGroup[ConfigError]) -> list[ConfigError]:
    found: list[ConfigError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found += _leaves(exc)
        else:
            found.append(exc)
    return found
