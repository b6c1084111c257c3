"""``etrans dev``'s GET /metrics (issue 17 item 1): the API and every worker in one process,
one registry; after three sends, each figure moved by what the sends did."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.e2e.dev_support import start_dev
from tests.integration.test_fetchlog_metrics import value
from tests.integration.test_serve_metrics import samples

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

SENDS = 3


def test_dev_metrics_cover_the_api_and_every_worker(tmp_path: Path) -> None:
    dev = start_dev(tmp_path / "data")
    try:
        before = samples(dev.call("GET", "/metrics").text)
        for n in range(SENDS):
            sent = dev.call(
                "POST",
                "/emails",
                json={
                    "from": f"Demo <hello@{dev.domain}>",
                    "to": [f"someone{n}@example.org"],
                    "subject": "Hi",
                    "text": "It works.",
                },
            )
            assert sent.status_code == 200, sent.text
        deadline = time.monotonic() + 60
        while True:
            after = samples(dev.call("GET", "/metrics").text)
            stored = value(
                after, "etrans_fetchlog_events_total", worker="fetchlog", outcome="stored"
            )
            if stored >= SENDS:
                break
            assert time.monotonic() < deadline, (after, dev.tails())
            time.sleep(0.2)
    finally:
        assert dev.stop() == [0], dev.tails()
    posts = {"method": "POST", "route": "/emails", "status": "200"}
    assert (
        value(after, "etrans_http_requests_total", **posts)
        - value(before, "etrans_http_requests_total", **posts)
        == SENDS
    )
    assert value(after, "etrans_smtp_replies_total", **{"class": "2xx"}) == SENDS
    assert (
        value(after, "etrans_sendmail_outcomes_total", worker="sendmail", outcome="delivered")
        == SENDS
    )
    assert value(after, "etrans_sendmail_delivery_seconds_count") == SENDS
    # Every pipeline of the process, by its worker's name.
    for worker in ("sendmail", "fetchlog", "webhooks", "engagement"):
        assert value(after, "etrans_pipeline_channel_capacity", worker=worker) > 0, worker
    assert value(after, "etrans_pipeline_processed_total", worker="sendmail") == SENDS
    # The relay published everything (the built-in topics always answer).
    assert value(after, "etrans_outbox_backlog") == 0
    assert ("etrans_webhook_retries_waiting", frozenset()) in after
