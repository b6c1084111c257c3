"""Regression: a response decided before the request body arrived (401/405 from the headers
alone) must not stall the next request on the same keep-alive connection (hypercorn, trio)."""

from __future__ import annotations

import socket
import time

import pytest

from etrans.api.app import ApiDependencies, create_app
from tests.harness.http import served


@pytest.fixture
def server_port():
    app = create_app(ApiDependencies(routers=[]))

    @app.post("/echo")
    async def echo():  # answers without reading the body
        return {"ok": True}

    with served(app) as port:
        yield port


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ")[1])


@pytest.mark.parametrize(("method", "path", "first_status"), [
    (b"POST", b"/echo", 200), (b"DELETE", b"/echo", 405), (b"PUT", b"/healthz", 405)])
def test_next_request_is_answered_after_an_early_response(server_port, method, path,
                                                          first_status):
    body = b'{"domain": "example.com"}'
    with socket.create_connection(("127.0.0.1", server_port)) as sock:
        sock.settimeout(5)
        sock.sendall(method + b" " + path + b" HTTP/1.1\r\nHost: t\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.2)  # the body comes in a later packet, as requests sends it
        sock.sendall(body)
        assert _status(sock) == first_status
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _status(sock) == 200


@pytest.fixture
def limited_server_port():
    """An app whose one route reads its body the way the API's routes do (read_body), with a
    1 MiB limit, served by hypercorn's trio worker."""
    from etrans.api.routing import read_body

    limit = 1024 * 1024
    app = create_app(ApiDependencies(routers=[], max_body_bytes=limit))

    @app.post("/upload")
    async def upload():
        body = await read_body(app.config["MAX_CONTENT_LENGTH"])
        return {"bytes": len(body)}

    with served(app) as port:
        yield port


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(limited_server_port):
    """No Content-Length to refuse up front: the server must answer 400 once the streamed body
    passes the limit, long before the client has sent everything (it never buffers it all)."""
    chunk = b"x" * 65536
    planned = 64 * 1024 * 1024  # 64 MiB, far past the 1 MiB limit
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", limited_server_port)) as sock:
        sock.settimeout(5)
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while sent < planned:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
                sock.setblocking(False)
                try:
                    answer = sock.recv(65536)
                except BlockingIOError:
                    answer = b""
                finally:
                    sock.settimeout(5)
                if answer:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: the answer is waiting
        sock.setblocking(True)
        sock.settimeout(5)
        answer += _read_response(sock) if b"\r\n\r\n" not in answer else b""
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            more = sock.recv(65536)
            if not more:
                break
            body += more
    print(f"\nanswered after {sent // 1024} KiB of a planned {planned // 1024} KiB")
    assert head.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"too large" in body, body
    assert sent < planned // 4


@pytest.fixture
def budgeted_app():
    """/upload reads its body the way the API's routes do (read_body); /ignore never asks for
    its body (as a route refusing the request before reading it).  Bodies up to 1 MiB, a
    budget of 1.5 MiB of bodies in memory."""
    from etrans.api.routing import read_body

    app = create_app(ApiDependencies(routers=[], max_body_bytes=1024 * 1024,
                                     body_memory_bytes=1536 * 1024))

    @app.post("/upload")
    async def upload():
        body = await read_body(app.config["MAX_CONTENT_LENGTH"])
        return {"bytes": len(body)}

    @app.post("/ignore")
    async def ignore():
        return {"ok": True}

    with served(app) as port:
        yield app, port


def _post(port: int, path: bytes, body: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(15)
        sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                     b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        head = _read_response(sock)
        return int(head.split(b" ")[1]), head


def _wait_released(budget) -> None:
    for _ in range(100):  # released when the request ends, just after the answer is sent
        if not budget.statistics().requests_holding:
            return
        time.sleep(0.05)


def test_bodies_beyond_the_budget_get_503_with_retry_after_and_it_is_released(budgeted_app):
    app, port = budgeted_app
    budget = app.extensions["etrans_body_budget"]
    body = b"x" * (1024 * 1024)
    with socket.create_connection(("127.0.0.1", port)) as holder:
        holder.settimeout(15)
        holder.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                       % len(body) + body[:1000])  # admitted: it holds 1 MiB of the budget
        for _ in range(100):
            if budget.statistics().reserved_bytes:
                break
            time.sleep(0.05)
        assert budget.statistics().reserved_bytes == len(body)
        status, head = _post(port, b"/upload", body)
        assert status == 503, head
        assert b"\r\nretry-after: 5\r\n" in head.lower()
        holder.sendall(body[1000:])
        assert _status(holder) == 200
    assert _post(port, b"/upload", body)[0] == 200
    _wait_released(budget)
    stats = budget.statistics()
    assert (stats.reserved_bytes, stats.requests_holding, stats.refused_total) == (0, 0, 1)


def test_a_body_its_route_never_asks_for_holds_no_budget(budgeted_app):
    """Like an unauthenticated request (refused before its route reads the body): announcing a
    body and stalling holds none of the budget, and the body is never buffered."""
    app, port = budgeted_app
    budget = app.extensions["etrans_body_budget"]
    stalled = []
    try:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n")
            stalled.append(sock)
        assert _post(port, b"/upload", b"x" * (1024 * 1024))[0] == 200
        _wait_released(budget)
        assert budget.statistics().reserved_bytes == 0
    finally:
        for sock in stalled:
            sock.close()
