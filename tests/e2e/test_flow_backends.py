"""One end-to-end suite, two backends: send -> deliver -> log -> status.

``dev``: ``etrans dev`` alone (embedded stand-ins, temp data dir).  ``real``: ``etrans serve``,
``etrans sendmail`` and ``etrans fetchlog`` on the harness's Kafka, Redis, PostgreSQL and
MongoDB, with an SMTP server that publishes the delivery events onto LOG_TOPIC as Filebeat would.
Then what only ``etrans dev`` promises: data persists across a restart, and a real service given
in the environment (Redis here) replaces its stand-in.
"""

from __future__ import annotations

import email
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.dev_support import Backend, base_env, start_dev, start_real, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(params=["dev", "real"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "dev":
        running = start_dev(tmp_path / "data")
        yield running
        assert running.stop() == [0], running.tails()
    else:
        env = request.getfixturevalue("etrans_env")(
            ETRANS_REDIS_PREFIX=f"e2e:{uuid.uuid4().hex[:10]}:", ETRANS_LOG_LEVEL="INFO")
        # Tracking served by this serve (docs/tracking.md); dev has it on by default.
        env.update(ETRANS_TRACKING_BASE_URL=f"http://{env['ETRANS_BIND']}",
                   ETRANS_TRACKING_SECRET=uuid.uuid4().hex,
                   KAFKA_EVENTS_TOPIC=request.getfixturevalue("new_topic")(prefix="events"))
        running, sink = start_real(env, tmp_path)
        try:
            yield running
            assert running.stop() == [0, 0, 0], running.tails()
        finally:
            running.stop()
            sink.stop()


def send(backend: Backend, **fields: Any) -> str:
    body = {"from": f"Acme <news@{backend.domain}>", "to": ["a@example.org"],
            "subject": "Welcome", "text": "Hello there", **fields}
    response = backend.call("POST", "/emails", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    return str(response.json()["id"])


def wait_delivered(backend: Backend, message_id: str, timeout: float = 60.0) -> dict[str, Any]:
    def delivered() -> dict[str, Any] | None:
        response = backend.call("GET", f"/emails/{message_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        return body if body["status"] == "Delivered" else None

    return wait_for(delivered, timeout, f"{message_id} to be Delivered", backend.tails)


def stored_messages(mail_dir: Path) -> dict[str, email.message.Message]:
    found = {}
    for path in mail_dir.rglob("*.eml"):
        message = email.message_from_bytes(path.read_bytes())
        found[str(message["Message-ID"]).strip("<>")] = message
    return found


def test_send_deliver_log_status(backend: Backend) -> None:
    first = send(backend, cc=["c@example.org"], html="<p>Hi</p>")
    second = send(backend, to=["Bee <b@example.org>"], subject="Second")

    detail = wait_delivered(backend, first)
    assert detail["delivered_at"] is not None
    assert detail["subject"] == "Welcome"
    wait_delivered(backend, second)

    # The SMTP server got both, as sent (cc in the headers, both parts of the first).
    messages = wait_for(lambda: (m := stored_messages(backend.mail_dir)) and len(m) >= 2 and m,
                        20, "two stored messages", backend.tails)
    assert set(messages) >= {first, second}
    assert messages[first]["Subject"] == "Welcome"
    assert messages[first]["Cc"] == "c@example.org"
    assert messages[second]["Subject"] == "Second"

    # GET /logs: one Sender/delivered document per recipient, source API, filterable.
    def logs_of(message_id: str) -> dict[str, Any]:
        response = backend.call("GET", "/logs", params={"message_id": message_id})
        assert response.status_code == 200, response.text
        return response.json()

    logs = wait_for(lambda: (body := logs_of(first)) and body["total"] == 2 and body, 30,
                    "two log documents of the first email", backend.tails)
    assert {entry["recipient"] for entry in logs["logs"]} == {"a@example.org", "c@example.org"}
    for entry in logs["logs"]:
        assert entry["event"] == "Sender"
        assert entry["status"] == "Delivered"
        assert entry["source"] == "API"
        assert entry["sender"] == f"news@{backend.domain}"
        assert entry["from_domain"] == backend.domain
        assert entry["action_detail"].startswith("250 ")
    assert {"label": "Delivered", "count": 2, "percentage": 100.0} in logs["stats"]

    everything = backend.call("GET", "/logs", params={"action": "delivered"}).json()
    assert everything["total"] == 3
    assert backend.call("GET", "/logs", params={"source": "smtp"}).json()["total"] == 0
    after = datetime.now(UTC).isoformat()
    assert backend.call("GET", "/logs", params={"log_after": after}).json()["total"] == 0

    # GET /emails/{id}: each recipient's outcome, from the same events (fetchlog).
    def recipients_of(message_id: str) -> list[dict[str, Any]]:
        response = backend.call("GET", f"/emails/{message_id}")
        assert response.status_code == 200, response.text
        return list(response.json()["recipients"])

    recipients = wait_for(lambda: len(r := recipients_of(first)) == 2 and r, 30,
                          "two recipient outcomes of the first email", backend.tails)
    assert [(r["email"], r["outcome"], r["bounce_class"]) for r in recipients] == [
        ("a@example.org", "Delivered", None), ("c@example.org", "Delivered", None)]
    assert all(r["response"].startswith("250 ") for r in recipients)

    # GET /emails: both Delivered, with the stats.
    listing = backend.call("GET", "/emails", params={"status": "delivered"}).json()
    assert {row["id"] for row in listing["data"]} == {first, second}
    assert listing["stats"] == [{"label": "Delivered", "count": 2, "percentage": 100.0}]


def suppression_of(backend: Backend, address: str) -> dict[str, Any] | None:
    """The entry of ``address`` on the demo user's suppression list (GET /suppressions)."""
    response = backend.call("GET", "/suppressions", params={"address": address})
    assert response.status_code == 200, response.text
    return next((e for e in response.json()["data"] if e["email"] == address), None)


def test_hard_bounce_suppresses_the_next_send(backend: Backend) -> None:
    """send -> the SMTP server refuses one recipient with 550 5.1.1 -> sendmail's Reject ->
    fetchlog stores it (Bounced, hard) and lists the address -> the next sends skip it."""
    gone = f"gone-{uuid.uuid4().hex[:10]}@bounce.test"
    first = send(backend, to=["a@example.org", gone])

    def outcomes(message_id: str) -> dict[str, tuple[str, str | None, str]]:
        response = backend.call("GET", f"/emails/{message_id}")
        assert response.status_code == 200, response.text
        return {r["email"]: (r["outcome"], r["bounce_class"], r["response"])
                for r in response.json()["recipients"]}

    bounced = wait_for(lambda: gone in (o := outcomes(first)) and o, 60,
                       "the hard bounce of the first email", backend.tails)
    assert bounced[gone][:2] == ("Bounced", "hard")
    assert bounced[gone][2].startswith("550 5.1.1")
    listed = wait_for(lambda: suppression_of(backend, gone), 30, "the suppression entry",
                      backend.tails)
    assert (listed["reason"], listed["message_id"]) == ("hard_bounce", first)
    assert listed["response"].startswith("550 5.1.1")

    # Mixed: sent to the other recipient only; the address is matched case-insensitively.
    response = backend.call("POST", "/emails", json={
        "from": f"Acme <news@{backend.domain}>", "to": [gone.upper(), "b@example.org"],
        "subject": "Second", "text": "Hello again"})
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["status"] == "queued"
    assert second["suppressed"] == [{"email": gone.upper(), "reason": "hard_bounce"}]
    wait_delivered(backend, second["id"])
    messages = wait_for(lambda: second["id"] in (m := stored_messages(backend.mail_dir)) and m,
                        20, "the second message", backend.tails)
    assert messages[second["id"]]["To"] == "b@example.org"
    after = wait_for(lambda: len(o := outcomes(second["id"])) == 2 and o, 30,
                     "the outcomes of the second email", backend.tails)
    assert after == {"b@example.org": after["b@example.org"],
                     gone: ("Suppressed", None, "hard_bounce")}
    assert after["b@example.org"][0] == "Delivered"

    # Every recipient suppressed: accepted, never sent.
    response = backend.call("POST", "/emails", json={
        "from": f"Acme <news@{backend.domain}>", "to": [gone], "subject": "Third",
        "text": "Nobody gets this"})
    assert response.status_code == 200, response.text
    third = response.json()
    assert (third["status"], third["suppressed"]) == (
        "suppressed", [{"email": gone, "reason": "hard_bounce"}])
    detail = backend.call("GET", f"/emails/{third['id']}").json()
    assert detail["status"] == "Suppressed"
    assert [(r["email"], r["outcome"]) for r in detail["recipients"]] == [(gone, "Suppressed")]
    # Delivered after the third was accepted, a fourth email shows the pipeline moved past it.
    fourth = send(backend, subject="Fourth")
    wait_delivered(backend, fourth)
    assert third["id"] not in stored_messages(backend.mail_dir)
    assert backend.call("GET", f"/emails/{third['id']}").json()["status"] == "Suppressed"


def test_open_and_click_tracking(backend: Backend) -> None:
    """PATCH /domains/{id} turns tracking on; sendmail reads the flags it wrote and instruments
    the HTML; the pixel and the link answer on the same server."""
    [domain] = [d for d in backend.call("GET", "/domains").json()["data"]
                if d["domain"] == backend.domain]
    patched = backend.call("PATCH", f"/domains/{domain['id']}",
                           json={"open_tracking": True, "click_tracking": True})
    assert patched.status_code == 200, patched.text
    link = "https://shop.example.org/sale?x=1"
    message_id = send(backend, html=f'<p><a href="{link}">sale</a></p>', text=link)
    wait_delivered(backend, message_id)
    stored = stored_messages(backend.mail_dir)[message_id]
    parts = {part.get_content_subtype(): part.get_payload(decode=True).decode()
             for part in stored.walk() if part.get_content_maintype() == "text"}
    assert parts["plain"].strip() == link
    [pixel] = re.findall(r'<img src="([^"]+)"', parts["html"])
    [tracked] = re.findall(r'href="([^"]+)"', parts["html"])
    assert pixel.startswith(f"{backend.base_url}/t/o/")
    assert httpx.get(pixel).status_code == 200
    clicked = httpx.get(tracked)
    assert (clicked.status_code, clicked.headers["Location"]) == (302, link)

    # fetchlog stores both (docs/tracking.md): counts on the email, Open / Click in its logs.
    def engaged() -> dict[str, Any] | None:
        body = backend.call("GET", f"/emails/{message_id}").json()
        return body if (body["opens"], body["clicks"]) == (1, 1) else None

    detail = wait_for(engaged, 60, f"{message_id} opened and clicked", backend.tails)
    assert detail["status"] == "Delivered"  # an open or a click changes no status
    assert detail["first_opened_at"] is not None
    assert detail["first_clicked_at"] is not None
    logs = backend.call("GET", f"/logs?message_id={message_id}&per_page=100").json()["logs"]
    by_event = {entry["event"]: entry for entry in logs}
    assert (by_event["Open"]["status"], by_event["Click"]["status"]) == ("Opened", "Clicked")
    assert by_event["Click"]["action_detail"] == link


def test_dev_data_persists_across_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dev = start_dev(data)
    try:
        delivered = send(dev, subject="Before restart")
        wait_delivered(dev, delivered)
        # Sent right before the stop: whatever step it reached, it is delivered after restart.
        in_flight = send(dev, subject="Just before the stop")
    finally:
        assert dev.stop() == [0], dev.tails()
    key = dev.api_key
    assert oct((data / "demo.json").stat().st_mode & 0o777) == "0o600"

    again = start_dev(data)
    try:
        assert again.api_key == key  # the demo account is not created twice
        domains = again.call("GET", "/domains").json()
        assert domains["total"] == 1
        assert domains["data"][0]["status"] == "verified"
        wait_delivered(again, in_flight)
        assert again.call("GET", f"/emails/{delivered}").json()["status"] == "Delivered"
        logs = again.call("GET", "/logs").json()
        assert {entry["message_id"] for entry in logs["logs"]} == {delivered, in_flight}
        assert logs["total"] == 2  # nothing stored twice after the restart
        after = send(again, subject="After restart")
        wait_delivered(again, after)
        assert set(stored_messages(again.mail_dir)) == {delivered, in_flight, after}
        # The demo user's pack leaves room to try POST /domains (FREE would allow only one).
        created = again.call("POST", "/domains", json={"domain": "second.example.com"})
        assert created.status_code == 200, created.text
        assert created.json()["status"] == "pending"
        assert again.call("GET", "/domains").json()["total"] == 2
    finally:
        assert again.stop() == [0], again.tails()


def test_dev_with_real_redis(tmp_path: Path, redis_url: str) -> None:
    import redis

    prefix = f"e2e-dev:{uuid.uuid4().hex[:10]}:"
    dev = start_dev(tmp_path / "data", env=base_env(REDIS_URI=redis_url,
                                                    ETRANS_REDIS_PREFIX=prefix))
    client = redis.Redis.from_url(redis_url)
    message_id = ""
    try:
        health = dev.call("GET", "/readyz").json()
        assert health["status"] == "ok", health
        message_id = send(dev)
        wait_delivered(dev, message_id)
        # The quota counters, the credential cache and the delivery mark are in Redis.
        day = datetime.now(UTC).strftime("%Y%m%d")
        assert client.get(f"{prefix}quota:1:d:{day}") == b"1"
        assert client.hget("auth", "1") is not None
        assert client.get(f"etrans:sendmail:done:{message_id}") == b"delivered"
        # ... and not in the embedded store.
        assert not (tmp_path / "data" / "state.sqlite3").exists()
        log_line = next(line for line in (tmp_path / "data.log").read_text().splitlines()
                        if "redis" in line and "127.0.0.1" in line)
        assert "local store" not in log_line
    finally:
        assert dev.stop() == [0], dev.tails()
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.delete(f"etrans:sendmail:done:{message_id}")
        client.hdel("auth", "1")
        client.close()
    assert json.loads((tmp_path / "data" / "demo.json").read_text())["user_id"] == 1


def test_dev_with_real_kafka_and_mongodb(tmp_path: Path, kafka_bootstrap: str,
                                         new_topic: Any, mongo_uri: str) -> None:
    import pymongo

    dbname = f"etrans_dev_{uuid.uuid4().hex[:10]}"
    env = base_env(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=new_topic(prefix="dev-sendmail"),
        LOG_TOPIC=new_topic(prefix="dev-logs"), KAFKA_GROUP_ID=f"dev-{uuid.uuid4().hex[:8]}",
        LOG_GROUP_ID=f"dev-logs-{uuid.uuid4().hex[:8]}", KAFKA_CONF_SESSION_TIMEOUT_MS="6000",
        KAFKA_CONF_HEARTBEAT_INTERVAL_MS="2000", KAFKA_CONF_GROUP_PROTOCOL="classic",
        MONGODB_URI=mongo_uri, MONGODB_DBNAME=dbname)
    dev = start_dev(tmp_path / "data", env=env)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    try:
        message_id = send(dev)
        wait_delivered(dev, message_id)
        stored = client[dbname]["email_logs"].find_one({"message_id": message_id})
        assert stored is not None
        assert (stored["event"], stored["action"]) == ("Sender", "delivered")
        assert dev.call("GET", "/logs").json()["total"] == 1
        assert not (tmp_path / "data" / "topics.sqlite3").exists()
        assert not (tmp_path / "data" / "logs.sqlite3").exists()
    finally:
        assert dev.stop() == [0], dev.tails()
        client.drop_database(dbname)
        client.close()


def test_dev_with_real_postgresql(tmp_path: Path, fresh_database: Any) -> None:
    """USEND_DB_URI replaces the SQLite file: migrated at start, the outbox relayed from
    PostgreSQL (PgOutboxStore), the email's status written there, and a clean stop."""
    from sqlalchemy import create_engine, text

    from etrans.adapters.sql import sqlalchemy_url

    url = fresh_database("devusend")
    dev = start_dev(tmp_path / "data", env=base_env(USEND_DB_URI=url))
    try:
        message_id = send(dev)
        wait_delivered(dev, message_id)
        assert not (tmp_path / "data" / "usend.sqlite3").exists()
    finally:
        assert dev.stop() == [0], dev.tails()
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM email_messages WHERE message_id = :id"),
                                  {"id": message_id}).scalar_one()
            pending = conn.execute(text("SELECT count(*) FROM email_outbox "
                                        "WHERE published_at IS NULL")).scalar_one()
    finally:
        engine.dispose()
    assert (status, pending) == ("delivered", 0)  # the stored value; the API shows Delivered
