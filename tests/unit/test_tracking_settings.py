"""ETRANS_TRACKING_BASE_URL / ETRANS_TRACKING_SECRET for ``serve`` and ``sendmail``, and the step
of sendmail that instruments the HTML (with a fake flags source: the SQL one is tested in
tests/integration/test_sendmail_tracking.py)."""

from __future__ import annotations

import pytest

from etrans.app.tracking import MessageTracking, is_api_email, unsubscribe_uris
from etrans.domain.mime import Mailbox, OutgoingEmail
from etrans.domain.tracking import CLICK, derive_tracking_key, read_token
from etrans.errors import ConfigError
from etrans.settings import for_command
from tests.unit.test_settings import SENDMAIL_ENV, SERVE_ENV

SECRET = "s" * 16
ON = {"ETRANS_TRACKING_BASE_URL": "https://t.example.com/", "ETRANS_TRACKING_SECRET": SECRET}


def test_tracking_is_off_unless_the_base_url_is_set() -> None:
    assert for_command("serve", SERVE_ENV).tracking is None
    sendmail = for_command("sendmail", SENDMAIL_ENV)
    assert (sendmail.tracking, sendmail.tracking_flags) == (None, None)


def test_serve_and_sendmail_read_the_same_settings() -> None:
    serve = for_command("serve", {**SERVE_ENV, **ON, "KAFKA_EVENTS_TOPIC": "events"})
    assert serve.tracking is not None
    assert (serve.tracking.base_url, serve.tracking.secret.get(), serve.tracking.events_topic) == (
        "https://t.example.com", SECRET, "events")
    sendmail = for_command("sendmail", {**SENDMAIL_ENV, **ON,
                                        "USEND_DB_URI": "postgresql://u@h/usend"})
    assert sendmail.tracking is not None
    assert sendmail.tracking_flags is not None
    assert sendmail.tracking_flags.domains_uri is None
    assert sendmail.tracking.events_topic == "email-events"


@pytest.mark.parametrize(("env", "message"), [
    ({"ETRANS_TRACKING_BASE_URL": "https://t.example.com"}, "ETRANS_TRACKING_SECRET is required"),
    ({**ON, "ETRANS_TRACKING_SECRET": "short"}, "at least 16 bytes, got 5"),
    ({**ON, "ETRANS_TRACKING_BASE_URL": "t.example.com"}, "must be an http"),
])
def test_problems_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        for_command("serve", {**SERVE_ENV, **env})
    assert "s" * 16 not in str(caught.value)


def test_sendmail_needs_the_databases_of_the_flags() -> None:
    with pytest.raises(ConfigError, match="USEND_DB_URI is required"):
        for_command("sendmail", {**SENDMAIL_ENV, **ON})
    with pytest.raises(ConfigError, match="DB_URI is required"):
        for_command("sendmail", {**SENDMAIL_ENV, **ON, "USEND_DB_URI": "postgresql://u@h/u",
                                 "BILLING_V4_URI": "https://billing.example/v4"})


class Flags:
    def __init__(self, click: bool, open_: bool) -> None:
        self.flags = (click, open_)
        self.asked: list[tuple[str, str]] = []

    async def tracking_flags(self, user_id: str, domain: str) -> tuple[bool, bool]:
        self.asked.append((user_id, domain))
        return self.flags


def email(message_id: str = "msg_1@example.org", user_id: str = "42", **kw: object
          ) -> OutgoingEmail:
    return OutgoingEmail(message_id=message_id, user_id=user_id,
                         sender=Mailbox("news@Example.ORG"), to=(Mailbox("to@example.com"),),
                         subject="s", **kw)  # type: ignore[arg-type]


def test_only_api_emails_are_tracked() -> None:
    assert is_api_email(email())
    assert not is_api_email(email(message_id="<abc@example.org>"))
    assert not is_api_email(email(user_id="u-42"))


def test_unsubscribe_https_uris_are_skipped() -> None:
    headers = (("list-unsubscribe", "<https://e.example/u?a=1>, <mailto:u@e.example>"),)
    assert unsubscribe_uris(email(headers=headers)) == ("https://e.example/u?a=1",)
    assert unsubscribe_uris(email()) == ()


async def test_instrument_rewrites_the_html_only() -> None:
    key = derive_tracking_key(b"k" * 32)
    flags = Flags(click=True, open_=False)
    tracking = MessageTracking(key, "https://t.example.com", flags)
    original = email(html='<a href="https://a.example/x">x</a>', text="https://a.example/x")
    done = await tracking.instrument(original)
    assert flags.asked == [("42", "example.org")]
    assert done.text == original.text
    assert done.html is not None
    token = done.html.split("/t/c/")[1].split('"')[0]
    assert read_token(key, CLICK, token).url == "https://a.example/x"
    assert await MessageTracking(key, "https://t", Flags(False, False)).instrument(
        original) is original
    assert await tracking.instrument(email(text="only text")) == email(text="only text")
