"""Where a webhook may point: the URL's syntax and the addresses its host may resolve to.

A webhook makes etrans send HTTP requests to an address the user chose, from inside the
operator's network: without these rules it would reach loopback services, the private network
or a cloud's metadata endpoint (server-side request forgery).  The API checks a URL when it is
saved (:func:`parse_webhook_url`, then every address of its host with :func:`is_public_ip`);
``etrans webhooks`` checks the addresses again when it connects, since a name may resolve
elsewhere by then (DNS rebinding).  ``WEBHOOKS_ALLOW_PRIVATE_URLS=true`` lifts the address rule and
allows ``http`` (local development and tests).

Pure rules, standard library only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: embeds an IPv4 address
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]*$")
# What inet_aton (hence getaddrinfo) reads as an IPv4 address: 127.1, 0x7f.0.0.1, 2130706433.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class InvalidWebhookUrl(ValueError):
    """A URL a webhook may not have; the message says why (shown in the API's 400)."""


class UnresolvableHost(InvalidWebhookUrl):
    """The URL's host has no address, or DNS did not answer for it."""


@dataclass(frozen=True)
class WebhookUrl:
    url: str
    scheme: str  # "https" or "http"
    host: str  # lower case, without the brackets of an IPv6 literal
    port: int
    ip: IpAddress | None  # the host, when it is an address literal

    @property
    def is_localhost(self) -> bool:
        """``localhost`` and its subdomains are loopback without asking DNS (RFC 6761)."""
        return self.host == "localhost" or self.host.endswith(".localhost")


def is_public_ip(ip: str | IpAddress) -> bool:
    """False for loopback, private (RFC 1918, fc00::/7), link-local, multicast, unspecified,
    CGNAT (100.64.0.0/10), 0.0.0.0/8, reserved and documentation addresses, and for IPv6
    addresses that embed such an IPv4 address (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::``).
    An unparsable address is not public."""
    try:
        address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_ip(embedded)
        if address.scope_id or address.is_site_local:
            return False
    if isinstance(address, ipaddress.IPv4Address) and (address in _CGNAT
                                                       or address in _THIS_NETWORK):
        return False
    return not (address.is_loopback or address.is_private or address.is_link_local
                or address.is_multicast or address.is_unspecified or address.is_reserved
                ) and address.is_global


def parse_webhook_url(url: str, *, allow_http: bool = False) -> WebhookUrl:
    """The URL's parts, or :class:`InvalidWebhookUrl`: ``https`` (``http`` only when
    ``allow_http``), printable ASCII, at most :data:`MAX_URL_LENGTH` characters, no user name or
    password, a host name or address literal, a valid port."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"url is longer than {MAX_URL_LENGTH} characters")
    if not _PRINTABLE_ASCII.match(url):
        raise InvalidWebhookUrl("url must be printable ASCII without spaces (percent-encode "
                                "other characters, use the punycode form of a host name)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhookUrl(f"url is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and allow_http):
        raise InvalidWebhookUrl("url must be an https:// URL")
    if "@" in parts.netloc:
        raise InvalidWebhookUrl("url must not contain a user name or password")
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidWebhookUrl("url has no host")
    if port == 0:
        raise InvalidWebhookUrl("url has port 0")
    ip = _address_literal(host, parts.netloc)
    if ip is None:
        _check_host_name(host)
    return WebhookUrl(url=url, scheme=scheme, host=host, ip=ip,
                      port=port if port is not None else (443 if scheme == "https" else 80))


def _check_host_name(host: str) -> None:
    name = host.removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidWebhookUrl(f"url has an invalid host name: {host!r}")
    if labels[-1].isdigit() or all(_NUMERIC_LABEL.match(label) for label in labels):
        raise InvalidWebhookUrl(f"url has an invalid IPv4 address: {host!r}")
    if len(labels) < 2 and name != "localhost":
        raise InvalidWebhookUrl(f"url host must be a fully qualified domain name: {host!r}")


def _address_literal(host: str, netloc: str) -> IpAddress | None:
    if "[" in netloc:  # only an IPv6 literal is bracketed
        if "%" in host:
            raise InvalidWebhookUrl(f"url must not have an IPv6 zone: {host!r}")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidWebhookUrl(f"url has an invalid IPv6 address: {host!r}") from None
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        return None


def address_problem(host: str, addresses: list[str]) -> str | None:
    """Why a host resolving to ``addresses`` may not receive webhooks, or None."""
    if not addresses:
        return f"url host {host} has no address"
    for address in addresses:
        if not is_public_ip(address):
            return (f"url host {host} resolves to {address}, which is not a public address "
                    "(loopback, private, link-local, multicast, CGNAT and unspecified "
                    "addresses are refused)")
    return None
