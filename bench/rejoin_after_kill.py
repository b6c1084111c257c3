"""Benchmark: how long a consumer restarted after ``kill -9`` waits for its partitions.

A consumer subprocess (``tests/integration/pipeline_child.py``: the etrans pipeline, 10 workers,
a slow task so that it is mid-backlog) consumes a 3-partition topic in a fresh group; after it
processed ``--warmup`` messages it is killed with SIGKILL, and a new one is started at once in
the same group.  Measured: seconds from the restart to the first message the new process
handles.  For each session timeout (``--sessions``, default 45000 ms = librdkafka's default and
6000 ms = the test suite's) it runs dynamic membership (no ``group.instance.id``: the group waits
for the dead member's session to expire, then rebalances) and static membership (the same
``group.instance.id`` before and after: what ``etrans sendmail``/``fetchlog`` do by default).

The broker is $ETRANS_TEST_KAFKA_BOOTSTRAP, or a tansu started here (tests/harness).  Last line:
``ratio <median static / median dynamic>`` for the first session timeout (lower is better).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.servers import ENV_KAFKA, TansuBroker, create_topic  # noqa: E402
from tests.integration.pipeline_helpers import produce  # noqa: E402


def start_child(bootstrap: str, topic: str, group: str, record: Path, log: Path,
                session_ms: int, instance_id: str | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.integration.pipeline_child", "--bootstrap",
               bootstrap, "--topic", topic, "--group", group, "--record", str(record),
               "--delay", "0.05", "--session-timeout-ms", str(session_ms)]
    if instance_id is not None:
        command += ["--instance-id", instance_id]
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO)})


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def first_time(path: Path) -> float | None:
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split()
        if len(parts) == 3:
            return float(parts[2])
    return None


def one_run(bootstrap: str, session_ms: int, static: bool, warmup: int, timeout: float,
            workdir: Path) -> float:
    topic = create_topic(bootstrap, f"rejoin-{uuid.uuid4().hex[:12]}", partitions=3)
    produce(bootstrap, topic, 30_000, 3)
    group = f"rejoin-group-{uuid.uuid4().hex[:12]}"
    instance = f"bench-host-{uuid.uuid4().hex[:6]}-worker" if static else None
    first_record, second_record = workdir / f"{group}-1.txt", workdir / f"{group}-2.txt"
    log = workdir / f"{group}.log"
    first = start_child(bootstrap, topic, group, first_record, log, session_ms, instance)
    try:
        deadline = time.monotonic() + 120
        while lines(first_record) < warmup:
            if first.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"first consumer made no progress:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    restarted_at = time.monotonic()
    second = start_child(bootstrap, topic, group, second_record, log, session_ms, instance)
    try:
        deadline = restarted_at + timeout
        while (seen := first_time(second_record)) is None:
            if second.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"restarted consumer got nothing in {timeout} s:\n"
                                   f"{log.read_text()[-2000:]}")
            time.sleep(0.02)
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait(10)
    return seen - restarted_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="45000,6000",
                        help="session.timeout.ms values, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()

    broker = None
    bootstrap = os.environ.get(ENV_KAFKA)
    if not bootstrap:
        broker = TansuBroker().start()
        bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    ratios = []
    try:
        with tempfile.TemporaryDirectory(prefix="etrans-rejoin-") as tmp:
            for session_ms in (int(s) for s in args.sessions.split(",")):
                medians = {}
                for static in (False, True):
                    name = "static " if static else "dynamic"
                    times = [one_run(bootstrap, session_ms, static, args.warmup, args.timeout,
                                     Path(tmp)) for _ in range(args.rounds)]
                    medians[static] = statistics.median(times)
                    print(f"session {session_ms / 1000:g} s, {name} membership: first message "
                          f"after the restart in {', '.join(f'{t:.1f}' for t in times)} s "
                          f"(median {medians[static]:.1f} s)", flush=True)
                ratios.append(medians[True] / medians[False])
    finally:
        if broker is not None:
            broker.cleanup()
    print(f"ratio {ratios[0]:.3f}")


if __name__ == "__main__":
    main()
