"""A host name's addresses (A and AAAA, dnspython on Trio): port
:class:`etrans.app.webhook_ports.HostResolver`, which the webhook URL rule checks.

Nameservers come from DNS_NAMESERVERS as for the domain verification
(:mod:`etrans.adapters.dns.verify`), else ``/etc/resolv.conf``.  The two queries run one after
the other within one lifetime; a name with neither record, that does not exist, or that DNS does
not answer for in time is :class:`~etrans.domain.webhook_urls.UnresolvableHost`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dns.asyncresolver
import dns.exception
import dns.resolver

from etrans.adapters.dns.verify import parse_nameservers
from etrans.domain.webhook_urls import UnresolvableHost

if TYPE_CHECKING:
    from collections.abc import Sequence


class DnsHostResolver:
    def __init__(self, *, nameservers: Sequence[str] = (), timeout_seconds: float = 2.0,
                 lifetime_seconds: float = 4.0) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = parse_nameservers(nameservers)
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.timeout = timeout_seconds
        resolver.lifetime = lifetime_seconds
        self._resolver = resolver

    async def addresses(self, host: str) -> list[str]:
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(host, rdtype, search=False)
            except dns.resolver.NXDOMAIN:
                raise UnresolvableHost(f"url host {host} does not exist") from None
            except dns.resolver.NoAnswer:
                continue
            except dns.exception.Timeout:
                raise UnresolvableHost(f"url host {host}: DNS lookup timed out") from None
            except dns.exception.DNSException as exc:
                raise UnresolvableHost(
                    f"url host {host}: DNS lookup failed ({type(exc).__name__})") from None
            found.extend(str(getattr(rdata, "address", rdata)) for rdata in answer)
        if not found:
            raise UnresolvableHost(f"url host {host} does not resolve to any address")
        return found
