"""Pure rules of sending: addresses, status labels, quota windows, email checks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from etrans.domain import status
from etrans.domain.addresses import AddressError, parse_address
from etrans.domain.emails import (
    MAX_EMAIL_BYTES,
    EmailRuleError,
    check_base64,
    check_email,
    check_header_name,
    decoded_size,
    new_message_id,
)
from etrans.domain.quota import exceeded_message, hourly_from_daily, remaining, windows


@pytest.mark.parametrize(("text", "email", "name"), [
    ("a@example.com", "a@example.com", None),
    ("Acme <hello@example.com>", "hello@example.com", "Acme"),
    ('"Acme, Inc" <hello@example.com>', "hello@example.com", "Acme, Inc"),
    ("<x.y+tag@sub.example.co>", "x.y+tag@sub.example.co", None),
    ("u@xn--bcher-kva.example", "u@xn--bcher-kva.example", None),
])
def test_addresses(text: str, email: str, name: str | None) -> None:
    address = parse_address(text)
    assert (address.email, address.name) == (email, name)


@pytest.mark.parametrize("text", [
    "", "a", "a@", "@example.com", "a@b", "a@example", "a..b@example.com", "a@-x.com",
    "a@example.com\r\nBcc: v@example.com", "Name\n <a@example.com>", "A <b@example.com",
    "x" * 65 + "@example.com", "a@" + "x" * 250 + ".com", "a b@example.com", "a@exa_mple.com",
    'Bad"Name <a@example.com>', "a@example.com\u2028",
])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


def test_status_labels_and_filters() -> None:
    assert [status.display_label(r) for r in
            ("queued", "sender", "sent", "delivered", "delivery", "deferred", "bounced",
             "reject", "rejected")] == ["Queued", "Sent", "Sent", "Delivered", "Delivered",
                                        "Delayed", "Bounced", "Bounced", "Bounced"]
    assert status.parse_status_filter("delayed, Deferred,DELIVERED") == ("Delayed", "Delivered")
    assert set(status.raw_statuses(["Bounced"])) == {"bounced", "reject", "rejected"}
    with pytest.raises(status.StatusFilterError):
        status.parse_status_filter("lost")
    with pytest.raises(status.StatusFilterError):
        status.parse_status_filter(" , ")
    assert status.log_label("delivered", "Sender") == "Delivered"
    assert status.log_label("", "Deferred") == "Delayed"
    assert status.log_label(None, "Queue") == "Queued"
    assert status.percentages({"Delivered": 100, "Bounced": 30, "Sent": 20}) == [
        {"label": "Delivered", "count": 100, "percentage": 66.7},
        {"label": "Bounced", "count": 30, "percentage": 20.0},
        {"label": "Sent", "count": 20, "percentage": 13.3},
    ]
    assert status.percentages({}) == []


@pytest.mark.parametrize(("response", "short"), [
    ("250 2.0.0 OK 1772679259 xyz", "250 2.0.0 OK"),
    ("550 5.1.1 <x@y>: Recipient address rejected", "550 5.1.1"),
    ("451 Try again", "451 Try"),
    ("250 OK", "250 OK"),
    ("", ""),
])
def test_smtp_short_code(response: str, short: str) -> None:
    assert status.smtp_short_code(response) == short


def test_quota_windows_and_math() -> None:
    w = windows(datetime(2026, 3, 10, 23, 59, 59, tzinfo=UTC))
    assert (w.hour, w.day, w.month) == ("2026031023", "20260310", "202603")
    assert w.hour_ttl > 3600
    assert w.day_ttl > 86400
    assert w.month_ttl > 31 * 86400
    assert hourly_from_daily(100000) == 4166
    assert hourly_from_daily(2) == 1
    assert hourly_from_daily(0) == 0
    assert remaining(50, 60) == 0
    assert remaining(None, 5) is None
    assert exceeded_message("hourly", 50) == \
        "Hourly sending quota exceeded: the limit is 50 emails per hour"


def _email(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"from": "a@example.com", "to": ["b@example.org"],
                               "subject": "s", "html": "<p>x</p>"}
    base.update(fields)
    return base


def test_email_rules() -> None:
    check_email(_email())
    with pytest.raises(EmailRuleError, match="html or text"):
        check_email(_email(html=None))
    with pytest.raises(EmailRuleError, match="recipients"):
        check_email(_email(to=["x@example.org"] * 30, bcc=["y@example.org"] * 21))
    with pytest.raises(EmailRuleError, match="subject: field required"):
        check_email(_email(subject=None))
    check_email(_email(template_id="tpl_1"))  # rendered before these rules: nothing refused
    big = "A" * ((MAX_EMAIL_BYTES // 3) * 4 + 4)
    with pytest.raises(EmailRuleError, match="too large"):
        check_email(_email(attachments=[{"filename": "f", "content": big,
                                         "content_type": "a/b"}]))
    assert decoded_size("aGk=") == 2
    assert decoded_size("aGVsbG8=") == 5
    assert check_base64("aGk=") is None
    assert check_base64("aGk") is not None
    assert check_base64("a*k=") is not None
    assert check_header_name("X-Tag") is None
    assert check_header_name("Bcc") is not None
    assert check_header_name("X:Y") is not None


def test_the_headers_refused_are_those_the_message_would_drop() -> None:
    """Content-Disposition was accepted (200), stored, and dropped by the MIME builder: the
    email went out without it, silently."""
    from etrans.domain import emails, mime

    assert check_header_name("Content-Disposition") is not None
    assert emails.RESERVED_HEADERS == mime.RESERVED_HEADERS
    for name in mime.RESERVED_HEADERS:
        assert check_header_name(name.title()) is not None, name


def test_message_ids_are_unique_msg_ids() -> None:
    ids = {new_message_id("Example.COM") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("msg_") and i.endswith("@example.com") for i in ids)
