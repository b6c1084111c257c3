"""Crash and stop tests: a consumer subprocess is killed (-9) or stopped (SIGTERM) mid-run,
then restarted in the same group.  Nothing may be lost; duplicates are bounded (kill -9) or
absent (SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.harness.servers import unique_name
from tests.integration.pipeline_helpers import committed_offsets, produce

REPO = Path(__file__).resolve().parents[2]
CHANNEL_SIZE = 200
POLL_BATCH = 100
COMMIT_INTERVAL = 0.5


def start_child(bootstrap: str, topic: str, group: str, record: Path, log: Path,
                *extra: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "tests.integration.pipeline_child",
        "--bootstrap", bootstrap, "--topic", topic, "--group", group, "--record", str(record),
        "--channel-size", str(CHANNEL_SIZE), "--poll-batch", str(POLL_BATCH),
        "--commit-interval", str(COMMIT_INTERVAL), *extra,
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def records(path: Path) -> list[tuple[int, int, float]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:  # a line cut by kill -9 would be shorter
            rows.append((int(parts[0]), int(parts[1]), float(parts[2])))
    return rows


def wait_for_records(path: Path, count: int, child: subprocess.Popen[bytes], log: Path,
                     timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(records(path)) < count:
        assert child.poll() is None, f"child exited early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no progress:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def peak_rate(rows: list[tuple[int, int, float]]) -> float:
    """Most messages processed within any one-second window."""
    times = sorted(t for _, _, t in rows)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] < t - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return float(best)


def run_to_end(bootstrap: str, topic: str, group: str, record: Path, log: Path,
               delay: str) -> None:
    child = start_child(bootstrap, topic, group, record, log, "--stop-at-end", "--delay", delay)
    try:
        assert child.wait(timeout=90) == 0, log.read_text()[-3000:]
    finally:
        if child.poll() is None:
            child.kill()


def test_kill_9_then_restart_loses_nothing(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any, tmp_path: Path
) -> None:
    topic = new_topic(partitions=3, prefix="pipeline-kill")
    ends = produce(kafka_bootstrap, topic, 6000, 3)
    group = unique_name("pipeline-kill-group")
    record, log = tmp_path / "processed.txt", tmp_path / "child.log"

    child = start_child(kafka_bootstrap, topic, group, record, log, "--delay", "0.004")
    try:
        wait_for_records(record, 2000, child, log)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    first_run = records(record)
    rate = peak_rate(first_run)

    run_to_end(kafka_bootstrap, topic, group, record, log, "0")

    counts = Counter((p, o) for p, o, _ in records(record))
    expected = {(p, o) for p, end in ends.items() for o in range(end)}
    assert set(counts) == expected, "messages lost"
    duplicates = sum(c - 1 for c in counts.values())
    bound = CHANNEL_SIZE + POLL_BATCH + rate * COMMIT_INTERVAL
    print(f"\nkill -9 after {len(first_run)} processed: {duplicates} processed twice "
          f"(bound: in-flight window {CHANNEL_SIZE + POLL_BATCH} + one commit interval "
          f"at {rate:.0f}/s = {bound:.0f})")
    assert duplicates <= bound
    assert committed_offsets(kafka_bootstrap, group, topic, 3, kafka_test_config) == ends


def test_sigterm_then_restart_loses_nothing_and_repeats_nothing(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any, tmp_path: Path
) -> None:
    topic = new_topic(partitions=3, prefix="pipeline-term")
    ends = produce(kafka_bootstrap, topic, 6000, 3)
    group = unique_name("pipeline-term-group")
    record, log = tmp_path / "processed.txt", tmp_path / "child.log"

    child = start_child(kafka_bootstrap, topic, group, record, log, "--delay", "0.004")
    try:
        wait_for_records(record, 2000, child, log)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if child.poll() is None:
            child.kill()
    first_run = len(records(record))
    assert '"child-done"' in log.read_text()

    run_to_end(kafka_bootstrap, topic, group, record, log, "0")

    counts = Counter((p, o) for p, o, _ in records(record))
    expected = {(p, o) for p, end in ends.items() for o in range(end)}
    assert set(counts) == expected, "messages lost"
    twice = sorted(k for k, c in counts.items() if c > 1)
    print(f"\nSIGTERM after {first_run} processed: {len(twice)} processed twice")
    assert twice == []
    assert committed_offsets(kafka_bootstrap, group, topic, 3, kafka_test_config) == ends
