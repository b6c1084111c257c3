"""The service manager's notification protocol (``sd_notify(3)``), for ``Type=notify`` units.

systemd (or ``podman run --sdnotify=container``) gives a service a datagram socket in
``NOTIFY_SOCKET``; the service sends newline-separated ``KEY=value`` states to it:
``READY=1`` once it serves, ``STOPPING=1`` when its drain begins, ``STATUS=...`` for
``systemctl status``, and ``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` (when the unit sets
``WatchdogSec=``), else the manager kills and restarts it.  :mod:`etrans.runtime` sends them;
the bootstrap says when a subcommand is ready (docs/operations.md, "Readiness (systemd)").

The protocol is one ``sendto`` of a datagram on an ``AF_UNIX`` socket (an address starting with
``@`` is in the abstract namespace), so it is written here with the standard library rather
than taken from a package (python-systemd needs libsystemd and a compiler; the pure-Python
``sdnotify`` is these twenty lines, unmaintained since 2017).  Without ``NOTIFY_SOCKET`` every
call is a no-op.  The datagrams are sent from the Trio thread with Trio's socket, so a full
receive queue waits without blocking the event loop, and a failure to send is logged, never
raised: a service is not stopped because its manager cannot be told about it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Mapping

log = get_logger(__name__)

# Read once at start and removed from the environment (as sd_notify(3)'s unset_environment
# does): no child process must speak for the main process.
ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass(frozen=True)
class SystemdNotify:
    """Where to send states (None: nowhere) and how often the watchdog wants ``WATCHDOG=1``."""

    address: str | None = None
    watchdog_interval: float | None = None  # seconds between pings: half of WATCHDOG_USEC

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], pid: int) -> SystemdNotify:
        """The settings of ``environ``; the watchdog only for the process ``pid`` it names."""
        raw = environ.get("NOTIFY_SOCKET", "")
        address: str | None = None
        if raw.startswith("/"):
            address = raw
        elif raw.startswith("@") and len(raw) > 1:
            address = "\0" + raw[1:]  # the abstract namespace
        elif raw:
            log.warning("NOTIFY_SOCKET is not an AF_UNIX address: not notifying",
                        notify_socket=raw)
        if address is None:
            return cls()
        return cls(address, _watchdog_interval(environ, pid))

    @classmethod
    def from_process_environment(cls) -> SystemdNotify:
        """From ``os.environ``, whose variables are then removed (see ENVIRONMENT)."""
        notify = cls.from_environment(os.environ, os.getpid())
        for name in ENVIRONMENT:
            os.environ.pop(name, None)
        return notify

    @property
    def enabled(self) -> bool:
        return self.address is not None

    async def send(self, *states: str) -> bool:
        """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) as one datagram; False when not
        sent (no socket, or the send failed: logged)."""
        if self.address is None:
            return False
        message = "\n".join(states).encode()
        try:
            with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                await sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("could not notify the service manager", states=list(states),
                        error=str(exc))
            return False
        return True

    async def keep_alive(self) -> None:
        """``WATCHDOG=1`` every ``watchdog_interval`` seconds, forever, from the Trio loop: a
        loop that stops turning stops the pings, and the manager restarts the process."""
        if self.address is None or self.watchdog_interval is None:
            return
        while True:
            await self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval)


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of WATCHDOG_USEC (as sd_watchdog_enabled(3) advises), when it is meant for ``pid``."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None  # the watchdog belongs to another process (e.g. a wrapper's)
    try:
        microseconds = int(usec)
    except ValueError:
        microseconds = 0
    if microseconds <= 0:
        log.warning("WATCHDOG_USEC is not a positive integer: no watchdog pings",
                    watchdog_usec=usec)
        return None
    return microseconds / 2_000_000
