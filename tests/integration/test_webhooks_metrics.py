"""``etrans webhooks --metrics-bind``: scraped while it delivers, the figures move as they must
(issue 17 item 1): attempts by outcome, retries, the time of each POST, the retry queue, and
the pipeline's lag."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from etrans.adapters.sql import migrations
from tests.harness.servers import free_port
from tests.integration.test_fetchlog_metrics import scrape, value, wait_scrape
from tests.integration.test_webhooks_service import (  # noqa: F401 (fixtures)
    receivers,
    webhooks_env,
)
from tests.integration.webhook_support import add_webhook, email_event, fresh_user, produce_events

EVENTS = 5
FAILING = 3  # the receiver's first answers: 500
RETRY_DELAY = 5.0  # long enough to scrape the retries while they wait


def test_webhooks_metrics_move_with_the_attempts(
    webhooks_env: Callable[..., dict[str, str]],  # noqa: F811
    receivers: Any,  # noqa: F811
    kafka_bootstrap: str,
    fresh_database: Callable[..., str],
    tmp_path: Path,
) -> None:
    # A USEND DB of its own: the retry queue's gauges count the whole table.
    usend = fresh_database("usend")
    migrations.upgrade(usend)
    env = webhooks_env(
        USEND_DB_URI=usend,
        WEBHOOKS_RETRY_DELAYS=f"{RETRY_DELAY},{RETRY_DELAY}",
        ETRANS_LOG_LEVEL="INFO",
    )
    receiver, user = receivers(answer=lambda n: 500 if n <= FAILING else 200), fresh_user()
    add_webhook(env["USEND_DB_URI"], env["TOKEN_SECRET"], user, receiver.url, receiver.secret)
    port = free_port()
    log_path = tmp_path / "webhooks.log"
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "etrans", "webhooks", "--metrics-bind", f"127.0.0.1:{port}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        before = wait_scrape(port, process, log_path)
        produce_events(
            kafka_bootstrap,
            env["KAFKA_EVENTS_TOPIC"],
            [email_event(user, i) for i in range(EVENTS)],
        )

        def outcome(scraped: dict, name: str) -> float:
            return value(
                scraped, "etrans_webhook_deliveries_total", worker="webhooks", outcome=name
            )

        # The first attempts: FAILING of them wait in the retry queue for RETRY_DELAY seconds.
        deadline = time.monotonic() + 60
        while outcome(waiting := scrape(port), "delivered") + outcome(waiting, "failed") < EVENTS:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, (waiting, log_path.read_text()[-3000:])
            time.sleep(0.1)
        # Then the retries, each delivered.
        deadline = time.monotonic() + 60
        while outcome(after := scrape(port), "delivered") < EVENTS:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, (after, log_path.read_text()[-3000:])
            time.sleep(0.2)
        deadline = time.monotonic() + 30
        while value(after, "etrans_pipeline_commits_total", worker="webhooks") == 0 or any(
            name == "etrans_pipeline_consumer_lag" and v > 0 for (name, _), v in after.items()
        ):
            assert time.monotonic() < deadline, after
            time.sleep(0.3)
            after = scrape(port)
    finally:
        process.terminate()
        process.wait(30)
    assert value(before, "etrans_webhook_retries_waiting") == 0
    assert value(before, "etrans_webhook_post_seconds_count") == 0
    # While the retries waited: counted, not yet due.
    assert (outcome(waiting, "delivered"), outcome(waiting, "failed")) == (
        EVENTS - FAILING,
        FAILING,
    )
    assert outcome(waiting, "retried") == 0
    assert value(waiting, "etrans_webhook_retries_waiting") == FAILING
    assert value(waiting, "etrans_webhook_retries_overdue_seconds") == 0
    # Once delivered: every POST timed, the retries counted, the queue empty.
    assert (outcome(after, "delivered"), outcome(after, "failed")) == (EVENTS, FAILING)
    assert outcome(after, "retried") == FAILING
    assert (outcome(after, "given_up"), outcome(after, "disabled")) == (0, 0)
    assert value(after, "etrans_webhook_post_seconds_count") == EVENTS + FAILING
    assert value(after, "etrans_webhook_post_seconds_sum") > 0
    assert value(after, "etrans_webhook_retries_waiting") == 0
    assert value(after, "etrans_pipeline_processed_total", worker="webhooks") == EVENTS
    assert value(after, "etrans_pipeline_in_flight", worker="webhooks") == 0
    assert len(receiver.snapshot()) == EVENTS + FAILING
