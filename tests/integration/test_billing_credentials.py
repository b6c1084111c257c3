"""Credentials towards BILLING_V4_URI (issue 13 item 7): the token is sent as a Bearer header (to
a real HTTP server on loopback), plain http to a host that is not loopback is refused at start
unless BILLING_V4_ALLOW_HTTP, and even then the DKIM private key is never sent over it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from etrans.adapters.crypto.dkim_keys import generate_dkim_key_pair
from etrans.adapters.http.billing_gateway import HttpBillingGateway
from etrans.errors import ConfigError, UpstreamUnavailable
from etrans.settings import for_command, is_loopback_host
from tests.unit.test_settings import SERVE_ENV


class RecordingBilling:
    """A billing API on loopback that records each request's headers and body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append((self.path, dict(self.headers),
                                          json.loads(self.rfile.read(length) or b"null")))
                data = b'{"id": 7}'
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v4"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _create_domain(gateway: HttpBillingGateway) -> int:
    pair = generate_dkim_key_pair(bits=1024)
    return await gateway.create_domain(user_id=42, name="example.com", dkim_selector="dkim",
                                       dkim_public_key=pair.record.public_key_b64,
                                       dkim_private_key_pem=pair.private_key_pem)


async def test_the_token_is_sent_as_a_bearer_header() -> None:
    billing = RecordingBilling()
    gateway = HttpBillingGateway(billing.url, api_token="billing-token-123")
    try:
        assert await _create_domain(gateway) == 7
    finally:
        await gateway.aclose()
        billing.close()
    [(path, headers, body)] = billing.requests
    assert path == "/v4/domains"
    assert headers["Authorization"] == "Bearer billing-token-123"
    assert body["dkim"]["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")


async def test_serve_sends_billing_v4_token(etrans_env: Any, billing_db: Any) -> None:
    """bootstrap wires BILLING_V4_TOKEN into the gateway ``etrans serve`` uses."""
    from etrans.bootstrap.api import http_billing_gateway

    billing = RecordingBilling()
    env = etrans_env(BILLING_V4_URI=billing.url, DB_URI=billing_db.readonly_url,
                     BILLING_V4_TOKEN="serve-token-456")
    conf = for_command("serve", env)
    gateway = http_billing_gateway(conf.http)
    try:
        assert await _create_domain(gateway) == 7
    finally:
        await gateway.aclose()
        billing.close()
    [(_, headers, _)] = billing.requests
    assert headers["Authorization"] == "Bearer serve-token-456"


async def test_the_dkim_private_key_never_goes_over_plain_http_to_another_host() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201, json={"id": 7})

    gateway = HttpBillingGateway("http://billing.example/v4", api_token="t",
                                 transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamUnavailable, match="only sent over https"):
        await _create_domain(gateway)
    assert sent == []  # refused before any byte left
    # Calls without a private key still go (BILLING_V4_ALLOW_HTTP was the operator's choice).
    await gateway.delete_domain(user_id=42, domain_id=7)
    assert len(sent) == 1
    await gateway.aclose()
    # Over https the key goes.
    https = HttpBillingGateway("https://billing.example/v4", transport=httpx.MockTransport(handler))
    assert await _create_domain(https) == 7
    assert sent[-1].url.path == "/v4/domains"
    await https.aclose()


def test_plain_http_to_a_remote_host_is_refused_at_start_unless_allowed() -> None:
    with pytest.raises(ConfigError) as err:
        for_command("serve", {**SERVE_ENV, "BILLING_V4_URI": "http://billing.example/v4",
                              "BILLING_V4_TOKEN": "tok-secret-1"})
    assert "BILLING_V4_ALLOW_HTTP" in str(err.value)
    assert "tok-secret-1" not in str(err.value)
    for uri in ("http://127.0.0.1:9/v4", "http://localhost:8080/v4", "http://[::1]:80/",
                "https://billing.example/v4"):
        http = for_command("serve", {**SERVE_ENV, "BILLING_V4_URI": uri}).http
        assert http is not None
        assert http.billing_v4_uri == uri
    http = for_command("serve", {**SERVE_ENV, "BILLING_V4_URI": "http://billing.example/v4",
                                 "BILLING_V4_ALLOW_HTTP": "true",
                                 "BILLING_V4_TOKEN": "tok-secret-1"}).http
    assert http is not None
    assert http.billing_v4_allow_http
    assert http.billing_v4_token is not None
    assert http.billing_v4_token.get() == "tok-secret-1"
    assert "tok-secret-1" not in repr(http)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST.", True), ("api.localhost", True),
    ("10.0.0.1", False), ("billing.example", False), ("localhost.example", False), (None, False),
])
def test_is_loopback_host(host: str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
