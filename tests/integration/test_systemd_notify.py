"""Readiness under a service manager (etrans.systemd_notify, docs/operations.md): ``etrans
serve``, ``sendmail``, ``fetchlog``, ``webhooks`` and ``dev`` as real processes, started side by
side on the harness's services, each with NOTIFY_SOCKET pointing at a datagram socket of the
test's own (tests/integration/notify_support.py) and WATCHDOG_USEC set.

What a service manager relies on, each checked on what the process really does:
- READY=1 once it serves: the API answers /healthz at the first attempt after READY (no retry);
  a worker's READY names the topics its consumers subscribed to, and a STATUS line follows
  when its partitions are assigned;
- WATCHDOG=1 never more often than every WATCHDOG_USEC/2 (kernel receive timestamps), and
  none at all while the Trio loop is blocked: a test-side ``sitecustomize`` (not etrans code)
  makes SIGUSR1 block the main thread, i.e. the loop, until the test releases it;
- STOPPING=1 after SIGTERM, then exit 0; every datagram from the main process (NotifyAccess=main).
Waits have generous bounds; nothing asserts how fast anything is.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from etrans.systemd_notify import SystemdNotify
from tests.harness.servers import free_port, unique_name
from tests.integration.notify_support import Notification, NotifySocket

ETRANS = str(Path(sys.executable).with_name("etrans"))
WATCHDOG_USEC = 1_000_000
PING_INTERVAL = WATCHDOG_USEC / 2_000_000  # what etrans must keep between pings at least

# Test-side only: imported by the interpreter of the `etrans dev` process (PYTHONPATH), it
# makes SIGUSR1 block the main thread, which runs the Trio loop, until the FIFO is written.
SITECUSTOMIZE = textwrap.dedent("""
    import os, signal, socket

    _ADDRESS = os.environ.get("NOTIFY_SOCKET", "")  # read before etrans removes it
    _FIFO = os.environ.get("ETRANS_TEST_BLOCK_FIFO")

    def _tell(state):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), "\\0" + _ADDRESS[1:])

    def _block(signum, frame):
        _tell("TEST_BLOCKED=1")
        with open(_FIFO, "rb") as fifo:
            fifo.read()
        _tell("TEST_RELEASED=1")

    if _ADDRESS.startswith("@") and _FIFO:
        signal.signal(signal.SIGUSR1, _block)
""")


@dataclass
class Service:
    command: str
    process: subprocess.Popen[bytes]
    notify: NotifySocket
    log: Path
    url: str | None = None  # the API's, for serve and dev

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def index(self, key: str, value: str = "1", after: int = 0) -> int:
        try:
            return self.notify.wait_for(key, value, after=after, alive=self.alive)
        except AssertionError as exc:
            pytest.fail(f"etrans {self.command}: {exc}\n{self.tail()}")

    def pings(self) -> list[Notification]:
        return [n for n in self.notify.received if n.has("WATCHDOG")]


@pytest.fixture
def services(etrans_env: Callable[..., dict[str, str]], new_topic: Callable[..., str],
             tmp_path: Path) -> Iterator[dict[str, Service]]:
    env = etrans_env(KAFKA_EVENTS_TOPIC=new_topic(prefix="events"),
                     WEBHOOKS_GROUP_ID=unique_name("webhooks"))
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(SITECUSTOMIZE)
    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    dev_bind = f"127.0.0.1:{free_port()}"
    dev_env = {"PATH": env["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
               "PYTHONPATH": os.pathsep.join([str(blocker), *filter(None, [
                   os.environ.get("PYTHONPATH")])]),
               "ETRANS_TEST_BLOCK_FIFO": str(fifo)}
    commands = {
        "serve": ([ETRANS, "serve"], env, f"http://{env['ETRANS_BIND']}"),
        "sendmail": ([ETRANS, "sendmail"], env, None),
        "fetchlog": ([ETRANS, "fetchlog"], env, None),
        "webhooks": ([ETRANS, "webhooks"], env, None),
        "dev": ([ETRANS, "dev", "--data-dir", str(tmp_path / "dev"), "--bind", dev_bind],
                dev_env, f"http://{dev_bind}"),
    }
    started: dict[str, Service] = {}
    try:
        for command, (argv, base, url) in commands.items():
            notify = NotifySocket()
            log = tmp_path / f"{command}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT,
                    env={**base, "NOTIFY_SOCKET": notify.name,
                         "WATCHDOG_USEC": str(WATCHDOG_USEC)})
            started[command] = Service(command, process, notify, log, url)
        yield started
    finally:
        for service in started.values():
            if service.alive():
                service.process.kill()
                service.process.wait(timeout=30)
            service.notify.close()


def test_every_subcommand_notifies_ready_watchdog_and_stopping(services, tmp_path):
    ready = {}
    for command, service in services.items():
        ready[command] = service.index("READY")
        if service.url is not None:  # serving means answering, at the first attempt
            assert httpx.get(service.url + "/healthz", timeout=10).status_code == 200
        status = service.notify.received[ready[command]].states["STATUS"]
        print(f"{command}: READY=1, STATUS={status}")
        if command in ("sendmail", "fetchlog", "webhooks"):
            assert "subscribed to" in status
    assert services["serve"].notify.received[ready["serve"]].states["STATUS"].startswith(
        "HTTP on ")

    # A worker's partitions, once assigned, are told as a status line.
    for command in ("sendmail", "fetchlog", "webhooks"):
        service = services[command]
        consuming = f"{command}: consuming "
        service.notify.wait_until(lambda n, c=consuming: n.states.get("STATUS", "").startswith(c),
                                  "STATUS=... consuming", after=ready[command],
                                  alive=service.alive)

    # Pings from every process, never closer together than WATCHDOG_USEC/2 (etrans sleeps
    # that long between two; the timestamps are the kernel's, so the test's own delays in
    # reading do not count).
    for service in services.values():
        service.notify.wait_until(lambda _n, s=service: len(s.pings()) >= 4, "4 pings",
                                  alive=service.alive)
        times = [n.queued_at for n in service.pings()]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        print(f"{service.command}: ping gaps {[round(g, 3) for g in gaps]}")
        assert min(gaps) >= PING_INTERVAL - 0.005, gaps

    # The loop of `etrans dev` blocked (a SIGUSR1 handler in its main thread, see above): no
    # ping at all for four intervals; released, the pings resume.
    dev = services["dev"]
    dev.process.send_signal(signal.SIGUSR1)
    blocked = dev.index("TEST_BLOCKED")
    time.sleep(4 * PING_INTERVAL)
    while_blocked = [n.states for n in dev.notify.received[blocked + 1:]]
    with (tmp_path / "release").open("wb"):
        pass
    released = dev.index("TEST_RELEASED", after=blocked)
    assert while_blocked == [], while_blocked
    dev.index("WATCHDOG", after=released)

    # SIGTERM: STOPPING=1, then a drained exit; nothing claims readiness again.
    for service in services.values():
        service.process.send_signal(signal.SIGTERM)
    for command, service in services.items():
        stopping = service.index("STOPPING")
        assert service.process.wait(timeout=60) == 0, service.tail()
        received = service.notify.received
        assert [i for i, n in enumerate(received) if n.has("READY")] == [ready[command]]
        assert ready[command] < stopping
        assert {n.pid for n in received} == {service.process.pid}, "NotifyAccess=main"


async def test_send_reaches_a_socket_path_and_survives_a_missing_socket():
    # AF_UNIX paths are short (108 bytes): a directory of its own under /tmp.
    directory = tempfile.mkdtemp(prefix="etrans-notify-")
    path = os.path.join(directory, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        receiver.bind(path)
        notify = SystemdNotify.from_environment({"NOTIFY_SOCKET": path}, pid=os.getpid())
        assert await notify.send("READY=1", "STATUS=serving")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=serving"
    finally:
        receiver.close()
        shutil.rmtree(directory)
    # The manager gone: logged, not raised (a service is not stopped for it).
    with capture_logs() as logs:
        assert not await notify.send("WATCHDOG=1")
    assert [entry["event"] for entry in logs] == ["could not notify the service manager"]
    assert not await SystemdNotify().send("READY=1")  # no NOTIFY_SOCKET: nothing to do
