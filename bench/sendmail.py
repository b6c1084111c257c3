"""Benchmark: ``etrans sendmail`` against Postfix's smtp-sink, with raw baselines from the same run.

1. etrans sendmail (a subprocess, WORKER_POOL_SIZE=10) drains a 20,000-message backlog from Kafka
   until smtp-sink has counted them all;
2. a raw smtplib loop: 10 threads, each with one reused connection, sends the same messages
   pre-built (MIME rendered before the clock starts), in its own Python process (as etrans
   runs in its own: this process has the smtp-sink counter thread, which would compete with
   the senders for the GIL);
3. Postfix's smtp-source with 10 sessions (``-d``: connections reused) sends 20,000 messages;
4. with smtp-sink delaying each DATA reply by 1 s (simulated latency), etrans with pool sizes 1
   and 10 (goal: the pool of 10 is at least 8x faster).

1b. the same as 1 with DKIM signing on (SENDMAIL_DKIM_SIGNING=on, the sender domain's key in a
   SQLite USEND DB as ``etrans dev`` keeps it; step 1 runs with SENDMAIL_DKIM_SIGNING=off);
1c. the same as 1 with ``--processes 2`` (two consumers of the group, one per core; a backlog
   on 4 partitions, 2 each): its rate is counted from the moment both children consume (the
   parent's STATUS, through a notify socket of the bench's own), after the group's rebalance;
2b. the raw loop pinned to one CPU, and one raw process per CPU (each pinned, the connections
   and messages split between them, started together: the rate is all messages over the time
   from the first start to the last end);
2c. a Go ``net/smtp`` loop with 10 reused connections (bench/smtp_loop.go, standard library
   only, built into a temporary directory with Debian's ``golang-go``): a reference, not in
   the ratio.

Steps 1, 1b and 2 run in ``--rounds`` (default 5) alternating rounds, the side that goes first
alternating too: each round produces a fresh backlog (new topic, new message_ids: the worker
skips message_ids it already delivered, so an old backlog cannot be replayed) and the raw side
sends that round's messages.  The raw baseline's 10 threads share the GIL with the rest of the
machine, so one round per side is not a stable measurement: every round's rates and CPU per
message are printed, and the ratio compares the medians of both sides.

Unpinned, the raw loop's 10 threads sometimes fall into a GIL hand-off regime across the 2
CPUs (kernel CPU per message ~35 -> 150-240 us, rate ~9,000 -> 3,800-6,600 msg/s) that lasts
minutes, so medians of 5 rounds do not remove it; pinned, its CPU per message stays 54-58 us.
So the baseline is the best plain-Python loop: the highest median of the unpinned, pinned and
one-process-per-CPU variants.

Prints the rates, then ``signing ratio <median signed / median unsigned etrans>`` (goal >= 0.5),
then ``ratio <median etrans --processes 2 / median of the best raw Python loop>`` last (goal
>= 0.8; etrans with one process against the same baseline is printed above it).

Needs ``smtp-sink``/``smtp-source`` (Debian package ``postfix``: ``apt-get install postfix``),
``go`` (``golang-go``; both installed by scripts/system-packages),
a Kafka-API broker (tansu is started unless $ETRANS_TEST_KAFKA_BOOTSTRAP is set) and Redis
(127.0.0.1:6379 or $ETRANS_TEST_REDIS_URL).  Options: ``--messages N``, ``--rounds N``,
``--skip-latency``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etrans.domain.mime import render  # noqa: E402
from etrans.workers.sendmail import decode_request  # noqa: E402
from tests.harness.servers import (  # noqa: E402
    ServiceUnavailable,
    create_topic,
    ensure_kafka,
    ensure_redis,
    free_port,
    unique_name,
)
from tests.integration.notify_support import NotifySocket  # noqa: E402
from tests.integration.sendmail_support import (  # noqa: E402
    CredentialFixture,
    produce_requests,
    simple_request,
)

SINK_USER = "nobody"
_MESG = re.compile(rb"mesg=(\d+)")


def need_postfix_tools() -> None:
    missing = [tool for tool in ("smtp-sink", "smtp-source") if shutil.which(tool) is None
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"bench/sendmail.py: {', '.join(missing)} not found.  They come with Postfix: "
              "`DEBIAN_FRONTEND=noninteractive apt-get install -y postfix` (as root), then "
              "run this again.", file=sys.stderr)
        sys.exit(2)


def tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Sink:
    """smtp-sink on a free port, counting accepted messages (``-c`` running counters)."""

    def __init__(self, *, data_delay: int = 0) -> None:
        self.port = free_port()
        command = [tool("smtp-sink"), "-c", "-a", "-m", "512"]
        if os.geteuid() == 0:
            command += ["-u", SINK_USER]
        if data_delay:
            command += ["-w", str(data_delay)]
        command += [f"127.0.0.1:{self.port}", "1024"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        self.count = 0
        self.first_at: float | None = None
        self.changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                smtplib.SMTP("127.0.0.1", self.port, timeout=2).quit()
                break
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("smtp-sink did not start")
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        while chunk := self.process.stdout.read1(65536):  # type: ignore[attr-defined]
            buffer = (buffer + chunk)[-4096:]
            found = _MESG.findall(buffer)
            if found:
                count = int(found[-1])
                with self.changed:
                    if count > self.count:
                        if self.first_at is None:
                            self.first_at = time.monotonic()
                        self.count = count
                        self.changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> float:
        """Wait until ``count`` messages were accepted; returns when the last one was."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.count < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"smtp-sink counted {self.count} of {count}")
                self.changed.wait(min(left, 1.0))
        return time.monotonic()

    def reset_clock(self) -> None:
        with self.changed:
            self.first_at = None

    def stop(self) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        if self.process.poll() is None:
            self.process.kill()


def worker_env(base: dict[str, str], sink: Sink, topic: str, pool: int) -> dict[str, str]:
    env = dict(base)
    env.update({
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": unique_name("bench-sendmail"),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(sink.port),
        "SMTP_SECURE": "false",
        "WORKER_POOL_SIZE": str(pool),
        "ETRANS_LOG_LEVEL": os.environ.get("BENCH_SENDMAIL_LOG_LEVEL", "WARNING"),
    })
    return env


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all its threads, the DKIM signing threads
    included) and of its running children so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    user, system = int(fields[11]) / tick, int(fields[12]) / tick
    # Any thread's children: trio starts processes from a worker thread.
    for child in {c for p in Path(f"/proc/{pid}/task").glob("*/children")
                  for c in p.read_text().split()}:
        with contextlib.suppress(OSError):
            child_user, child_system = cpu_times(int(child))
            user, system = user + child_user, system + child_system
    return user, system


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """User + system CPU seconds of one thread (``tid == pid``: the main thread, Trio's)."""
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class GroupSettled:
    """When every child of ``sendmail --processes N`` consumes (the parent's STATUS shows N
    ``consuming`` lines: the rebalance that the later joins caused is over), and how many
    messages smtp-sink had counted then."""

    def __init__(self, processes: int, sink: Sink) -> None:
        self.notify = NotifySocket()
        self.processes, self.sink = processes, sink
        self.at: float | None = None
        self.count = 0
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        with contextlib.suppress(AssertionError):
            self.notify.wait_until(
                lambda n: n.states.get("STATUS", "").count(" consuming ") >= self.processes,
                "every child consuming", timeout=600)
            self.at, self.count = time.monotonic(), self.sink.count

    def close(self) -> None:
        self.notify.close()


CPU_PER_MESSAGE: dict[str, float] = {}  # run name -> CPU microseconds per message
SYS_PER_MESSAGE: dict[str, float] = {}  # run name -> of which system (kernel) microseconds


def run_etrans(env: dict[str, str], sink: Sink, count: int, timeout: float,
               reply_delay: float = 0.0, processes: int = 1) -> tuple[float, float]:
    """(rate from the first to the last delivery, rate from process start).

    ``processes`` > 1: ``sendmail --processes N``, its steady rate counted from the moment
    every child consumes (:class:`GroupSettled`) when at least a quarter of the messages
    were left then (``CPU_PER_MESSAGE["after-settled"]``: the share counted).

    Also records the process's CPU time per message between the first and the last delivery
    (``CPU_PER_MESSAGE["etrans"]``): a steadier figure than rates on a shared machine.

    With a reply delay, deliveries complete in waves of the pool size: the clock then starts one
    delay before the first delivery (when the first DATA was sent), and counts all ``count``."""
    sink.reset_clock()
    start_count = sink.count
    started = time.monotonic()
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept for the post-mortem
        prefix="bench-sendmail-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "etrans", "sendmail"]
    settled = GroupSettled(processes, sink) if processes > 1 else None
    if settled is not None:
        command += ["--processes", str(processes)]
        env = {**env, "NOTIFY_SOCKET": settled.notify.name}
    if os.environ.get("BENCH_SENDMAIL_WRAP"):  # e.g. "py-spy record -o out.svg --" (profiling)
        command = os.environ["BENCH_SENDMAIL_WRAP"].split() + command
    process = subprocess.Popen(command, env=env,
                               stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    cpu_at_first: list[tuple[int, float]] = []

    def note_first_delivery() -> None:
        with sink.changed:
            while sink.count == start_count and process.poll() is None:
                sink.changed.wait(0.5)
            with contextlib.suppress(OSError):
                cpu_at_first.append((sink.count, *cpu_times(process.pid),
                                     thread_cpu_seconds(process.pid, process.pid),
                                     time.monotonic()))

    watcher = threading.Thread(target=note_first_delivery, daemon=True)
    watcher.start()
    try:
        finished = sink.wait_for(start_count + count, timeout)
        with contextlib.suppress(OSError):
            user_at_end, sys_at_end = cpu_times(process.pid)
            main_at_end = thread_cpu_seconds(process.pid, process.pid)
            if cpu_at_first:
                counted, user_start, sys_start, main_start, wall_start = cpu_at_first[0]
                # How busy the Trio thread was: near 100% = CPU-bound in that thread.
                CPU_PER_MESSAGE["trio-thread-busy"] = (
                    100 * (main_at_end - main_start) / max(finished - wall_start, 1e-9))
                sent = max(start_count + count - counted, 1)
                CPU_PER_MESSAGE["etrans"] = ((user_at_end - user_start + sys_at_end - sys_start)
                                             * 1e6 / sent)
                SYS_PER_MESSAGE["etrans"] = (sys_at_end - sys_start) * 1e6 / sent
    except TimeoutError:
        print(Path(log.name).read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(45)
        except subprocess.TimeoutExpired:
            process.kill()
        if settled is not None:
            settled.close()
    first = sink.first_at or started
    left = start_count + count - settled.count if settled and settled.at else 0
    if settled is not None and settled.at is not None and left >= count // 4:
        CPU_PER_MESSAGE["after-settled"] = 100 * left / count
        return left / max(finished - settled.at, 1e-9), count / (finished - started)
    if reply_delay:
        steady = count / (finished - first + reply_delay)
    else:
        steady = (count - 1) / max(finished - first, 1e-9)
    overall = count / (finished - started)
    return steady, overall


RAW_WALL: dict[str, float] = {}  # the raw loop's wall-clock start and end (time.time())


def run_raw_smtplib(port: int, messages: list[tuple[str, list[str], bytes]],
                    connections: int = 10) -> float:
    chunks = [messages[i::connections] for i in range(connections)]
    barrier = threading.Barrier(connections + 1)
    errors: list[BaseException] = []

    def sender(chunk: list[tuple[str, list[str], bytes]]) -> None:
        try:
            client = smtplib.SMTP("127.0.0.1", port, timeout=30)
            client.ehlo()
            barrier.wait()
            for sender_address, recipients, data in chunk:
                client.sendmail(sender_address, recipients, data)
            client.quit()
        except BaseException as exc:
            errors.append(exc)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.abort()

    threads = [threading.Thread(target=sender, args=(c,)) for c in chunks]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    RAW_WALL["start"] = time.time()
    times_start = os.times()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    RAW_WALL["end"] = time.time()
    times_end = os.times()
    user, system = times_end.user - times_start.user, times_end.system - times_start.system
    CPU_PER_MESSAGE["raw"] = (user + system) * 1e6 / len(messages)
    SYS_PER_MESSAGE["raw"] = system * 1e6 / len(messages)
    if errors:
        raise errors[0]
    return len(messages) / elapsed


def run_raw_subprocess(port: int, messages: list[tuple[str, list[str], bytes]],
                       pin_cpu: int | None = None) -> float:
    """``run_raw_smtplib`` in a fresh Python process, as etrans runs in its own process.

    In this process the smtp-sink counter thread wakes for every accepted message (``-c``
    updates on each ".") and would compete with the 10 sender threads for the GIL (and be
    counted in their CPU time); the subprocess holds only the senders.  The messages are
    handed over pre-built (pickled), so the subprocess renders nothing.  ``pin_cpu``: the
    subprocess (all its threads) runs on that one CPU only."""
    [result] = run_raw_processes(port, [messages], [pin_cpu], connections=10)
    CPU_PER_MESSAGE["raw"] = result["cpu_us"]
    SYS_PER_MESSAGE["raw"] = result["sys_us"]
    return float(result["rate"])


def run_raw_per_cpu(port: int, messages: list[tuple[str, list[str], bytes]]) -> float:
    """One raw process per CPU, each pinned to its own with its share of the messages and of
    the 10 connections, started together; all messages over first start -> last end."""
    cpus = sorted(os.sched_getaffinity(0))
    shares = [messages[i::len(cpus)] for i in range(len(cpus))]
    results = run_raw_processes(port, shares, cpus, connections=max(1, 10 // len(cpus)))
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    CPU_PER_MESSAGE["raw"] = sum(r["cpu_us"] * len(m) for r, m in zip(results, shares,
                                                                      strict=True)) / len(messages)
    SYS_PER_MESSAGE["raw"] = sum(r["sys_us"] * len(m) for r, m in zip(results, shares,
                                                                      strict=True)) / len(messages)
    return len(messages) / elapsed


def run_raw_processes(port: int, shares: list[list[tuple[str, list[str], bytes]]],
                      pins: list[int | None], connections: int) -> list[dict[str, float]]:
    """``run_raw_smtplib`` in fresh Python processes, one per share, started together."""
    paths = []
    for share in shares:
        with tempfile.NamedTemporaryFile("wb", suffix=".pickle", delete=False) as handle:
            pickle.dump(share, handle, protocol=pickle.HIGHEST_PROTOCOL)
        paths.append(handle.name)
    try:
        running = []
        for path, pin in zip(paths, pins, strict=True):
            command = [sys.executable, __file__, "--raw-phase", str(port), path,
                       "--connections", str(connections)]
            if pin is not None:
                command += ["--pin-cpu", str(pin)]
            running.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                            cwd=str(ROOT)))
        outputs = [process.communicate()[0] for process in running]
        if any(process.returncode for process in running):
            raise RuntimeError(f"a raw smtplib process failed: {outputs}")
    finally:
        for path in paths:
            os.unlink(path)
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def raw_phase(port: int, path: str, pin_cpu: int | None, connections: int) -> None:
    """Runs in the subprocess: send the pickled messages, print rate, CPU and wall-clock start
    and end as JSON."""
    if pin_cpu is not None:
        os.sched_setaffinity(0, {pin_cpu})  # before the sender threads: they inherit it
    with open(path, "rb") as handle:
        messages = pickle.load(handle)  # our own file, written just before
    rate = run_raw_smtplib(port, messages, connections)
    print(json.dumps({"rate": rate, "cpu_us": CPU_PER_MESSAGE["raw"],
                      "sys_us": SYS_PER_MESSAGE["raw"], **RAW_WALL}))


def build_go_loop(work_dir: Path) -> Path:
    """bench/smtp_loop.go built into ``work_dir`` (GOPATH and GOCACHE there too: nothing
    written outside it, nothing fetched: standard library only)."""
    go = shutil.which("go")
    if go is None:
        print("bench/sendmail.py: go not found: it comes with Debian's golang-go, which "
              "scripts/system-packages installs.", file=sys.stderr)
        sys.exit(2)
    binary = work_dir / "smtp_loop"
    env = {**os.environ, "GOPATH": str(work_dir / "gopath"), "GOCACHE": str(work_dir / "gocache"),
           "GOFLAGS": "", "GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    subprocess.run([go, "build", "-o", str(binary), str(ROOT / "bench" / "smtp_loop.go")],
                   check=True, env=env, cwd=str(work_dir))
    return binary


def run_go_loop(binary: Path, port: int, messages: list[tuple[str, list[str], bytes]],
                work_dir: Path, connections: int = 10) -> float:
    path = work_dir / "messages.bin"
    with path.open("wb") as out:
        for sender_address, recipients, data in messages:
            out.write(f"{sender_address}\n{','.join(recipients)}\n{len(data)}\n".encode())
            out.write(data)
    result = subprocess.run([str(binary), f"127.0.0.1:{port}", str(path), str(connections)],
                            check=True, capture_output=True, text=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    CPU_PER_MESSAGE["go"] = figures["cpu_us"]
    return float(figures["rate"])


def run_smtp_source(port: int, count: int, message_file: Path, sessions: int = 10) -> float:
    started = time.monotonic()
    subprocess.run([tool("smtp-source"), "-d", "-s", str(sessions), "-m", str(count),
                    "-f", "sender@example.com", "-t", "to@example.com",
                    "-F", str(message_file), f"127.0.0.1:{port}"], check=True)
    return count / (time.monotonic() - started)


def fresh_backlog(bootstrap: str, user_id: str, count: int, label: str,
                  partitions: int = 3) -> tuple[str, list[tuple[str, list[str], bytes]]]:
    """A new topic holding ``count`` new requests, and the same requests pre-built for smtplib.

    Every round needs new message_ids: the worker records each delivered message_id in Redis
    and skips one already recorded, so a new consumer group over an old backlog sends nothing."""
    requests = [simple_request(f"<bench-{label}-{i}-{uuid.uuid4().hex[:10]}@etrans.bench>",
                               user_id) for i in range(count)]
    topic = create_topic(bootstrap, unique_name("bench-sendmail"), partitions=partitions)
    started = time.monotonic()
    produce_requests(bootstrap, topic, requests, partitions=partitions)
    produced = time.monotonic() - started
    prebuilt = []
    for request in requests:
        outgoing = decode_request(json.dumps(request).encode())
        prebuilt.append((outgoing.sender.email, outgoing.envelope_recipients(),
                         render(outgoing)))
    print(f"{label}: backlog of {count} messages on {topic} ({partitions} partitions, produced in "
          f"{produced:.1f} s); the same messages pre-built for raw smtplib")
    return topic, prebuilt


def signing_env(base: dict[str, str], user_id: str, work_dir: Path) -> dict[str, str]:
    """``base`` with DKIM signing on: the sender's domain (example.com, ``simple_request``'s) gets
    a key in a SQLite USEND DB made for the run, as ``etrans dev`` keeps its keys."""
    import trio

    from etrans.adapters.crypto.dkim_keys import DkimKeyCipher, generate_dkim_key_pair
    from etrans.adapters.sql.billing_local import LocalBillingGateway
    from etrans.dev import sqlite_db

    path = work_dir / "usend.sqlite3"
    db = sqlite_db.sqlite_database(path)
    pair = generate_dkim_key_pair()

    async def create() -> None:
        await db.run(sqlite_db.create_schema, db)
        await LocalBillingGateway(db, DkimKeyCipher(base["TOKEN_SECRET"])).create_domain(
            user_id=int(user_id), name="example.com", dkim_selector=pair.record.selector,
            dkim_public_key=pair.record.public_key_b64, dkim_private_key_pem=pair.private_key_pem)

    trio.run(create)
    db.dispose()
    return {**base, "SENDMAIL_DKIM_SIGNING": "on", "USEND_DB_URI": f"sqlite:///{path}"}


# The sides of a round, in the order of the first round, with their printed names.
SIDES = {
    "etrans": "etrans sendmail (pool 10)",
    "signed": "etrans sendmail, DKIM-signed",
    "etrans2": "etrans sendmail --processes 2",
    "raw": "raw smtplib (10 connections)",
    "pinned": "raw smtplib pinned to one CPU",
    "per-cpu": "raw smtplib, one process per CPU",
    "go": "Go net/smtp (10 connections, reference)",
}
RAW_SIDES = ("raw", "pinned", "per-cpu")  # the plain-Python loops the ratio may divide by


def spread(values: list[float], fmt: str = ",.0f") -> str:
    return f"median {statistics.median(values):{fmt}} (min {min(values):{fmt}}, " \
           f"max {max(values):{fmt}}; {', '.join(format(v, fmt) for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--raw-phase", nargs=2, metavar=("PORT", "PICKLE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--pin-cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_phase:
        raw_phase(int(args.raw_phase[0]), args.raw_phase[1], args.pin_cpu, args.connections)
        return
    need_postfix_tools()
    count = args.messages

    try:
        bootstrap, broker = ensure_kafka()
        redis_url, redis_server = ensure_redis()
    except ServiceUnavailable as exc:
        print(f"bench/sendmail.py: {exc}", file=sys.stderr)
        sys.exit(2)
    secret, iv = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    credentials = CredentialFixture(redis_url, secret, iv)
    sinks: list[Sink] = []
    work_dir = Path(tempfile.mkdtemp(prefix="bench-sendmail-dkim-"))
    try:
        user_id = credentials.add("bench-user", "bench-password")
        base_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
            "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LOG_TOPIC": create_topic(bootstrap, unique_name("bench-logs")),
            "KAFKA_CONF_SESSION_TIMEOUT_MS": "6000", "KAFKA_CONF_HEARTBEAT_INTERVAL_MS": "2000",
            "KAFKA_CONF_GROUP_PROTOCOL": "classic",
            "REDIS_URI": redis_url, "TOKEN_SECRET": secret, "TOKEN_IV": iv,
            "SENDMAIL_DKIM_SIGNING": "off",
            "SENDMAIL_DKIM_SIGNER": os.environ.get("SENDMAIL_DKIM_SIGNER", "process"),
        }
        signed_env = signing_env(base_env, user_id, work_dir)
        go_loop = build_go_loop(work_dir)
        print(f"{args.rounds} rounds of {count} messages per side: {', '.join(SIDES.values())}, "
              "alternating (the order reverses every round); the ratio compares the medians of "
              "etrans --processes 2 and of the best raw Python loop")
        sink = Sink()
        sinks.append(sink)
        rates: dict[str, list[float]] = {side: [] for side in SIDES}
        cpu: dict[str, list[float]] = {side: [] for side in SIDES}
        etrans_overall: list[float] = []
        pin_cpu = max(os.sched_getaffinity(0))
        prebuilt: list[tuple[str, list[str], bytes]] = []
        for round_number in range(1, args.rounds + 1):
            topic, prebuilt = fresh_backlog(bootstrap, user_id, count, f"round {round_number}")
            signed_topic, _ = fresh_backlog(bootstrap, user_id, count,
                                            f"round {round_number} (signed)")
            two_topic, _ = fresh_backlog(bootstrap, user_id, count,
                                         f"round {round_number} (2 processes)", partitions=4)
            figures: dict[str, str] = {}
            order = tuple(SIDES) if round_number % 2 else tuple(SIDES)[::-1]
            for side in order:
                CPU_PER_MESSAGE.clear()
                SYS_PER_MESSAGE.clear()
                if side == "etrans":
                    rate, overall = run_etrans(worker_env(base_env, sink, topic, 10), sink,
                                               count, timeout=max(300.0, count / 50))
                    etrans_overall.append(overall)
                    note = (f" (with start-up and group join {overall:,.0f}), Trio thread busy "
                            f"{CPU_PER_MESSAGE.get('trio-thread-busy', float('nan')):.0f}%")
                elif side == "signed":
                    rate, _ = run_etrans(worker_env(signed_env, sink, signed_topic, 10), sink,
                                         count, timeout=max(300.0, count / 20))
                    note = (f", Trio thread busy "
                            f"{CPU_PER_MESSAGE.get('trio-thread-busy', float('nan')):.0f}%")
                elif side == "etrans2":
                    rate, _ = run_etrans(worker_env(base_env, sink, two_topic, 10), sink,
                                         count, timeout=max(300.0, count / 50), processes=2)
                    share = CPU_PER_MESSAGE.get("after-settled")
                    note = (f" (the last {share:.0f}%, after both consume)" if share else
                            " (first to last delivery: the group settled late)")
                elif side == "go":
                    rate, note = run_go_loop(go_loop, sink.port, prebuilt, work_dir), ""
                elif side == "per-cpu":
                    rate, note = run_raw_per_cpu(sink.port, prebuilt), ""
                else:
                    pin = pin_cpu if side == "pinned" else None
                    rate, note = run_raw_subprocess(sink.port, prebuilt, pin_cpu=pin), ""
                used = CPU_PER_MESSAGE.get("raw" if side in RAW_SIDES else side,
                                           CPU_PER_MESSAGE.get("etrans", float("nan")))
                rates[side].append(rate)
                cpu[side].append(used)
                kernel = SYS_PER_MESSAGE.get("raw" if side in RAW_SIDES else "etrans")
                figures[side] = (f"{SIDES[side]} {rate:,.0f} msg/s{note}, CPU {used:.0f} us/msg"
                                 + (f" (kernel {kernel:.0f} us)" if kernel is not None else ""))
            print(f"round {round_number} ({SIDES[order[0]]} first): "
                  + "; ".join(figures[side] for side in SIDES))

        medians = {side: statistics.median(values) for side, values in rates.items()}
        for side in SIDES:
            extra = (f"; with start-up and group join {spread(etrans_overall)}"
                     if side == "etrans" else "")
            print(f"{SIDES[side] + ':':42s} {medians[side]:9.0f} msg/s  {spread(rates[side])}; "
                  f"CPU {spread(cpu[side])} us/msg{extra}")
        best = max(RAW_SIDES, key=lambda side: medians[side])
        steady, signed, two = medians["etrans"], medians["signed"], medians["etrans2"]
        print(f"best raw Python loop: {SIDES[best]} ({medians[best]:,.0f} msg/s); etrans 1 "
              f"process / it = {steady / medians[best]:.3f}, 2 processes / it = "
              f"{two / medians[best]:.3f} (goal >= 0.8); Go net/smtp / it = "
              f"{medians['go'] / medians[best]:.3f} (reference)")

        with tempfile.NamedTemporaryFile("wb", suffix=".eml", delete=False) as handle:
            handle.write(prebuilt[0][2].replace(b"\r\n", b"\n"))
        source = run_smtp_source(sink.port, count, Path(handle.name))
        os.unlink(handle.name)
        print(f"smtp-source (10 sessions):       {source:9.0f} msg/s")

        if not args.skip_latency:
            slow = Sink(data_delay=1)
            sinks.append(slow)
            rates = {}
            for pool, n in ((1, 8), (10, 60)):
                small = create_topic(bootstrap, unique_name("bench-latency"), partitions=3)
                batch = [simple_request(f"<lat-{pool}-{i}-{uuid.uuid4().hex[:8]}@etrans.bench>",
                                        user_id) for i in range(n)]
                produce_requests(bootstrap, small, batch, partitions=3)
                rates[pool], _ = run_etrans(worker_env(base_env, slow, small, pool), slow, n,
                                            timeout=120, reply_delay=1.0)
                print(f"1 s DATA latency, pool {pool:2d}:     {rates[pool]:9.2f} msg/s")
            print(f"latency speed-up pool 10 / pool 1: {rates[10] / rates[1]:.1f}x (goal >= 8)")

        print(f"signed {signed:.0f} msg/s, unsigned {steady:.0f} msg/s")
        print(f"signing ratio {signed / steady:.3f}")
        print(f"ratio {two / medians[best]:.3f}")
    finally:
        for sink in sinks:
            sink.stop()
        credentials.cleanup()
        shutil.rmtree(work_dir, ignore_errors=True)
        if broker is not None:
            broker.cleanup()
        if redis_server is not None:
            redis_server.cleanup()


if __name__ == "__main__":
    main()
