"""The webhook transport (etrans/adapters/http/webhook_client.py) against real loopback
receivers: the connection goes to the address that was checked with the URL's Host kept,
redirects are not followed, timeouts and refused connections are failed attempts (never
exceptions), non-public addresses are refused before any request."""

from __future__ import annotations

import socket

import pytest

from etrans.adapters.http.webhook_client import WebhookClient, is_public_ip
from tests.integration.webhook_support import Receiver


@pytest.fixture
def receiver() -> object:
    started = Receiver().start()
    yield started
    started.stop()


async def test_a_name_is_resolved_and_the_host_kept(receiver: Receiver) -> None:
    client = WebhookClient(allow_private=True)
    url = receiver.url.replace("127.0.0.1", "localhost")
    result = await client.post(url, b"{}", {"webhook-id": "evt_1"})
    await client.aclose()
    assert (result.status_code, result.error, result.delivered) == (200, None, True)
    [got] = receiver.snapshot()
    assert got.host == url.split("/")[2]  # localhost:<port>, though 127.0.0.1 was dialled


async def test_redirects_are_not_followed() -> None:
    receiver = Receiver(answer=lambda n: 302).start()
    client = WebhookClient(allow_private=True)
    try:
        result = await client.post(receiver.url, b"{}", {})
    finally:
        await client.aclose()
        receiver.stop()
    assert (result.status_code, result.delivered) == (302, False)
    assert len(receiver.snapshot()) == 1


async def test_timeouts_and_refusals_are_results() -> None:
    hanging = Receiver(hang=True).start()
    client = WebhookClient(allow_private=True, timeout=0.3)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    try:
        timed_out = await client.post(hanging.url, b"{}", {})
        refused = await client.post(f"http://127.0.0.1:{closed_port}/", b"{}", {})
        unresolvable = await client.post("http://name.invalid/", b"{}", {})
        not_http = await client.post("ftp://a.example/", b"{}", {})
    finally:
        await client.aclose()
        hanging.stop()
    assert timed_out.status_code is None
    assert timed_out.error == "timeout (ReadTimeout)"
    assert 250 <= timed_out.latency_ms < 2000
    assert refused.status_code is None
    assert refused.error is not None
    assert refused.error.startswith("ConnectError")
    assert unresolvable.error is not None
    assert unresolvable.error.startswith("cannot resolve name.invalid")
    assert not_http.error == "not an http(s) URL: ftp"


async def test_non_public_addresses_are_refused_before_any_request(receiver: Receiver) -> None:
    client = WebhookClient()
    for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
        result = await client.post(url, b"{}", {})
        assert result.status_code is None
        assert result.error is not None
        assert "non-public address (127.0.0.1" in result.error or "(::1" in result.error
    await client.aclose()
    assert receiver.snapshot() == []


@pytest.mark.parametrize(("address", "public"), [
    ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False),
    ("fe80::1", False), ("fc00::1", False), ("::ffff:127.0.0.1", False),
    ("::ffff:10.0.0.1", False), ("224.0.0.1", False), ("255.255.255.255", False),
])
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_ip(address) is public


async def test_no_cookie_is_kept_between_attempts() -> None:
    """An endpoint's Set-Cookie is never sent back (to it, or to another customer's endpoint
    on the same host)."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    cookies: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            cookies.append(self.headers.get("cookie"))
            self.send_response(200)
            self.send_header("set-cookie", "session=abc; Path=/")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = WebhookClient(allow_private=True)
    url = f"http://localhost:{server.server_address[1]}"
    try:
        first = await client.post(url + "/a", b"{}", {})
        second = await client.post(url + "/b", b"{}", {})
    finally:
        await client.aclose()
        server.shutdown()
    assert (first.status_code, second.status_code) == (200, 200)
    assert cookies == [None, None]


async def test_the_head_and_body_of_a_request_leave_in_one_write() -> None:
    """httpcore writes a request's head and body separately; the client sends them together
    (one ``send``), so the endpoint's first read holds the whole request.  A server thread
    reads as soon as anything arrives: with two writes it sees the head alone."""
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    first_reads: list[bytes] = []

    def serve() -> None:
        for _ in range(2):  # two requests on the kept connection
            if not first_reads:
                connection, _address = server.accept()
            first_reads.append(connection.recv(65536))
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = WebhookClient(allow_private=True)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    try:
        for body in (b'{"n":1}', b'{"n":2}'):
            result = await client.post(url, body, {"content-type": "application/json"})
            assert result.status_code == 200
    finally:
        await client.aclose()
        server.close()
    thread.join(timeout=5)
    assert [read.endswith(b"\r\n\r\n" + body) for read, body
            in zip(first_reads, (b'{"n":1}', b'{"n":2}'), strict=True)] == [True, True]
    assert all(read.startswith(b"POST /hook HTTP/1.1\r\n") for read in first_reads)
