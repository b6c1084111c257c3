"""N processes of one subcommand under one parent: ``etrans serve --workers N`` and
``etrans sendmail|fetchlog|webhooks --processes N`` (docs/operations.md, "Using every core").

The parent does no work of its own.  It starts N children, each the same subcommand as one
process (``etrans --process-index I <subcommand>``, on the same settings, with what differs per
child in its environment: :func:`child_environment`), and then:

- **stop**: on SIGTERM/SIGINT it asks every child to drain by closing the pipe on the child's
  stdin (:mod:`etrans.runtime`: a request, not a signal, so a child that also got the service
  manager's SIGTERM still drains), waits for them all (their own ETRANS_DRAIN_SECONDS, plus
  :data:`KILL_MARGIN_SECONDS`, then SIGKILL) and exits with the first non-zero child status,
  else 0;
- **a child that dies**: one that exits non-zero while nobody asked it to stop is not restarted:
  the parent logs it (``child process failed``, its index, pid and status), drains the others
  and exits with that status, so the service manager sees the failure and restarts the unit
  (Restart=on-failure).  A restart in place would hide a crash loop; a consumer group moves the
  dead child's partitions to the others anyway.  A child that exits 0 on its own (``fetchlog
  --stop-at-end``) has finished: the others go on;
- **readiness** (:mod:`etrans.systemd_notify`): the children notify a datagram socket of the
  parent's, which tells the service manager READY=1 once every child has, and sends
  WATCHDOG=1 only while every ready child has pinged within WATCHDOG_USEC, so one stuck child
  event loop gets the unit restarted as a stuck single process would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import trio

from etrans.observability import get_logger
from etrans.runtime import supervise
from etrans.systemd_notify import ENVIRONMENT, SystemdNotify

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from etrans.runtime import Shutdown

log = get_logger(__name__)

# A child has its own drain deadline (ETRANS_DRAIN_SECONDS) and exits when it is reached; the
# parent waits this much longer before it kills what is left.
KILL_MARGIN_SECONDS = 10.0


def child_environment(index: int, metrics_bind: str | None) -> dict[str, str]:
    """What differs in child ``index``'s environment: ETRANS_METRICS_BIND's port + ``index``
    (each process has its own registry; port 0 stays 0)."""
    if metrics_bind is None:
        return {}
    host, _, port = metrics_bind.rpartition(":")
    return {"ETRANS_METRICS_BIND": f"{host}:{int(port) + index if int(port) else 0}"}


def consumer_environment(
    index: int, metrics_bind: str | None, group_instance_id: str | None
) -> dict[str, str]:
    """:func:`child_environment`, and static group membership as
    ``<KAFKA_GROUP_INSTANCE_ID>-<index>`` (two members of one group cannot share an id;
    None: static membership is off, and stays off)."""
    instance = f"{group_instance_id}-{index}" if group_instance_id is not None else "none"
    return {**child_environment(index, metrics_bind), "KAFKA_GROUP_INSTANCE_ID": instance}


@dataclass
class _Child:
    index: int
    process: trio.Process
    ready: bool = False
    status: str = ""
    last_ping: float | None = None  # trio.current_time() of its last WATCHDOG=1


@dataclass
class Children:
    """The running children and what they told; ``exits``: index -> exit status."""

    what: str
    count: int
    notify: SystemdNotify  # the parent's own service manager
    running: dict[int, _Child] = field(default_factory=dict)
    exits: dict[int, int] = field(default_factory=dict)
    failure: int | None = None  # the first non-zero exit status
    all_ready: trio.Event = field(default_factory=trio.Event)

    def by_pid(self, pid: int) -> _Child | None:
        return next((c for c in self.running.values() if c.process.pid == pid), None)

    def status_line(self) -> str:
        lines = [f"#{c.index} {c.status}" for c in self.running.values() if c.status]
        return f"{self.what}: {self.count} processes; " + "; ".join(lines)

    def exit_status(self) -> int:
        return self.failure or 0


def run_subcommand(
    command: Sequence[str],
    count: int,
    drain_seconds: float,
    environment: Callable[[int], Mapping[str, str]],
    pass_fds: Sequence[int] = (),
    options: Mapping[str, str] | None = None,
) -> int:
    """``etrans <command>`` in ``count`` children (``etrans --process-index I <command>``), with
    ``options`` (ETRANS_ENV_FILE, ETRANS_LOG_LEVEL: the parent's global options) and
    ``environment(I)`` over this process's environment; the exit status."""
    return run_processes(
        command[0],
        count,
        drain_seconds,
        lambda i: [sys.executable, "-m", "etrans", "--process-index", str(i), *command],
        lambda i: {**(options or {}), **environment(i)},
        pass_fds,
    )


def run_processes(
    what: str,
    count: int,
    drain_seconds: float,
    argv: Callable[[int], Sequence[str]],
    environment: Callable[[int], Mapping[str, str]],
    pass_fds: Sequence[int] = (),
) -> int:
    """Run ``count`` children (``argv(i)``, with ``environment(i)`` over this process's
    environment) until a stop request or a failure; the exit status (see the module doc)."""
    notify = SystemdNotify.from_process_environment()
    children = Children(what, count, notify)
    # The parent's own pings are the supervised ones below, not the runtime's unconditional ones.
    quiet = replace(notify, watchdog_interval=None)

    async def main(shutdown: Shutdown) -> None:
        await _supervise_children(children, shutdown, argv, environment, pass_fds)

    trio.run(supervise, main, drain_seconds + KILL_MARGIN_SECONDS, quiet)
    status = children.exit_status()
    log.info("stopped", processes=count, exits=children.exits, status=status)
    return status


async def _supervise_children(
    children: Children,
    shutdown: Shutdown,
    argv: Callable[[int], Sequence[str]],
    environment: Callable[[int], Mapping[str, str]],
    pass_fds: Sequence[int],
) -> None:
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        name = f"@etrans-processes-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        await listener.bind("\0" + name[1:])
        base = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
        base["NOTIFY_SOCKET"] = name
        if children.notify.watchdog_interval is not None:
            base["WATCHDOG_USEC"] = str(int(children.notify.watchdog_interval * 2_000_000))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_receive_notifications, listener, children)
                nursery.start_soon(_keep_alive, children)
                for index in range(children.count):
                    process = await trio.lowlevel.open_process(
                        list(argv(index)),
                        stdin=subprocess.PIPE,
                        pass_fds=tuple(pass_fds),
                        env={**base, **environment(index)},
                    )
                    children.running[index] = _Child(index, process)
                    nursery.start_soon(_wait_child, children, children.running[index], shutdown)
                log.info(
                    "processes started",
                    processes=children.count,
                    pids=[c.process.pid for c in children.running.values()],
                )
                nursery.start_soon(_stop_on_request, children, shutdown, nursery.cancel_scope)
                await _wait_all_exited(children)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await _kill_remaining(children)


async def _wait_all_exited(children: Children) -> None:
    while children.running:  # noqa: ASYNC110 - the exits are recorded by _wait_child
        await trio.sleep(0.05)


async def _stop_on_request(
    children: Children, shutdown: Shutdown, cancel_scope: trio.CancelScope
) -> None:
    """Close every child's stdin once a stop is requested: each drains."""
    await shutdown.wait_requested()
    for child in list(children.running.values()):
        if child.process.stdin is not None:
            await child.process.stdin.aclose()
    log.info("draining processes", processes=len(children.running))


async def _wait_child(children: Children, child: _Child, shutdown: Shutdown) -> None:
    code = await child.process.wait()
    status = 128 - code if code < 0 else code  # killed by a signal: 128 + its number
    children.running.pop(child.index, None)
    children.exits[child.index] = status
    if status != 0 and children.failure is None:
        children.failure = status
    if shutdown.requested.is_set():
        log.info("child process exited", index=child.index, pid=child.process.pid, status=status)
    elif status != 0:
        log.error(
            "child process failed: stopping the others",
            index=child.index,
            pid=child.process.pid,
            status=status,
        )
        shutdown.request()
        await children.notify.send(
            "STOPPING=1", f"STATUS=process #{child.index} exited with {status}"
        )
    else:
        log.info("child process finished", index=child.index, pid=child.process.pid)


async def _receive_notifications(listener: trio.socket.SocketType, children: Children) -> None:
    space = socket.CMSG_SPACE(12)  # struct ucred: pid, uid, gid
    while True:
        data, ancillary, _flags, _address = await listener.recvmsg(4096, space)
        pid = next(
            (
                int.from_bytes(payload[:4], sys.byteorder, signed=True)
                for level, kind, payload in ancillary
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
            ),
            0,
        )
        child = children.by_pid(pid)
        if child is None:
            continue  # not one of ours (a grandchild is told nothing of the socket)
        states = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        await _record(children, child, states)


async def _record(children: Children, child: _Child, states: dict[str, str]) -> None:
    if states.get("WATCHDOG") == "1":
        child.last_ping = trio.current_time()
    if "STATUS" in states:
        child.status = states["STATUS"]
    if states.get("READY") == "1" and not child.ready:
        child.ready = True
        child.last_ping = trio.current_time()
        log.info(
            "child process ready", index=child.index, pid=child.process.pid, status=child.status
        )
        everyone = len(children.running) + len(children.exits) == children.count
        if (
            everyone
            and all(c.ready for c in children.running.values())
            and not children.all_ready.is_set()
        ):
            children.all_ready.set()
            await children.notify.send("READY=1", f"STATUS={children.status_line()}")
            return
    if "STATUS" in states and children.all_ready.is_set():
        await children.notify.send(f"STATUS={children.status_line()}")


async def _keep_alive(children: Children) -> None:
    """WATCHDOG=1 to the service manager while every ready child pings in time."""
    interval = children.notify.watchdog_interval
    if interval is None:
        return
    while True:
        now = trio.current_time()
        late = [
            c.index
            for c in children.running.values()
            if c.ready and c.last_ping is not None and now - c.last_ping > 2 * interval
        ]
        if late:
            log.warning("child process event loop stuck: no watchdog ping", indexes=late)
        else:
            await children.notify.send("WATCHDOG=1")
        await trio.sleep(interval)


async def _kill_remaining(children: Children) -> None:
    for child in list(children.running.values()):
        log.warning(
            "child process still running after the drain deadline: killed",
            index=child.index,
            pid=child.process.pid,
        )
        child.process.send_signal(signal.SIGKILL)
    for child in list(children.running.values()):
        await child.process.wait()
        children.exits[child.index] = 128 + signal.SIGKILL
        children.failure = children.failure or 128 + signal.SIGKILL
    children.running.clear()
