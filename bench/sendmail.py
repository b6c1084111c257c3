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

Steps 1, 1b and 2 run in ``--rounds`` (default 5) alternating rounds, the side that goes first
alternating too: each round produces a fresh backlog (new topic, new message_ids: the worker
skips message_ids it already delivered, so an old backlog cannot be replayed) and the raw side
sends that round's messages.  The raw baseline's 10 threads share the GIL with the rest of the
machine, so one round per side is not a stable measurement: every round's rates and CPU per
message are printed, and the ratio compares the medians of both sides.

A third side per round, printed for reference only (not in the ratio): the same raw loop
pinned to one CPU.  Unpinned, its 10 threads sometimes fall into a GIL hand-off regime across
the 2 CPUs (kernel CPU per message ~35 -> 150-240 us, rate ~9,000 -> 4,000-6,600 msg/s) that
lasts minutes, so medians of 5 rounds do not remove it; pinned, its CPU per message stays
54-58 us.

Prints the rates, then ``signing ratio <median signed / median unsigned etrans>`` (goal >= 0.5),
then ``ratio <median etrans / median raw smtplib>`` last (goal >= 0.8).

Needs ``smtp-sink``/``smtp-source`` (Debian package ``postfix``: ``apt-get install postfix``),
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
    """(user, system) CPU seconds of a process (all its threads) and of its running children
    (the DKIM signing processes) so far, from /proc."""
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


CPU_PER_MESSAGE: dict[str, float] = {}  # run name -> CPU microseconds per message
SYS_PER_MESSAGE: dict[str, float] = {}  # run name -> of which system (kernel) microseconds


def run_etrans(env: dict[str, str], sink: Sink, count: int, timeout: float,
               reply_delay: float = 0.0) -> tuple[float, float]:
    """(rate from the first to the last delivery, rate from process start).

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
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    first = sink.first_at or started
    if reply_delay:
        steady = count / (finished - first + reply_delay)
    else:
        steady = (count - 1) / max(finished - first, 1e-9)
    overall = count / (finished - started)
    return steady, overall


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
    times_start = os.times()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
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
    with tempfile.NamedTemporaryFile("wb", suffix=".pickle", delete=False) as handle:
        pickle.dump(messages, handle, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        command = [sys.executable, __file__, "--raw-phase", str(port), handle.name]
        if pin_cpu is not None:
            command += ["--pin-cpu", str(pin_cpu)]
        out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=str(ROOT))
    finally:
        os.unlink(handle.name)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    CPU_PER_MESSAGE["raw"] = result["cpu_us"]
    SYS_PER_MESSAGE["raw"] = result["sys_us"]
    return float(result["rate"])


def raw_phase(port: int, path: str, pin_cpu: int | None) -> None:
    """Runs in the subprocess: send the pickled messages, print rate and CPU as JSON."""
    if pin_cpu is not None:
        os.sched_setaffinity(0, {pin_cpu})  # before the sender threads: they inherit it
    with open(path, "rb") as handle:
        messages = pickle.load(handle)  # our own file, written just before
    rate = run_raw_smtplib(port, messages)
    print(json.dumps({"rate": rate, "cpu_us": CPU_PER_MESSAGE["raw"],
                      "sys_us": SYS_PER_MESSAGE["raw"]}))


def run_smtp_source(port: int, count: int, message_file: Path, sessions: int = 10) -> float:
    started = time.monotonic()
    subprocess.run([tool("smtp-source"), "-d", "-s", str(sessions), "-m", str(count),
                    "-f", "sender@example.com", "-t", "to@example.com",
                    "-F", str(message_file), f"127.0.0.1:{port}"], check=True)
    return count / (time.monotonic() - started)


def fresh_backlog(bootstrap: str, user_id: str, count: int,
                  label: str) -> tuple[str, list[tuple[str, list[str], bytes]]]:
    """A new topic holding ``count`` new requests, and the same requests pre-built for smtplib.

    Every round needs new message_ids: the worker records each delivered message_id in Redis
    and skips one already recorded, so a new consumer group over an old backlog sends nothing."""
    requests = [simple_request(f"<bench-{label}-{i}-{uuid.uuid4().hex[:10]}@etrans.bench>",
                               user_id) for i in range(count)]
    topic = create_topic(bootstrap, unique_name("bench-sendmail"), partitions=3)
    started = time.monotonic()
    produce_requests(bootstrap, topic, requests, partitions=3)
    produced = time.monotonic() - started
    prebuilt = []
    for request in requests:
        outgoing = decode_request(json.dumps(request).encode())
        prebuilt.append((outgoing.sender.email, outgoing.envelope_recipients(),
                         render(outgoing)))
    print(f"{label}: backlog of {count} messages on {topic} (3 partitions, produced in "
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
    args = parser.parse_args()
    if args.raw_phase:
        raw_phase(int(args.raw_phase[0]), args.raw_phase[1], args.pin_cpu)
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
        }
        signed_env = signing_env(base_env, user_id, work_dir)
        print(f"{args.rounds} rounds of {count} messages per side, etrans, raw smtplib and raw "
              "smtplib pinned to one CPU (reference) alternating (the order reverses every "
              "round); the ratio compares the medians of etrans and unpinned raw smtplib")
        sink = Sink()
        sinks.append(sink)
        etrans_rates: list[float] = []
        etrans_overall: list[float] = []
        etrans_cpu: list[float] = []
        signed_rates: list[float] = []
        signed_cpu: list[float] = []
        raw_rates: list[float] = []
        raw_cpu: list[float] = []
        pinned_rates: list[float] = []
        pinned_cpu: list[float] = []
        pin_cpu = max(os.sched_getaffinity(0))
        prebuilt: list[tuple[str, list[str], bytes]] = []
        for round_number in range(1, args.rounds + 1):
            topic, prebuilt = fresh_backlog(bootstrap, user_id, count, f"round {round_number}")
            signed_topic, _ = fresh_backlog(bootstrap, user_id, count,
                                            f"round {round_number} (signed)")
            figures: dict[str, str] = {}
            order = ("etrans", "signed", "raw", "pinned")
            if not round_number % 2:
                order = order[::-1]
            for side in order:
                CPU_PER_MESSAGE.clear()
                SYS_PER_MESSAGE.clear()
                if side == "etrans":
                    steady, overall = run_etrans(worker_env(base_env, sink, topic, 10), sink,
                                                 count, timeout=max(300.0, count / 50))
                    etrans_rates.append(steady)
                    etrans_overall.append(overall)
                    cpu = CPU_PER_MESSAGE.get("etrans", float("nan"))
                    etrans_cpu.append(cpu)
                    figures[side] = (
                        f"etrans sendmail (pool 10) {steady:,.0f} msg/s (with start-up and "
                        f"group join {overall:,.0f}), CPU {cpu:.0f} us/msg (kernel "
                        f"{SYS_PER_MESSAGE.get('etrans', float('nan')):.0f} us), Trio thread "
                        f"busy {CPU_PER_MESSAGE.get('trio-thread-busy', float('nan')):.0f}%")
                elif side == "signed":
                    steady, _ = run_etrans(worker_env(signed_env, sink, signed_topic, 10), sink,
                                           count, timeout=max(300.0, count / 20))
                    signed_rates.append(steady)
                    cpu = CPU_PER_MESSAGE.get("etrans", float("nan"))
                    signed_cpu.append(cpu)
                    busy = CPU_PER_MESSAGE.get("trio-thread-busy", float("nan"))
                    figures[side] = (f"signed {steady:,.0f} msg/s, CPU {cpu:.0f} us/msg, Trio "
                                     f"thread busy {busy:.0f}%")
                elif side == "pinned":
                    rate = run_raw_subprocess(sink.port, prebuilt, pin_cpu=pin_cpu)
                    pinned_rates.append(rate)
                    pinned_cpu.append(CPU_PER_MESSAGE["raw"])
                    figures[side] = (
                        f"raw smtplib pinned to CPU {pin_cpu} (reference) {rate:,.0f} msg/s, CPU "
                        f"{CPU_PER_MESSAGE['raw']:.0f} us/msg (kernel "
                        f"{SYS_PER_MESSAGE['raw']:.0f} us)")
                else:
                    rate = run_raw_subprocess(sink.port, prebuilt)
                    raw_rates.append(rate)
                    raw_cpu.append(CPU_PER_MESSAGE["raw"])
                    figures[side] = (
                        f"raw smtplib (10 connections) {rate:,.0f} msg/s, CPU "
                        f"{CPU_PER_MESSAGE['raw']:.0f} us/msg (kernel "
                        f"{SYS_PER_MESSAGE['raw']:.0f} us)")
            print(f"round {round_number} ({order[0]} first): {figures['etrans']}; "
                  f"{figures['signed']}; {figures['raw']}; {figures['pinned']}; "
                  f"ratio {etrans_rates[-1] / raw_rates[-1]:.3f}")

        steady, raw = statistics.median(etrans_rates), statistics.median(raw_rates)
        print(f"etrans sendmail (pool 10):       {steady:9.0f} msg/s  {spread(etrans_rates)}; "
              f"with start-up and group join {spread(etrans_overall)}")
        signed = statistics.median(signed_rates)
        print(f"etrans sendmail, DKIM-signed:    {signed:9.0f} msg/s  {spread(signed_rates)}; "
              f"CPU {spread(signed_cpu)} us/msg")
        print(f"raw smtplib (10 connections):    {raw:9.0f} msg/s  {spread(raw_rates)}")
        print(f"CPU per message: etrans {spread(etrans_cpu)} us (whole process: Kafka, Redis, "
              f"SMTP), raw smtplib {spread(raw_cpu)} us (its own process: "
              "the 10 sender threads)")
        pinned = statistics.median(pinned_rates)
        print(f"raw smtplib pinned to one CPU:   {pinned:9.0f} msg/s  {spread(pinned_rates)}; "
              f"CPU {spread(pinned_cpu)} us/msg (reference only: the same loop without "
              f"cross-CPU GIL hand-offs; etrans / this = {steady / pinned:.3f})")
        ratios = [e / r for e, r in zip(etrans_rates, raw_rates, strict=True)]
        print("per-round ratios: " + ", ".join(f"{r:.3f}" for r in ratios)
              + f" (their median {statistics.median(ratios):.3f}, reference only: the ratio "
              "below is median etrans / median raw)")

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
        print(f"ratio {steady / raw:.3f}")
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
