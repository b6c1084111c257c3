"""``etrans sendmail --metrics-bind`` (ETRANS_METRICS_BIND): scraped while it drains a topic,
the figures move as they must (issue 17 item 1)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.harness.servers import free_port
from tests.harness.smtp import SmtpTestServer
from tests.integration.sendmail_support import CredentialFixture, produce_requests, simple_request
from tests.integration.test_sendmail_service import (  # noqa: F401 (a fixture)
    sendmail_env,
    start_worker,
    stop_worker,
    wait_count,
)
from tests.integration.test_serve_metrics import samples

TOTAL = 20


def scrape(port: int) -> dict:
    return samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text)


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def test_sendmail_metrics_move_with_the_messages_delivered(
    sendmail_env: tuple[Callable[..., dict[str, str]], CredentialFixture],  # noqa: F811
    smtp_server_factory: Callable[..., SmtpTestServer], kafka_bootstrap: str,
    new_topic: Callable[..., str], tmp_path: Path,
) -> None:
    make_env, credentials = sendmail_env
    server = smtp_server_factory(users={"metrics": "metrics-pass"})
    port = free_port()
    env = make_env(server, KAFKA_TOPIC=new_topic(partitions=2, prefix="sendmail"),
                   ETRANS_METRICS_BIND=f"127.0.0.1:{port}")
    user_id = credentials.add("metrics", "metrics-pass")
    ids = [f"<m-{i}-{uuid.uuid4().hex[:8]}@etrans.test>" for i in range(TOTAL)]
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                before = scrape(port)
                break
            except httpx.HTTPError:
                assert worker.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.2)
        assert value(before, "etrans_smtp_replies_total", **{"class": "2xx"}) == 0
        produce_requests(kafka_bootstrap, env["KAFKA_TOPIC"],
                         [simple_request(mid, user_id) for mid in ids], partitions=2)
        wait_count(server, TOTAL, worker, 120, log_path)
        # The outcome is recorded after the 250: wait for the last of them.
        deadline = time.monotonic() + 30
        while value(after := scrape(port), "etrans_sendmail_outcomes_total",
                    worker="sendmail", outcome="delivered") < TOTAL:
            assert time.monotonic() < deadline, after
            time.sleep(0.2)
        deadline = time.monotonic() + 30
        while value(after, "etrans_pipeline_commits_total", worker="sendmail") == 0 or any(
                name == "etrans_pipeline_consumer_lag" and v > 0
                for (name, _), v in after.items()):
            assert time.monotonic() < deadline, after
            time.sleep(0.3)
            after = scrape(port)
    finally:
        stop_worker(worker)
    assert value(after, "etrans_smtp_replies_total", **{"class": "2xx"}) == TOTAL
    assert value(after, "etrans_smtp_replies_total", **{"class": "5xx"}) == 0
    assert value(after, "etrans_sendmail_delivery_seconds_count") == TOTAL
    assert value(after, "etrans_sendmail_outcomes_total", worker="sendmail",
                 outcome="delivered") == TOTAL
    assert value(after, "etrans_pipeline_processed_total", worker="sendmail") == TOTAL
    assert value(after, "etrans_pipeline_dead_lettered_total", worker="sendmail") == 0
    assert value(after, "etrans_pipeline_channel_capacity", worker="sendmail") > 0
    lags = {labels: v for (name, labels), v in after.items()
            if name == "etrans_pipeline_consumer_lag"}
    assert len(lags) == 2, after  # one per partition, each caught up
    assert set(lags.values()) == {0.0}
    assert value(after, "etrans_pipeline_in_flight", worker="sendmail") == 0
