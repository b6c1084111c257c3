"""``etrans dev`` sends scheduled emails (issue 18 items 4 and 5): on the SQLite stand-in an
email scheduled 2 s ahead waits (status Scheduled), then reaches the built-in SMTP server no
earlier than its ``scheduled_at``; a moved one waits for its new time; a cancelled one never
arrives and shows Cancelled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.e2e.dev_support import start_dev, wait_for

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


def stored(mail_dir: Path, message_id: str) -> Path | None:
    """The file of the email ``message_id`` in ``etrans dev``'s mail directory, if it arrived."""
    for path in mail_dir.rglob("*.eml"):
        if message_id.encode() in path.read_bytes().split(b"\n\n", 1)[0]:
            return path
    return None


def test_dev_sends_scheduled_emails_when_due_and_cancels(tmp_path: Path) -> None:
    dev = start_dev(tmp_path / "data")
    try:
        def send(at: datetime) -> str:
            answer = dev.call("POST", "/emails", json={
                "from": f"Demo <hello@{dev.domain}>", "to": ["someone@example.org"],
                "subject": "Later", "text": "scheduled", "scheduled_at": at.isoformat()})
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "scheduled"
            return str(answer.json()["id"])

        soon = datetime.now(UTC) + timedelta(seconds=2)
        due, cancelled, moved = send(soon), send(soon), send(soon + timedelta(hours=1))
        assert dev.call("GET", f"/emails/{due}").json()["status"] == "Scheduled"
        assert dev.call("DELETE", f"/emails/{cancelled}/schedule").status_code == 200
        later = datetime.now(UTC) + timedelta(seconds=3)
        answer = dev.call("PATCH", f"/emails/{moved}/schedule",
                          json={"scheduled_at": later.isoformat()})
        assert answer.status_code == 200, answer.text
        arrived = {message_id: wait_for(lambda m=message_id: stored(dev.mail_dir, m), 60,
                                        f"{message_id} delivered", dev.tails)
                   for message_id in (due, moved)}
        # The file is written when the message has arrived: its time is no earlier.
        assert arrived[due].stat().st_mtime >= soon.timestamp()
        assert arrived[moved].stat().st_mtime >= later.timestamp()
        assert stored(dev.mail_dir, cancelled) is None
        assert dev.call("GET", f"/emails/{cancelled}").json()["status"] == "Cancelled"
        answer = dev.call("DELETE", f"/emails/{due}/schedule")
        assert answer.status_code == 409, answer.text
    finally:
        assert dev.stop() == [0], dev.tails()


def test_dev_leaves_out_recipients_suppressed_while_a_scheduled_email_waited(
        tmp_path: Path) -> None:
    dev = start_dev(tmp_path / "data")
    try:
        def send(to: list[str], at: datetime) -> str:
            answer = dev.call("POST", "/emails", json={
                "from": f"Demo <hello@{dev.domain}>", "to": to, "subject": "Later",
                "text": "scheduled", "scheduled_at": at.isoformat()})
            assert answer.status_code == 200, answer.text
            assert (answer.json()["status"], answer.json()["suppressed"]) == ("scheduled", [])
            return str(answer.json()["id"])

        soon = datetime.now(UTC) + timedelta(seconds=3)
        partly = send(["someone@example.org", "gone@example.org"], soon)
        every = send(["gone@example.org"], soon)
        answer = dev.call("POST", "/suppressions", json={"email": "Gone@example.org"})
        assert answer.status_code == 201, answer.text
        arrived = wait_for(lambda: stored(dev.mail_dir, partly), 60, f"{partly} delivered",
                           dev.tails)
        header = arrived.read_bytes().split(b"\n\n", 1)[0].lower()
        assert b"someone@example.org" in header
        assert b"gone@example.org" not in header
        detail = wait_for(lambda: (lambda d: d if d["status"] != "Scheduled" else None)(
            dev.call("GET", f"/emails/{every}").json()), 30, f"{every} released", dev.tails)
        assert detail["status"] == "Suppressed"
        assert [(r["email"], r["outcome"]) for r in detail["recipients"]] == [
            ("gone@example.org", "Suppressed")]
        detail = dev.call("GET", f"/emails/{partly}").json()
        assert ("gone@example.org", "Suppressed") in [(r["email"], r["outcome"])
                                                     for r in detail["recipients"]]
        assert not any(r["email"] == "gone@example.org" and r["outcome"] != "Suppressed"
                       for r in detail["recipients"])
        assert stored(dev.mail_dir, every) is None
    finally:
        assert dev.stop() == [0], dev.tails()
