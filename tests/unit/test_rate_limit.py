"""Rate limit rules without a store: the client address behind proxies, the header syntax of
draft-ietf-httpapi-ratelimit-headers, and the settings."""

from __future__ import annotations

import ipaddress

import pytest

from etrans.api.rate_limit import RateDecision, client_address
from etrans.errors import ConfigError
from etrans.settings import for_command
from tests.unit.test_settings import SERVE_ENV

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("192.0.2.1", None, "192.0.2.1"),
    ("192.0.2.1", "198.51.100.7", "192.0.2.1"),  # untrusted peer: header ignored
    ("10.0.0.5", "198.51.100.7", "198.51.100.7"),
    ("10.0.0.5", "6.6.6.6, 198.51.100.7, 10.0.0.9", "198.51.100.7"),  # spoofed left part ignored
    ("10.0.0.5", "10.0.0.8, 10.0.0.9", "10.0.0.8"),  # only proxies: the leftmost
    ("10.0.0.5", "not-an-ip", "10.0.0.5"),
    ("10.0.0.5", "[2001:db8:1:2::3]:443", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:aaaa::1", None, "2001:db8:1:2::/64"),  # IPv6 per /64
    ("::ffff:192.0.2.4", None, "192.0.2.4"),
    (None, "198.51.100.7", "unknown"),
])
def test_client_address(peer: str | None, forwarded: str | None, expected: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_headers_follow_the_draft_syntax() -> None:
    allowed = RateDecision("api-key", 100, 60, 1, 59.2)
    assert allowed.headers() == {"RateLimit-Policy": '"api-key";q=100;w=60',
                                 "RateLimit": '"api-key";r=99;t=60'}
    refused = RateDecision("api-key", 100, 60, 101, 0.3)
    assert refused.headers() == {"RateLimit-Policy": '"api-key";q=100;w=60',
                                 "RateLimit": '"api-key";r=0;t=1', "Retry-After": "1"}


def test_rate_limit_settings() -> None:
    http = for_command("serve", SERVE_ENV).http
    assert http is not None
    assert (http.rate_limit_requests, http.rate_limit_anonymous_requests,
            http.rate_limit_window_seconds, http.rate_limit_trusted_proxies) == (6000, 600, 60, ())
    http = for_command("serve", {**SERVE_ENV, "RATE_LIMIT_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
                                 "RATE_LIMIT_REQUESTS": "0"}).http
    assert http is not None
    assert http.rate_limit_trusted_proxies == ("10.0.0.0/8", "::1")
    assert http.rate_limit_requests == 0
    with pytest.raises(ConfigError) as err:
        for_command("serve", {**SERVE_ENV, "RATE_LIMIT_TRUSTED_PROXIES": "10.0.0.0/8,proxy",
                              "RATE_LIMIT_WINDOW_SECONDS": "0"})
    assert "RATE_LIMIT_TRUSTED_PROXIES" in str(err.value)
    assert "RATE_LIMIT_WINDOW_SECONDS" in str(err.value)
