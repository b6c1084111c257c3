"""``etrans dev`` sends by stored template and with inline placeholders (issue 18 item 5): the
README's example - create a template on the SQLite stand-in, send it by id - reaches the
built-in SMTP server rendered (html escaped), GET /emails/{id} shows the template id, and an
inline ``{{ name }}`` send keeps its results."""

from __future__ import annotations

from email import message_from_bytes, policy
from typing import TYPE_CHECKING

import pytest

from tests.e2e.dev_support import start_dev, wait_for

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


def test_dev_sends_a_stored_template_and_inline_placeholders(tmp_path: Path) -> None:
    dev = start_dev(tmp_path / "data")
    try:
        created = dev.call("POST", "/templates", json={
            "name": "welcome", "subject": "Welcome, {{ name }}",
            "html": "<p>Hello {{ name }}!</p>"})
        assert created.status_code == 201, created.text
        template = created.json()
        assert template["variables"] == ["name"]
        sender = f"Demo <hello@{dev.domain}>"
        by_id = dev.call("POST", "/emails", json={
            "from": sender, "to": ["someone@example.org"], "template_id": template["id"],
            "template_data": {"name": "Ada <3"}})
        assert by_id.status_code == 200, by_id.text
        inline = dev.call("POST", "/emails", json={
            "from": sender, "to": ["someone@example.org"], "subject": "Hi {{ name }}",
            "html": "<p>{{ name }}</p>", "template_data": {"name": "\"Bo\""}})
        assert inline.status_code == 200, inline.text

        def stored(message_id: str) -> bytes | None:
            for path in dev.mail_dir.rglob("*.eml"):
                data = path.read_bytes()
                if message_id.encode() in data.split(b"\n\n", 1)[0]:
                    return data
            return None

        for sent, subject, html in ((by_id, "Welcome, Ada <3", "<p>Hello Ada &lt;3!</p>"),
                                    (inline, 'Hi "Bo"', "<p>&quot;Bo&quot;</p>")):
            message_id = sent.json()["id"]
            data = wait_for(lambda m=message_id: stored(m), 60, f"{message_id} delivered",
                            dev.tails)
            message = message_from_bytes(data, policy=policy.default)
            assert message["Subject"] == subject
            body = message.get_body(("html",))
            assert body is not None
            assert html in body.get_content()
        detail = dev.call("GET", f"/emails/{by_id.json()['id']}").json()
        assert detail["template_id"] == template["id"]
    finally:
        assert dev.stop() == [0], dev.tails()
