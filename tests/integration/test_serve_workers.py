"""``etrans serve --workers 2`` as a real process tree (etrans.bootstrap.processes): two
processes accepting on one listening socket, on the harness's PostgreSQL, Redis, broker and
MongoDB-wire server.

The parent tells the service manager (a notify socket of the test's own) READY=1 once both
workers serve, and the API answers at the first attempt; both workers hold requests; SIGTERM
to the parent while each worker is in the middle of a POST /emails (its body half sent): both
requests complete with 200 after the signal, every email is committed, and the tree exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from tests.e2e.send_support import JWT_SECRET, bearer, read_topic, seed_sender
from tests.harness.databases import BillingSeeder
from tests.integration.notify_support import NotifySocket


def children_of(pid: int) -> list[int]:
    """(Each thread lists the children it forked: the parent forks from worker threads.)"""
    return sorted(
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    )


def server_side_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the accepted socket whose peer is ``client_port`` (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
            and inode
        ):
            return inode
    return None


def holder_of(inode: int, pids: list[int]) -> int | None:
    """The process among ``pids`` that has the socket ``inode`` open."""
    target = f"socket:[{inode}]"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:
                continue
    return None


class HalfSentRequest:
    """POST /emails over a socket of its own, its body sent in two halves."""

    def __init__(self, host: str, port: int, headers: dict[str, str], body: bytes) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.body = body
        head = "".join(
            f"{k}: {v}\r\n"
            for k, v in {
                **headers,
                "Host": f"{host}:{port}",
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
            }.items()
        )
        self.sock.sendall(f"POST /emails HTTP/1.1\r\n{head}\r\n".encode() + body[: len(body) // 2])

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def finish(self) -> tuple[int, dict[str, object]]:
        self.sock.sendall(self.body[len(self.body) // 2 :])
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536) or b"EOF"
            assert not data.endswith(b"EOF"), data
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next(
            int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:")
        )
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            assert chunk, rest
            rest += chunk
        self.sock.close()
        return int(lines[0].split()[1]), json.loads(rest)


def send_many(base_url: str, headers: dict[str, str], domain: str, count: int) -> list[str]:
    """``count`` POST /emails from 6 threads with a keep-alive client each; their ids."""
    from concurrent.futures import ThreadPoolExecutor

    def send(indexes: range) -> list[str]:
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
            ids = []
            for i in indexes:
                body = {
                    "from": f"a@{domain}",
                    "to": ["x@example.org"],
                    "subject": f"{i}",
                    "text": "t",
                }
                answer = client.post("/emails", json=body)
                assert answer.status_code == 200, answer.text
                ids.append(str(answer.json()["id"]))
            return ids

    with ThreadPoolExecutor(6) as pool:
        return [i for ids in pool.map(send, [range(k, count, 6) for k in range(6)]) for i in ids]


def test_two_workers_serve_and_drain_their_in_flight_requests_on_sigterm(
    etrans_env, billing_db, kafka_bootstrap, tmp_path
):
    env = etrans_env(
        DB_URI=billing_db.readonly_url,
        BILLING_V4_URI="http://127.0.0.1:9/",
        JWT_SECRET=JWT_SECRET,
        ETRANS_REDIS_PREFIX=f"workers:{uuid.uuid4().hex}:",
    )
    user, domain = seed_sender(BillingSeeder(billing_db.owner_url))
    host, port = env["ETRANS_BIND"].rsplit(":", 1)
    notify = NotifySocket()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        parent = subprocess.Popen(
            [sys.executable, "-m", "etrans", "serve", "--workers", "2"],
            env={**env, "NOTIFY_SOCKET": notify.name},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    requests: list[HalfSentRequest] = []
    try:
        ready = notify.wait_for("READY", timeout=90, alive=lambda: parent.poll() is None)
        status = notify.received[ready].states["STATUS"]
        # Both workers, each on the parent's socket (shown by its address, not fd://N).
        assert f"#0 HTTP on {host}:{port}" in status, status
        assert f"#1 HTTP on {host}:{port}" in status, status
        # Serving means answering, at the first attempt.
        assert httpx.get(f"http://{host}:{port}/healthz", timeout=10).status_code == 200
        workers = children_of(parent.pid)
        assert len(workers) == 2, workers
        sent = send_many(f"http://{host}:{port}", bearer(user), domain, 60)
        # Requests in the middle of their body, until each worker holds one.
        holders: dict[int, int] = {}
        while set(holders.values()) != set(workers):
            assert len(requests) < 200, f"one worker took every connection: {holders}"
            body = json.dumps(
                {
                    "from": f"a@{domain}",
                    "to": ["x@example.org"],
                    "subject": f"in flight {len(requests)}",
                    "text": "t",
                }
            ).encode()
            request = HalfSentRequest(host, int(port), bearer(user), body)
            requests.append(request)
            deadline = time.monotonic() + 10
            while request.port not in holders:
                inode = server_side_inode(int(port), request.port)
                holder = holder_of(inode, workers) if inode is not None else None
                if holder is not None:
                    holders[request.port] = holder
                assert time.monotonic() < deadline, "a connection was never accepted"
        print(f"\n{len(requests)} requests in flight on workers {sorted(set(holders.values()))}")
        parent.send_signal(signal.SIGTERM)
        stopping = notify.wait_for("STOPPING", after=ready, alive=lambda: parent.poll() is None)
        time.sleep(0.5)  # the workers are draining: their listeners are closed by now
        answers = [request.finish() for request in requests]
        assert parent.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        notify.close()
    assert [status for status, _ in answers] == [200] * len(requests), answers
    ids = sent + [str(answer["id"]) for _, answer in answers]
    with psycopg.connect(env["USEND_DB_URI"]) as conn:
        stored = {
            row[0]
            for row in conn.execute(
                "SELECT message_id FROM email_messages WHERE message_id = ANY(%s)", (ids,)
            )
        }
    assert stored == set(ids)
    # Two outbox relays, one per worker, share the rows (FOR UPDATE SKIP LOCKED): each email
    # published once (a second copy would take a place among the first len(ids) records).
    records = read_topic(kafka_bootstrap, env["KAFKA_TOPIC"], want=len(ids))
    published = sorted(r["value"]["payload"]["message_id"] for r in records)
    assert published == sorted(ids)
    received = notify.received
    assert {n.pid for n in received} == {parent.pid}, "NotifyAccess=main"
    assert [i for i, n in enumerate(received) if n.has("READY")] == [ready] < [stopping]
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    drained = {
        r["process"]: r["drained"] for r in lines if r.get("event") == "stopped" and "process" in r
    }
    assert drained == {0: True, 1: True}, lines[-20:]
