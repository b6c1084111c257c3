"""``etrans serve`` under connections that hold resources: stalled clients are closed after
ETRANS_READ_TIMEOUT_SECONDS without starving a normal client, and concurrent large sends stay
under a bounded peak RSS (ETRANS_BODY_MEMORY_BYTES, 503 + Retry-After beyond it).

Each test starts its own ``etrans serve`` subprocess (tests.e2e.send_support.ServeProcess)."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.send_support import JWT_SECRET, ServeProcess, bearer, seed_sender
from tests.harness.databases import BillingSeeder

MiB = 1024 * 1024


def _env(etrans_env: Any, billing_db: Any, **overrides: Any) -> dict[str, str]:
    values = {"DB_URI": billing_db.readonly_url, "BILLING_V4_URI": "http://127.0.0.1:9/",
              "JWT_SECRET": JWT_SECRET, "ETRANS_REDIS_PREFIX": f"lim:{uuid.uuid4().hex[:10]}:"}
    values.update(overrides)
    return etrans_env(**values)


def _email(domain: str, attachment: bytes = b"hello") -> dict[str, Any]:
    return {"from": f"Acme <news@{domain}>", "to": ["a@example.org"], "subject": "Limits",
            "text": "Hi", "attachments": [{"filename": "a.bin", "content_type":
                                           "application/octet-stream",
                                           "content": base64.b64encode(attachment).decode()}]}


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """True once the server closes ``sock`` (EOF or reset), reading and dropping any answer."""
    while True:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


def test_stalled_connections_are_closed_after_the_read_timeout(etrans_env, billing_db):
    """200 connections that stall (100 mid-headers, 100 announcing the largest body allowed and
    sending none of it) neither stop a normal client nor stay open past
    ETRANS_READ_TIMEOUT_SECONDS; an idle keep-alive connection is closed after
    ETRANS_KEEP_ALIVE_TIMEOUT_SECONDS.  The body budget is one largest body: the unauthenticated
    stalled requests must hold none of it for the normal client's send to be accepted."""
    read_timeout = 5
    env = _env(etrans_env, billing_db, ETRANS_READ_TIMEOUT_SECONDS=str(read_timeout),
               ETRANS_BODY_MEMORY_BYTES=str(36 * MiB), ETRANS_KEEP_ALIVE_TIMEOUT_SECONDS="1")
    user, domain = seed_sender(BillingSeeder(billing_db.owner_url))
    host, port = env["ETRANS_BIND"].split(":")
    serve = ServeProcess(env).start()
    stalled: list[socket.socket] = []
    try:
        assert serve.process is not None
        rss_before = _rss_kib(serve.process.pid)
        started = time.monotonic()
        for index in range(200):
            sock = socket.create_connection((host, int(port)), timeout=5)
            if index % 2:
                sock.sendall(b"POST /emails HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            else:
                sock.sendall(b"POST /emails HTTP/1.1\r\nHost: t\r\nContent-Type: "
                             b"application/json\r\nContent-Length: %d\r\n\r\n" % (36 * MiB))
            stalled.append(sock)
        time.sleep(0.5)
        print(f"\nserve's RSS grew {(_rss_kib(serve.process.pid) - rss_before) / 200:.0f} KiB "
              "per stalled connection")
        # A normal client is served while all 200 are open.
        with httpx.Client(base_url=serve.base_url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            sent = client.post("/emails", json=_email(domain), headers=bearer(user))
            assert sent.status_code == 200, sent.text
            # An idle keep-alive connection is closed after ETRANS_KEEP_ALIVE_TIMEOUT_SECONDS
            # (1 s here), before the read timeout (5 s) or hypercorn's default (5 s) would.
            with socket.create_connection((host, int(port)), timeout=5) as idle:
                idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                assert idle.recv(65536).startswith(b"HTTP/1.1 200")
                assert _closed_by_server(idle, time.monotonic() + 4)
        deadline = started + read_timeout + 15
        still_open = [s for s in stalled if not _closed_by_server(s, deadline)]
        print(f"{200 - len(still_open)} of 200 stalled connections closed by the server "
              f"{time.monotonic() - started:.1f} s after the first opened")
        assert not still_open, f"{len(still_open)} stalled connections still open"
    finally:
        for sock in stalled:
            sock.close()
        serve.stop()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


# Documented in docs/configuration.md (ETRANS_BODY_MEMORY_BYTES) and docs/api.md.
PEAK_RSS_BOUND_MIB = 1536


@pytest.mark.slow
def test_concurrent_large_sends_stay_under_the_documented_peak_rss(etrans_env, billing_db):
    """20 clients each POST /emails with a 25 MB attachment (~33 MiB of JSON) at once: serve's
    peak RSS stays under PEAK_RSS_BOUND_MIB; the sends over the body budget get 503 with
    Retry-After, the others are accepted."""
    env = _env(etrans_env, billing_db)
    user, domain = seed_sender(BillingSeeder(billing_db.owner_url))
    payload = httpx.Request("POST", "/", json=_email(domain, os.urandom(25 * 10**6))).content
    serve = ServeProcess(env).start()
    results: list[httpx.Response | Exception] = []
    lock = threading.Lock()

    def send() -> None:
        try:
            response = httpx.post(serve.base_url + "/emails", content=payload, timeout=300,
                                  headers={**bearer(user), "Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            with lock:
                results.append(exc)
            return
        with lock:
            results.append(response)

    try:
        assert serve.process is not None
        before = _peak_rss_mib(serve.process.pid)
        threads = [threading.Thread(target=send) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        peak = _peak_rss_mib(serve.process.pid)
        statuses = sorted(r.status_code if isinstance(r, httpx.Response) else repr(r)
                          for r in results)
        print(f"\nbody {len(payload) / MiB:.1f} MiB x 20: peak RSS {before:.0f} MiB before, "
              f"{peak:.0f} MiB after; statuses {statuses}")
        assert len(results) == 20
        accepted = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 200]
        busy = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 503]
        assert accepted, statuses
        assert len(accepted) + len(busy) == 20, statuses
        for response in busy:
            assert response.headers["Retry-After"] == "5"
        assert peak < PEAK_RSS_BOUND_MIB, f"peak RSS {peak:.0f} MiB"
    finally:
        serve.stop()
