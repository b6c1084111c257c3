"""Process lifetime (etrans.runtime) in a real process: drain, drain deadline, second signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# A service whose in-flight work takes WORK seconds after the stop request, under a drain
# deadline of DRAIN seconds.  It prints "ready" once the signal handler is installed.
SERVICE = textwrap.dedent("""
    import sys, trio
    from etrans import observability, runtime

    WORK, DRAIN = float(sys.argv[1]), float(sys.argv[2])
    PARENT_PIPE = 0 if sys.argv[3:] == ["supervised"] else None

    async def main(shutdown):
        async def announce():
            await trio.sleep(0.2)  # the signal receiver is open by now
            print("ready", flush=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announce)
            await shutdown.wait_requested()
            await trio.sleep(WORK)  # finishing in-flight work
            runtime.log.info("in-flight work done")

    observability.configure("runtime-test", json=True)
    sys.exit(runtime.run(main, DRAIN, parent_pipe=PARENT_PIPE))
""")


def start(work: float, drain: float, *, supervised: bool = False) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVICE, str(work), str(drain), *(["supervised"] * supervised)],
        stdin=subprocess.PIPE if supervised else None, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    first = process.stdout.readline()
    if first.strip() != "ready":
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"service did not start: {first}{out}\n{err}")
    return process


def events(out: str) -> list[str]:
    return [json.loads(line)["event"] for line in out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_lets_in_flight_work_finish_then_exits_0(sig):
    process = start(work=1.0, drain=30)
    started = time.monotonic()
    process.send_signal(sig)
    out, err = process.communicate(timeout=30)
    took = time.monotonic() - started
    print(f"drained and exited {took:.2f} s after the signal (work took 1 s)")
    assert process.returncode == 0, err
    assert events(out) == ["stopping", "in-flight work done", "stopped"]
    assert json.loads(out.splitlines()[-1])["drained"] is True


def test_drain_deadline_cancels_work_and_still_exits_0():
    process = start(work=60, drain=1.0)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    took = time.monotonic() - started
    print(f"exited {took:.2f} s after SIGTERM with a 1 s drain deadline")
    assert process.returncode == 0, err
    assert "in-flight work done" not in events(out)
    assert json.loads(out.splitlines()[-1])["drained"] is False
    assert took < 30  # not the 60 s of work (the timeout above would fire first anyway)


def test_second_signal_exits_at_once():
    process = start(work=60, drain=60)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert process.poll() is None, "the first signal must start a drain, not exit"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, _err = process.communicate(timeout=30)
    took = time.monotonic() - started
    print(f"exited {took * 1000:.0f} ms after the second SIGTERM")
    assert process.returncode == 128 + signal.SIGTERM
    assert "second signal, exiting now" in events(out)
    assert "in-flight work done" not in events(out)


def close_stdin(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    process.stdin = None  # communicate() would flush it


def test_a_supervised_process_drains_when_its_parent_closes_the_pipe():
    """etrans.bootstrap.processes asks a child to stop by closing its stdin: a drain."""
    process = start(work=1.0, drain=30, supervised=True)
    close_stdin(process)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert events(out) == ["stopping", "in-flight work done", "stopped"]
    assert json.loads(out.splitlines()[0])["asked_by"] == "parent process"
    assert json.loads(out.splitlines()[-1])["drained"] is True


def test_the_parents_request_is_not_a_first_signal():
    """Under systemd (KillMode=control-group) a child gets SIGTERM and its parent's request:
    it drains; only a second signal exits at once."""
    process = start(work=2.0, drain=30, supervised=True)
    close_stdin(process)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert process.poll() is None, "one signal after the parent's request must not exit"
    process.send_signal(signal.SIGTERM)
    out, _err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert "second signal, exiting now" in events(out)


# A service that announces itself and then blocks (no checkpoint) during its startup.
SLOW_START = textwrap.dedent("""
    import sys, time
    from etrans import observability, runtime

    async def main(shutdown):
        print("ready", flush=True)
        time.sleep(1.0)  # blocking startup work: the signal arrives meanwhile
        await shutdown.wait_requested()

    observability.configure("runtime-test", json=True)
    sys.exit(runtime.run(main, 5))
""")


def test_signal_during_startup_drains_instead_of_killing():
    """The signal handlers are installed before the service starts."""
    process = subprocess.Popen([sys.executable, "-c", SLOW_START], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert events(out) == ["stopping", "stopped"]
