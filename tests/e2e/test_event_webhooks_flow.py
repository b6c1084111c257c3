"""Issue 16's "done when", in ``etrans dev`` and with the real processes: send -> deliver ->
open -> click produces the webhook calls in order at a local receiver, each with a valid
Standard Webhooks signature.

Every producer is the real one: the outbox relay, sendmail (email.sent), the SMTP sink and
fetchlog (email.delivered from its delivery log), the tracking endpoints (email.opened,
email.clicked) and the webhooks worker; the topics are on the harness's broker.  The open is
fetched only once the delivery was called back, the click once the open was: each call must
arrive before the next step is taken."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from etrans.domain.events import derived_event_id
from tests.e2e.dev_support import (
    Backend,
    EtransProcess,
    base_env,
    start_dev,
    start_real,
    wait_for,
)
from tests.harness.servers import unique_name
from tests.integration.webhook_support import Receiver

LINK = "https://shop.example.org/sale?x=1"
TYPES = ["email.sent", "email.delivered", "email.opened", "email.clicked"]


def test_in_etrans_dev(kafka_bootstrap: str, new_topic: Any, tmp_path: Path) -> None:
    env = base_env(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=new_topic(prefix="send"),
                   LOG_TOPIC=new_topic(prefix="logs"),
                   KAFKA_EVENTS_TOPIC=new_topic(prefix="events"),
                   KAFKA_GROUP_ID=unique_name("dev-send"), LOG_GROUP_ID=unique_name("dev-log"),
                   WEBHOOKS_GROUP_ID=unique_name("dev-hooks"),
                   KAFKA_CONF_SESSION_TIMEOUT_MS="6000", KAFKA_CONF_HEARTBEAT_INTERVAL_MS="2000",
                   KAFKA_CONF_GROUP_PROTOCOL="classic")
    receiver = Receiver().start()
    dev = start_dev(tmp_path / "data", env=env)
    try:
        send_deliver_open_click(dev, receiver)
        assert dev.stop() == [0], dev.tails()
    finally:
        receiver.stop()
        dev.stop()


@pytest.mark.slow
def test_with_the_real_processes(etrans_env: Any, new_topic: Any, tmp_path: Path) -> None:
    """``etrans serve`` (API, outbox relay, tracking), ``sendmail``, ``fetchlog`` and
    ``webhooks`` as processes on the harness's services (as tests/e2e/test_flow_backends.py)."""
    env = etrans_env(ETRANS_REDIS_PREFIX=f"e2e:{uuid.uuid4().hex[:10]}:",
                     ETRANS_LOG_LEVEL="INFO", WEBHOOKS_GROUP_ID=unique_name("hooks"),
                     WEBHOOKS_ALLOW_PRIVATE_URLS="true",
                     KAFKA_EVENTS_TOPIC=new_topic(prefix="events"))
    env.update(ETRANS_TRACKING_BASE_URL=f"http://{env['ETRANS_BIND']}",
               ETRANS_TRACKING_SECRET=uuid.uuid4().hex)
    receiver = Receiver().start()
    backend, sink = start_real(env, tmp_path)
    try:
        webhooks_env = {k: v for k, v in env.items() if k != "BILLING_V4_URI"}
        backend.processes.append(EtransProcess(["webhooks"], webhooks_env,
                                               tmp_path / "webhooks.log").start())
        send_deliver_open_click(backend, receiver)
        assert backend.stop() == [0, 0, 0, 0], backend.tails()
    finally:
        backend.stop()
        sink.stop()
        receiver.stop()


def send_deliver_open_click(backend: Backend, receiver: Receiver) -> None:
    created = backend.call("POST", "/webhooks", json={"url": receiver.url, "events": TYPES})
    assert created.status_code == 201, created.text
    receiver.secret = created.json()["secret"]
    [domain] = [d for d in backend.call("GET", "/domains").json()["data"]
                if d["domain"] == backend.domain]
    patched = backend.call("PATCH", f"/domains/{domain['id']}",
                           json={"open_tracking": True, "click_tracking": True})
    assert patched.status_code == 200, patched.text

    sent = backend.call("POST", "/emails", json={
        "from": f"Acme <news@{backend.domain}>", "to": ["a@example.org"], "subject": "Sale",
        "html": f'<html><body><a href="{LINK}">sale</a></body></html>'})
    assert sent.status_code == 200, sent.text
    message_id = sent.json()["id"]

    def calls(count: int) -> bool:
        return len(receiver.snapshot()) >= count

    wait_for(lambda: calls(2), 90, "email.sent and email.delivered calls", backend.tails)
    html = wait_for(lambda: _stored_html(backend.mail_dir, message_id), 30, "the message",
                    backend.tails)
    [pixel] = re.findall(r'<img src="([^"]+)"', html)
    [link] = re.findall(r'href="([^"]+)"', html)
    assert httpx.get(pixel, headers={"User-Agent": "done-when"}).status_code == 200
    wait_for(lambda: calls(3), 60, "the email.opened call", backend.tails)
    assert httpx.get(link, headers={"User-Agent": "done-when"}).status_code == 302
    wait_for(lambda: calls(4), 60, "the email.clicked call", backend.tails)

    got = receiver.snapshot()
    assert all(r.verified for r in got), got
    payloads = [r.payload for r in got]
    types = [p["type"] for p in payloads]
    # sent (sendmail) and delivered (the SMTP server's log through fetchlog) are written by two
    # components at nearly the same time: either may come first.
    assert sorted(types[:2]) == ["email.delivered", "email.sent"], types
    assert types[2:] == ["email.opened", "email.clicked"], types
    assert {p["data"]["message_id"] for p in payloads} == {message_id}
    by_type = {p["type"]: r for p, r in zip(payloads, got, strict=True)}
    assert by_type["email.sent"].webhook_id == derived_event_id(message_id, "email.sent")
    assert by_type["email.clicked"].payload["data"]["url"] == LINK


def _stored_html(mail_dir: Path, message_id: str) -> str | None:
    for path in mail_dir.rglob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if str(message["Message-ID"]).strip("<>") == message_id:
            body = message.get_body(("html",))
            return None if body is None else str(body.get_content())
    return None
