"""DNS verification of a sending domain: SPF, MX and DKIM lookups with dnspython on Trio.

dnspython's ``dns.asyncresolver`` runs natively on Trio (its async backend is picked by sniffio),
so lookups need no worker thread.  Nameservers come from DNS_NAMESERVERS (``ip`` or ``ip:port``,
comma-separated: tests point it at a loopback server, split-horizon setups at an internal one);
when unset, the system's ``/etc/resolv.conf`` is used.

What counts as published (each check is independent):

- SPF: a TXT record at the domain starting with ``v=spf1`` that contains every ``include:`` term
  of DEFAULT_SPF_VALUE (or, when that value has no include, equals it up to whitespace/case).
- MX: an MX record at the domain whose exchange is DEFAULT_MX_HOST (case and trailing dot
  ignored).  The priority we publish is a recommendation: any priority is accepted, because the
  exchange is what makes mail to the domain reach us.
- DKIM: a TXT record at ``<selector>._domainkey.<domain>`` (its strings joined) whose ``p=`` tag
  equals the domain's public key (base64, whitespace ignored).

A name that does not exist, has no such record, or does not answer in time (lifetime) is "not
verified"; the reason is returned for logs and the API's per-record detail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from etrans.domain.domains import (
    DkimRecord,
    DnsVerification,
    RecordCheck,
    expected_spf_includes,
    parse_dkim_tags,
)
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

log = get_logger(__name__)


def parse_nameservers(entries: Sequence[str]) -> list[dns.nameserver.Nameserver]:
    """``["10.0.0.53", "127.0.0.1:5353", "[::1]:53"]`` -> dnspython Do53 nameservers."""
    servers: list[dns.nameserver.Nameserver] = []
    for entry in entries:
        host, port = entry.strip(), 53
        if host.startswith("["):  # [v6]:port
            inside, _, rest = host[1:].partition("]")
            host = inside
            if rest.startswith(":"):
                port = int(rest[1:])
        elif host.count(":") == 1:
            host, _, port_text = host.partition(":")
            port = int(port_text)
        servers.append(dns.nameserver.Do53Nameserver(host, port))
    return servers


class DnsVerifier:
    """Looks up a domain's SPF, MX and DKIM records and compares them with what we expect."""

    def __init__(
        self,
        *,
        spf_value: str,
        mx_host: str,
        nameservers: Sequence[str] = (),
        timeout_seconds: float = 3.0,
        lifetime_seconds: float = 6.0,
    ) -> None:
        self._spf_value = spf_value
        self._spf_includes = expected_spf_includes(spf_value)
        self._mx_host = mx_host.rstrip(".").lower()
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = parse_nameservers(nameservers)
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.timeout = timeout_seconds
        resolver.lifetime = lifetime_seconds
        # Answers of other zones' caches would hide a record the user just published.
        resolver.cache = None
        self._resolver = resolver

    async def _lookup(self, name: str, rdtype: str) -> tuple[list[object], str]:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return [], f"{name} does not exist"
        except dns.resolver.NoAnswer:
            return [], f"no {rdtype} record at {name}"
        except dns.resolver.NoNameservers:
            return [], f"no nameserver answered for {name} {rdtype}"
        except dns.exception.Timeout:
            return [], f"DNS lookup of {name} {rdtype} timed out"
        except dns.exception.DNSException as exc:
            return [], f"DNS lookup of {name} {rdtype} failed: {type(exc).__name__}"
        return list(answer), ""

    @staticmethod
    def _txt_strings(records: list[object]) -> list[str]:
        texts = []
        for rdata in records:
            parts = getattr(rdata, "strings", ())
            texts.append(b"".join(parts).decode("utf-8", errors="replace"))
        return texts

    async def check_spf(self, domain: str) -> RecordCheck:
        records, reason = await self._lookup(domain, "TXT")
        if reason:
            return RecordCheck(False, reason)
        spf = [t for t in self._txt_strings(records) if t.lower().startswith("v=spf1")]
        if not spf:
            return RecordCheck(False, f"no v=spf1 TXT record at {domain}")
        for text in spf:
            terms = {term.lower() for term in text.split()}
            if self._spf_includes:
                if all(inc in terms for inc in self._spf_includes):
                    return RecordCheck(True)
            elif " ".join(text.lower().split()) == " ".join(self._spf_value.lower().split()):
                return RecordCheck(True)
        wanted = " ".join(self._spf_includes) or self._spf_value
        return RecordCheck(False, f"SPF record of {domain} lacks {wanted}")

    async def check_mx(self, domain: str) -> RecordCheck:
        records, reason = await self._lookup(domain, "MX")
        if reason:
            return RecordCheck(False, reason)
        for rdata in records:
            exchange = str(getattr(rdata, "exchange", "")).rstrip(".").lower()
            if exchange == self._mx_host:
                return RecordCheck(True)
        return RecordCheck(False, f"no MX record of {domain} points to {self._mx_host}")

    async def check_dkim(self, domain: str, dkim: DkimRecord) -> RecordCheck:
        name = f"{dkim.selector}._domainkey.{domain}"
        records, reason = await self._lookup(name, "TXT")
        if reason:
            return RecordCheck(False, reason)
        for text in self._txt_strings(records):
            tags = parse_dkim_tags(text)
            if "".join(tags.get("p", "").split()) == dkim.public_key_b64:
                return RecordCheck(True)
        return RecordCheck(False, f"DKIM record at {name} does not carry the domain's key")

    async def verify(self, domain: str, dkim: DkimRecord) -> DnsVerification:
        # Three small lookups in sequence: simpler than a nursery, and each has its own lifetime.
        result = DnsVerification(
            spf=await self.check_spf(domain),
            mx=await self.check_mx(domain),
            dkim=await self.check_dkim(domain, dkim),
        )
        log.info("dns verification", domain=domain, spf=result.spf.verified,
                 mx=result.mx.verified, dkim=result.dkim.verified)
        return result
