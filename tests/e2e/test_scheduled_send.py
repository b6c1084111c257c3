"""Scheduled sending, done when (issue 18 item 4): 1,000 emails scheduled 5 s ahead through a
real ``etrans serve``, which is killed (``kill -9``) before they are due and started again; a
real ``etrans sendmail`` delivers to an SMTP server that records each message with the moment
it arrived.  Every email arrives exactly once, none before its ``scheduled_at``.

The schedule lives in the USEND DB (the outbox rows wait with their ``due_at``), so the process
that dies loses nothing: the restarted relay releases the rows when due and publishes them.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.dev_support import EtransProcess, seed_account, wait_for

pytestmark = pytest.mark.slow

TOTAL, BATCH = 1000, 100
AHEAD = timedelta(seconds=5)


def _release_lateness(usend_url: str, message_ids: list[str]) -> list[float]:
    """Seconds from each email's scheduled_at to its release by the relay (the status change
    to queued is its last write: no fetchlog runs here), sorted."""
    from sqlalchemy import create_engine, select

    from etrans.adapters.sql import sqlalchemy_url
    from etrans.adapters.sql.usend import EmailMessage

    emails = EmailMessage.__table__
    engine = create_engine(sqlalchemy_url(usend_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(emails.c.status, emails.c.scheduled_at,
                                       emails.c.updated_at)
                                .where(emails.c.message_id.in_(message_ids))).all()
    finally:
        engine.dispose()
    assert {r.status for r in rows} == {"queued"}
    return sorted((r.updated_at - r.scheduled_at).total_seconds() for r in rows)


def test_scheduled_emails_survive_kill_9_and_arrive_once_never_early(
        etrans_env: Any, smtp_server_factory: Any, tmp_path: Path) -> None:
    env = etrans_env(ETRANS_REDIS_PREFIX=f"e2e:{uuid.uuid4().hex[:10]}:",
                     ETRANS_LOG_LEVEL="INFO", BILLING_V4_URI=None,
                     SENDMAIL_RETRY_BASE_SECONDS="0.2", KAFKA_COMMIT_INTERVAL_SECONDS="0.2")
    key, domain = seed_account(env["USEND_DB_URI"], env["TOKEN_SECRET"], env["TOKEN_IV"])
    server = smtp_server_factory(users={f"smtp@{domain}": "pw"})
    env.update(server.env())
    base_url = f"http://{env['ETRANS_BIND']}"
    # The SMTP server stamps each message with time.monotonic(): the wall clock of that moment.
    wall0, mono0 = time.time(), time.monotonic()
    serve = EtransProcess(["serve"], env, tmp_path / "serve.log").start()
    sendmail = EtransProcess(["sendmail"], env, tmp_path / "sendmail.log").start()
    processes = [serve, sendmail]
    due: dict[str, datetime] = {}  # message id -> its scheduled_at
    try:
        serve.wait_http(base_url)
        with httpx.Client(base_url=base_url, headers={"X-API-KEY": key}, timeout=60) as client:
            for first in range(0, TOTAL, BATCH):
                at = datetime.now(UTC) + AHEAD
                emails = [{"from": f"Acme <news@{domain}>", "to": [f"r{first + i}@example.org"],
                           "subject": "Later", "text": "scheduled", "scheduled_at": at.isoformat()}
                          for i in range(BATCH)]
                answer = client.post("/emails/batch", json={"emails": emails})
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["errors"] == [], body["errors"][:3]
                assert {e["status"] for e in body["data"]} == {"scheduled"}
                due.update((e["id"], at) for e in body["data"])
        assert serve.process is not None
        serve.process.kill()  # kill -9, before the first email is due
        serve.process.wait(10)
        received_while_down = len(server.received)
        serve = EtransProcess(["serve"], env, tmp_path / "serve.log").start()
        processes[0] = serve
        serve.wait_http(base_url)

        def received() -> set[str]:
            return {message_id.strip("<>") for message_id in server.message_ids()}

        wait_for(lambda: set(due) <= received(), 180,
                 f"{TOTAL} scheduled emails at the SMTP server",
                 lambda: f"{len(received() & set(due))} received\n" + "\n".join(
                     f"--- {p.args[0]} ---\n{p.tail()}" for p in processes))
        time.sleep(2)  # a late duplicate would show now
        arrivals = [(m.message_id.strip("<>"), wall0 + (m.received_at - mono0))
                    for m in list(server.received)]
    finally:
        codes = [p.stop() for p in reversed(processes)]
    counts = Counter(message_id for message_id, _ in arrivals)
    assert set(counts) == set(due), "lost or unexpected messages"
    assert [n for n in counts.values() if n != 1] == [], "sent more than once"
    early = [(message_id, due[message_id].timestamp() - arrived)
             for message_id, arrived in arrivals if arrived < due[message_id].timestamp()]
    assert early == [], f"{len(early)} arrived before their scheduled_at (s early): {early[:5]}"
    lateness = sorted(arrived - due[message_id].timestamp() for message_id, arrived in arrivals)
    released = _release_lateness(env["USEND_DB_URI"], list(due))
    print(f"\n{TOTAL} scheduled {AHEAD.seconds} s ahead, serve killed -9 and restarted "
          f"({received_while_down} received meanwhile): released after scheduled_at median "
          f"{released[len(released) // 2]:.2f} s, last {released[-1]:.2f} s; at the SMTP "
          f"server median {lateness[len(lateness) // 2]:.2f} s, last {lateness[-1]:.2f} s")
    assert codes == [0, 0], "\n".join(p.tail() for p in processes)
