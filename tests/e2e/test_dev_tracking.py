"""``etrans dev`` tracks opens and clicks without any setting: a domain with both flags on
(PATCH /domains/{id}) sends an email whose stored HTML has the pixel and a rewritten link to dev's
own server; fetching them answers the GIF and the 302, and their events arrive on
KAFKA_EVENTS_TOPIC (the harness's broker here, as when KAFKA_BOOTSTRAP_SERVERS is set)."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path
from typing import Any

import httpx

from etrans.api.tracking import PIXEL
from tests.e2e.dev_support import base_env, start_dev, wait_for
from tests.harness.servers import unique_name
from tests.integration.sendmail_support import read_events

LINK = "https://shop.example.org/sale?x=1"


def test_dev_tracks_opens_and_clicks(kafka_bootstrap: str, new_topic: Any,
                                     tmp_path: Path) -> None:
    events_topic = new_topic(prefix="events")
    env = base_env(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=new_topic(prefix="send"),
                   LOG_TOPIC=new_topic(prefix="logs"), KAFKA_EVENTS_TOPIC=events_topic,
                   KAFKA_GROUP_ID=unique_name("dev-send"), LOG_GROUP_ID=unique_name("dev-log"),
                   WEBHOOKS_GROUP_ID=unique_name("dev-hooks"),
                   KAFKA_CONF_SESSION_TIMEOUT_MS="6000", KAFKA_CONF_HEARTBEAT_INTERVAL_MS="2000",
                   KAFKA_CONF_GROUP_PROTOCOL="classic")
    dev = start_dev(tmp_path / "data", env=env)
    try:
        [domain] = [d for d in dev.call("GET", "/domains").json()["data"]
                    if d["domain"] == dev.domain]
        patched = dev.call("PATCH", f"/domains/{domain['id']}",
                           json={"open_tracking": True, "click_tracking": True})
        assert patched.status_code == 200, patched.text
        sent = dev.call("POST", "/emails", json={
            "from": f"Acme <news@{dev.domain}>", "to": ["a@example.org"], "subject": "Sale",
            "html": f'<html><body><a href="{LINK}">sale</a></body></html>', "text": LINK})
        assert sent.status_code == 200, sent.text
        message_id = sent.json()["id"]

        def stored_html() -> str | None:
            for path in dev.mail_dir.rglob("*.eml"):
                message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                if str(message["Message-ID"]).strip("<>") == message_id:
                    body = message.get_body(("html",))
                    return None if body is None else str(body.get_content())
            return None

        html = wait_for(stored_html, 60, f"{message_id} in the mail directory", dev.tails)
        [pixel] = re.findall(r'<img src="([^"]+)"', html)
        [link] = re.findall(r'href="([^"]+)"', html)
        assert pixel.startswith(f"{dev.base_url}/t/o/")
        assert link.startswith(f"{dev.base_url}/t/c/")
        assert httpx.get(pixel, headers={"User-Agent": "dev-test"}).content == PIXEL
        clicked = httpx.get(link, headers={"User-Agent": "dev-test"})
        assert (clicked.status_code, clicked.headers["Location"]) == (302, LINK)

        def tracked() -> list[dict[str, Any]] | None:
            events = [e for e in read_events(kafka_bootstrap, events_topic, 100, timeout=2)
                      if e["type"] in ("email.opened", "email.clicked")]
            return events if len(events) >= 2 else None

        events = wait_for(tracked, 30, "the open and click events", dev.tails)
        assert [(e["type"], e["data"]["message_id"], e["data"]["user_agent"]) for e in events] == [
            ("email.opened", message_id, "dev-test"), ("email.clicked", message_id, "dev-test")]
        assert events[1]["data"]["url"] == LINK
        assert dev.stop() == [0], dev.tails()
    finally:
        dev.stop()
