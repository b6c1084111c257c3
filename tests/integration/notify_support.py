"""A service manager's side of sd_notify, for tests: a datagram socket of the test's own that
the processes under test are pointed at with NOTIFY_SOCKET.

Every datagram is kept with the kernel's receive timestamp (SO_TIMESTAMP: when it was queued,
not when the test got round to reading it) and the sender's pid (SO_PASSCRED, as systemd checks
NotifyAccess=main).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

# Linux: SO_TIMESTAMP (= SCM_TIMESTAMP) is 29; Python does not name it.
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)
_TIMEVAL = struct.Struct("@ll")
_UCRED = struct.Struct("@iII")


@dataclass(frozen=True)
class Notification:
    states: dict[str, str]  # KEY=value lines of one datagram
    queued_at: float  # kernel receive timestamp (seconds, wall clock)
    pid: int  # the sender

    def has(self, key: str, value: str = "1") -> bool:
        return self.states.get(key) == value


class NotifySocket:
    """Bound at ``@etrans-test-<random>`` (the abstract namespace) until closed."""

    def __init__(self) -> None:
        self.name = f"@etrans-test-{uuid.uuid4().hex}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
        self._sock.bind("\0" + self.name[1:])
        self._sock.settimeout(0.2)
        self._received: list[Notification] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        space = socket.CMSG_SPACE(_TIMEVAL.size) + socket.CMSG_SPACE(_UCRED.size)
        while not self._closed:
            try:
                data, ancillary, _flags, _address = self._sock.recvmsg(4096, space)
            except TimeoutError:
                continue
            except OSError:
                return
            queued_at, pid = 0.0, 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
                    seconds, micros = _TIMEVAL.unpack(payload[:_TIMEVAL.size])
                    queued_at = seconds + micros / 1e6
                elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack(payload[:_UCRED.size])[0]
            states = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._lock:
                self._received.append(Notification(states, queued_at, pid))

    @property
    def received(self) -> list[Notification]:
        with self._lock:
            return list(self._received)

    def wait_for(self, key: str, value: str = "1", *, after: int = 0, timeout: float = 60.0,
                 alive: Callable[[], bool] | None = None) -> int:
        """The index of the first datagram from ``after`` on with ``key=value``."""
        return self.wait_until(lambda n: n.has(key, value), f"{key}={value}", after=after,
                               timeout=timeout, alive=alive)

    def wait_until(self, matches: Callable[[Notification], bool], what: str, *, after: int = 0,
                   timeout: float = 60.0, alive: Callable[[], bool] | None = None) -> int:
        """The index of the first datagram from ``after`` on that ``matches``; fails after
        ``timeout`` seconds (a generous bound, not a measurement), or when ``alive()`` turns
        false (the process exited)."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.received
            for index in range(after, len(received)):
                if matches(received[index]):
                    return index
            if time.monotonic() > deadline or (alive is not None and not alive()):
                raise AssertionError(f"no {what} on {self.name} after #{after}: "
                                     f"{[n.states for n in received]}")
            time.sleep(0.02)

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=5)
        self._sock.close()
