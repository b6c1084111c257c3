"""SENTRY_DSN: errors reach a local (real HTTP) Sentry ingestion endpoint; repeats are throttled."""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from etrans.adapters.http.sentry_reporter import ErrorReporter
from etrans.errors import RetryLater


class _Ingest(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        self.received.append((self.path, body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ingest() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    _Ingest.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ingest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://publickey@127.0.0.1:{server.server_address[1]}/42", _Ingest.received
    server.shutdown()
    server.server_close()


def test_errors_reach_sentry_and_repeats_are_throttled(
    ingest: tuple[str, list[tuple[str, bytes]]],
) -> None:
    import sentry_sdk  # the optional extra `sentry`, also listed in the `test` extra

    dsn, received = ingest
    reporter = ErrorReporter.start(dsn, service="fetchlog", release="test")
    try:
        assert reporter.enabled
        with pytest.raises(RetryLater) as caught:
            raise RetryLater("MongoDB unavailable: test outage")
        assert reporter.capture(caught.value, topic="email-logs", partition=0, offset=7)
        # The same failure on the next retry is not sent again.
        assert not reporter.capture(caught.value, topic="email-logs", partition=0, offset=7)
        reporter.flush(5)
    finally:
        sentry_sdk.get_client().close()
    bodies = [body for path, body in received if path.startswith("/api/42/")]
    assert len(bodies) == 1, received
    assert b"MongoDB unavailable: test outage" in bodies[0]
    assert b'"offset":7' in bodies[0] or b'"offset": 7' in bodies[0]


def test_without_dsn_nothing_is_sent() -> None:
    reporter = ErrorReporter.start(None, service="fetchlog")
    assert not reporter.enabled
    assert not reporter.capture(ValueError("x"))
