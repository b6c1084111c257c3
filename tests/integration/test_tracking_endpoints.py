"""``GET /t/o/<token>`` and ``GET /t/c/<token>`` of a real ``etrans serve`` (its own process, on
the real services), and their events on KAFKA_EVENTS_TOPIC, read back from the broker."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from etrans.api.tracking import PIXEL
from etrans.domain.events import decode_event
from etrans.domain.tracking import CLICK, OPEN, TrackingTarget, derive_tracking_key, make_token
from tests.integration.sendmail_support import read_events
from tests.integration.test_serve import serving

SECRET = "endpoint-tracking-secret-0123456789"
KEY = derive_tracking_key(SECRET.encode())
UA = "Mozilla/5.0 (test) " + "x" * 1000


def tracking_env(etrans_env: Callable[..., dict[str, str]], new_topic: Callable[..., str]
                 ) -> dict[str, str]:
    return etrans_env(ETRANS_TRACKING_BASE_URL="https://t.example.test",
                      ETRANS_TRACKING_SECRET=SECRET,
                      KAFKA_EVENTS_TOPIC=new_topic(prefix="email-events"))


def altered_url(token: str, url: str) -> str:
    """``token`` with the URL of its payload replaced, its MAC kept: an open redirect attempt."""
    payload, mac = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body[3] = url
    forged = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode())
    return f"{forged.rstrip(b'=').decode()}.{mac}"


def test_open_and_click_answer_at_once_and_their_events_reach_the_topic(
    etrans_env: Callable[..., dict[str, str]], new_topic: Callable[..., str],
) -> None:
    env = tracking_env(etrans_env, new_topic)
    message_id = f"msg_{uuid.uuid4().hex}@example.test"
    url = "https://shop.example.org/sale?x=1&y=2"
    opened = make_token(KEY, TrackingTarget(OPEN, 42, message_id))
    clicked = make_token(KEY, TrackingTarget(CLICK, 42, message_id, url))
    other_key = derive_tracking_key(b"another secret, another server")
    with serving(env) as served:
        client = httpx.Client(base_url=served.base_url, headers={"User-Agent": UA}, timeout=30)
        pixel = client.get(f"/t/o/{opened}")
        assert pixel.status_code == 200
        assert pixel.content == PIXEL
        assert pixel.headers["Content-Type"] == "image/gif"
        assert "no-store" in pixel.headers["Cache-Control"]
        assert not any(name.lower().startswith("ratelimit") for name in pixel.headers)
        redirect = client.get(f"/t/c/{clicked}")
        assert redirect.status_code == 302
        assert redirect.headers["Location"] == url
        assert "no-store" in redirect.headers["Cache-Control"]

        # Invalid tokens: the pixel is answered anyway, a click is 404; no event either way.
        forged_open = make_token(other_key, TrackingTarget(OPEN, 42, message_id))
        assert client.get(f"/t/o/{forged_open}").content == PIXEL
        assert client.get("/t/o/garbage").content == PIXEL
        refused: list[str] = [
            make_token(other_key, TrackingTarget(CLICK, 42, message_id, url)),  # forged
            altered_url(clicked, "https://evil.example/phish"),  # open redirect attempt
            opened,  # an open token is not a click token
            clicked[:-2] + ("AA" if not clicked.endswith("AA") else "BA"),  # altered MAC
            "garbage",
        ]
        for token in refused:
            answer = client.get(f"/t/c/{token}")
            assert answer.status_code == 404, token
            assert "Location" not in answer.headers
        document = client.get("/openapi.json").json()
        assert not [path for path in document["paths"] if path.startswith("/t/")]
        records: list[dict[str, Any]] = read_events(
            env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_EVENTS_TOPIC"], 2, timeout=30,
            settle=1.0)

    events = [decode_event(json.dumps(record).encode()) for record in records]
    assert [e.type.value for e in events] == ["email.opened", "email.clicked"]
    assert {e.user_id for e in events} == {42}
    assert {e.message_id for e in events} == {message_id}
    assert events[0].data == {"message_id": message_id, "user_agent": UA[:512]}
    assert events[1].data == {"message_id": message_id, "user_agent": UA[:512], "url": url}
    assert len({e.id for e in events}) == 2
    assert served.process.returncode == 0, served.err
    [stopped] = [json.loads(line) for line in served.out.splitlines()
                 if '"tracking stopped"' in line]
    assert {k: stopped[k] for k in ("opens", "clicks", "invalid", "dropped", "published")} == {
        "opens": 1, "clicks": 1, "invalid": 7, "dropped": 0, "published": 2}
