"""DNS verification against a real authoritative DNS server on loopback (tests.harness.dns)."""

from __future__ import annotations

import uuid

import pytest

from etrans.adapters.crypto.dkim_keys import generate_dkim_key_pair
from etrans.adapters.dns.verify import DnsVerifier, parse_nameservers

SPF = "v=spf1 include:_spf.etrans.test ~all"
MX = "mx1.etrans.test"


@pytest.fixture(scope="module")
def dkim():
    return generate_dkim_key_pair().record


def _domain() -> str:
    return f"d{uuid.uuid4().hex[:12]}.example"


def _verifier(dns_server, **kw) -> DnsVerifier:
    return DnsVerifier(spf_value=SPF, mx_host=MX, nameservers=[dns_server.address], **kw)


def _txt(value: str) -> str:
    # zone-file form; long values split into 255-byte strings as DNS requires
    parts = [value[i:i + 255] for i in range(0, len(value), 255)]
    return " ".join(f'"{p}"' for p in parts)


def _publish_all(dns_server, domain: str, dkim) -> None:
    dns_server.set_records(domain, "TXT", [_txt("v=spf1 a mx include:_spf.etrans.test -all"),
                                           _txt("google-site-verification=xyz")])
    dns_server.set_records(domain, "MX", [f"10 {MX}."])
    dns_server.set_records(f"dkim._domainkey.{domain}", "TXT", [_txt(dkim.txt_value)])


async def test_all_records_published_verify(dns_server, dkim):
    domain = _domain()
    _publish_all(dns_server, domain, dkim)
    result = await _verifier(dns_server).verify(domain, dkim)
    assert (result.spf.verified, result.mx.verified, result.dkim.verified) == (True, True, True)
    assert result.all_verified


async def test_nothing_published_reports_each_missing(dns_server, dkim):
    domain = _domain()
    result = await _verifier(dns_server).verify(domain, dkim)
    assert not result.spf.verified
    assert "does not exist" in result.spf.reason
    assert not result.mx.verified
    assert not result.dkim.verified
    assert not result.all_verified


async def test_wrong_values_are_not_verified(dns_server, dkim):
    domain = _domain()
    other_key = generate_dkim_key_pair().record
    dns_server.set_records(domain, "TXT", [_txt("v=spf1 include:_spf.google.com ~all")])
    dns_server.set_records(domain, "MX", [f"5 {MX}.attacker.example."])
    dns_server.set_records(f"dkim._domainkey.{domain}", "TXT", [_txt(other_key.txt_value)])
    result = await _verifier(dns_server).verify(domain, dkim)
    assert not result.spf.verified
    assert "lacks include:_spf.etrans.test" in result.spf.reason
    assert not result.mx.verified
    assert MX in result.mx.reason
    assert not result.dkim.verified


async def test_partial_publication_reports_per_record(dns_server, dkim):
    domain = _domain()
    dns_server.set_records(domain, "MX", [f"5 {MX.upper()}."])  # case-insensitive
    dns_server.set_records(f"dkim._domainkey.{domain}", "TXT", [_txt(dkim.txt_value)])
    result = await _verifier(dns_server).verify(domain, dkim)
    assert not result.spf.verified
    assert "no TXT record" in result.spf.reason
    assert result.mx.verified
    assert result.dkim.verified


async def test_records_published_later_are_seen_without_caching(dns_server, dkim):
    domain = _domain()
    verifier = _verifier(dns_server)
    assert not (await verifier.verify(domain, dkim)).all_verified
    _publish_all(dns_server, domain, dkim)
    assert (await verifier.verify(domain, dkim)).all_verified


async def test_large_answer_over_tcp_fallback(dns_server, dkim):
    # Many TXT records at the apex exceed a 512-byte UDP answer: the server truncates, the
    # resolver retries over TCP and still finds the SPF record.
    domain = _domain()
    fillers = [_txt(f"filler-{i}-" + "x" * 200) for i in range(8)]
    dns_server.set_records(domain, "TXT", [*fillers, _txt(SPF)])
    verifier = _verifier(dns_server)
    verifier._resolver.use_edns(-1)  # plain 512-byte UDP, so truncation happens
    result = await verifier.check_spf(domain)
    assert result.verified


async def test_unreachable_nameserver_is_not_verified_not_an_error(dkim):
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # bound but never answers
    try:
        verifier = DnsVerifier(spf_value=SPF, mx_host=MX,
                               nameservers=[f"127.0.0.1:{sock.getsockname()[1]}"],
                               timeout_seconds=0.3, lifetime_seconds=0.6)
        result = await verifier.check_mx(_domain())
    finally:
        sock.close()
    assert not result.verified
    assert "timed out" in result.reason or "no nameserver" in result.reason


def test_parse_nameservers_forms():
    servers = parse_nameservers(["10.0.0.53", "127.0.0.1:5353", "[::1]:5300"])
    assert [(s.address, s.port) for s in servers] == [
        ("10.0.0.53", 53), ("127.0.0.1", 5353), ("::1", 5300)]
