"""The webhook URL rules (etrans/domain/webhook_urls.py): which addresses are public, which
URLs parse, and the event subscription rule (etrans/domain/webhooks.py)."""

from __future__ import annotations

import pytest

from etrans.domain.webhook_urls import (
    InvalidWebhookUrl,
    address_problem,
    is_public_ip,
    parse_webhook_url,
)
from etrans.domain.webhooks import (
    EVENT_TYPES,
    InvalidSubscription,
    format_webhook_id,
    parse_webhook_id,
    subscription,
)
from etrans.errors import InvalidInput


@pytest.mark.parametrize("ip", [
    "127.0.0.1", "127.255.0.1", "10.0.0.1", "172.16.5.5", "172.31.255.255", "192.168.0.1",
    "169.254.169.254", "100.64.0.1", "100.127.255.255", "0.0.0.0", "0.1.2.3", "224.0.0.1",
    "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.2.1", "::", "::1", "fc00::1",
    "fd12:3456::1", "fe80::1", "fe80::1%eth0", "ff02::1", "fec0::1", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "64:ff9b::a00:1", "64:ff9b::7f00:1", "not an ip", "",
])
def test_addresses_that_are_not_public(ip: str) -> None:
    assert not is_public_ip(ip)


@pytest.mark.parametrize("ip", [
    "8.8.8.8", "93.184.215.14", "1.1.1.1", "100.63.255.255", "100.128.0.1", "172.32.0.1",
    "2606:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808",
])
def test_public_addresses(ip: str) -> None:
    assert is_public_ip(ip)


def test_a_parsed_url() -> None:
    parsed = parse_webhook_url("HTTPS://Hooks.Example.com:8443/p?q=1")
    assert (parsed.scheme, parsed.host, parsed.port, parsed.ip) == (
        "https", "hooks.example.com", 8443, None)
    assert parse_webhook_url("https://[2606:4700::1111]/").port == 443
    assert str(parse_webhook_url("https://8.8.8.8/").ip) == "8.8.8.8"
    assert parse_webhook_url("http://127.0.0.1:8080/", allow_http=True).port == 8080
    assert parse_webhook_url("https://localhost/").is_localhost
    assert parse_webhook_url("https://a.localhost/").is_localhost


@pytest.mark.parametrize("url", [
    "http://a.example/", "ftp://a.example/", "https://u@a.example/", "https://u:p@a.example/",
    "https://a.example/" + "x" * 2048, "https://a.example/\x00", "https://a.example/ x",
    "https://a.example/é", "https:///path", "https://a..example/", "https://-a.example/",
    "https://a.example:0/", "https://a.example:65536/", "https://[fe80::1%25eth0]/",
    "https://[zz::1]/", "https://127.1/", "https://0x7f.0.0.1/", "https://2130706433/",
    "https://intranet/", "https://a_b.example/", "", "a.example",
])
def test_urls_that_are_refused(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        parse_webhook_url(url)


def test_address_problem_names_the_first_refused_address() -> None:
    assert address_problem("h.example", ["8.8.8.8", "2606:4700::1111"]) is None
    problem = address_problem("h.example", ["8.8.8.8", "10.0.0.1"])
    assert problem is not None
    assert "10.0.0.1" in problem
    assert address_problem("h.example", []) is not None


def test_subscriptions() -> None:
    assert subscription(None) == ()
    assert subscription(["email.bounced", "email.sent", "email.sent"]) == (
        "email.sent", "email.bounced")
    assert subscription(list(EVENT_TYPES)) == EVENT_TYPES
    for bad in ([], ["email.nope"], ["email.sent", "x" * 10_000]):
        with pytest.raises(InvalidSubscription):
            subscription(bad)


def test_webhook_ids() -> None:
    assert format_webhook_id(12) == "wh_12"
    assert parse_webhook_id("wh_12") == 12
    for bad in ("12", "wh_", "wh_0", "wh_01", "wh_1x", "dom_1", "wh_" + "9" * 19):
        with pytest.raises(InvalidInput):
            parse_webhook_id(bad)
