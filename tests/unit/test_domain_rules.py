"""Pure domain rules: names, ids, DNS record templates, quota math, API keys, DKIM keys."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from etrans.adapters.crypto.dkim_keys import DkimKeyCipher, DkimKeyError, generate_dkim_key_pair
from etrans.domain.api_keys import expiry_from, generate_api_key, hash_api_key, is_expired
from etrans.domain.domains import (
    DkimRecord,
    DnsTemplate,
    dns_records,
    format_domain_id,
    normalize_domain_name,
    parse_dkim_tags,
    parse_domain_id,
    quota_view,
)
from etrans.domain.quota import (
    MktLimits,
    PackLimits,
    QuotaFacts,
    QuotaLimits,
    QuotaUsage,
    domain_quota,
)
from etrans.errors import InvalidInput


@pytest.mark.parametrize(("raw", "expected"), [
    ("Example.COM", "example.com"),
    ("mail.example.co.uk.", "mail.example.co.uk"),
    ("  a-b.example  ", "a-b.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
    # IDNA 2008: ß and ς are letters of their own (IDNA 2003 made straße.de strasse.de).
    ("straße.de", "xn--strae-oqa.de"), ("STRA\u1e9eE.de", "xn--strae-oqa.de"),
    ("βόλος.gr", "xn--nxasmm1c.gr"), ("ΟΔΟΣ.gr", "xn--pxavbq.gr"),
    ("xn--strae-oqa.de", "xn--strae-oqa.de"), ("\uff45xample.org", "example.org"),
])
def test_valid_domain_names(raw, expected):
    assert normalize_domain_name(raw) == expected


IDN_NAMES = ["straße.de", "STRA\u1e9eE.de", "faß.de", "σας.gr", "ΣΑΣ.gr", "βόλος.gr",
             "bücher.example", "BÜCHER.example", "münchen.de", "\uff45xample.org", "Ⅻ.example",
             "a\u0301.example", "ﬁ.example", "日本語.jp", "ドメイン名例.jp", "пример.рф",
             "مثال.إختبار", "例え.テスト", "xn--strae-oqa.de", "xn--mxa8ab.gr",
             "xn--a.example", "xn--zzzz.example", "ab\u200dc.com", "a\u200cb.com"]


@pytest.mark.parametrize("raw", IDN_NAMES)
def test_idns_are_converted_as_idna_2008_does(raw):
    """The reference: the idna package (UTS #46, non-transitional): same A-label, or both
    refuse (an A-label that is no valid encoding, joiners)."""
    import idna

    try:
        expected = idna.encode(raw, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError:
        with pytest.raises(InvalidInput):
            normalize_domain_name(raw)
    else:
        assert normalize_domain_name(raw) == expected


@pytest.mark.parametrize("raw", [
    "", "   ", "localhost", "-bad.example", "bad-.example", "a..b", "exa mple.com",
    "a_b.example", "example.123", "x" * 64 + ".com", ("a." * 127) + "com", "exa\r\nmple.com",
    "user@example.com", 42, None,
])
def test_invalid_domain_names(raw):
    with pytest.raises(InvalidInput):
        normalize_domain_name(raw)


def test_domain_ids_round_trip_and_reject_malformed():
    assert format_domain_id(123) == "dom_123"
    assert parse_domain_id("dom_123") == 123
    for bad in ("123", "dom_", "dom_0", "dom_01", "dom_-1", "dom_1x", "key_1", "dom_" + "9" * 30):
        with pytest.raises(InvalidInput):
            parse_domain_id(bad)


def test_dns_records_follow_the_spec_shape():
    template = DnsTemplate(spf_value="v=spf1 include:_spf.x ~all", mx_host="mx.x", mx_priority=5)
    records = dns_records(template, DkimRecord(selector="dkim", public_key_b64="AAAA"))
    assert records == [
        {"type": "TXT", "name": "@", "value": "v=spf1 include:_spf.x ~all", "purpose": "spf"},
        {"type": "MX", "name": "@", "value": "mx.x", "priority": 5, "purpose": "mx"},
        {"type": "TXT", "name": "dkim._domainkey", "value": "v=DKIM1; k=rsa; p=AAAA",
         "purpose": "dkim"},
    ]
    assert parse_dkim_tags("v=DKIM1; k=rsa; p=AAAA") == {"v": "DKIM1", "k": "rsa", "p": "AAAA"}


def test_quota_math_matches_the_spec_examples():
    pack = PackLimits("DEDICATED_100K", "Dedicated 100K", 100000)
    facts = QuotaFacts(mkt=None, subscription_pack="DEDICATED_100K", user_pack=None,
                       packs={"DEDICATED_100K": pack})
    assert domain_quota(facts).limits == QuotaLimits(100000, 4166, 3100000)
    assert domain_quota(QuotaFacts(MktLimits(daily=500), None, None, {})).limits.monthly == 15500
    view = quota_view(QuotaLimits(500, 50, 15500), QuotaUsage(daily=120, hourly=10, monthly=3600))
    assert view == {"daily_limit": 500, "daily_used": 120, "daily_remaining": 380,
                    "hourly_limit": 50, "hourly_used": 10, "hourly_remaining": 40,
                    "monthly_limit": 15500, "monthly_used": 3600, "monthly_remaining": 11900}
    assert quota_view(QuotaLimits(1, 0, 31), QuotaUsage(5, 5, 5))["daily_remaining"] == 0
    unlimited = quota_view(QuotaLimits(), QuotaUsage(5, 5, 5))
    assert (unlimited["daily_limit"], unlimited["daily_remaining"]) == (None, None)


def test_api_keys_are_random_prefixed_and_hashed():
    keys = {generate_api_key() for _ in range(200)}
    assert len(keys) == 200
    key = keys.pop()
    assert key.startswith("etrans_live_")
    assert len(key) >= 12 + 43
    digest = hash_api_key(key)
    assert len(digest) == 64
    assert digest == digest.lower()
    assert key not in digest


def test_api_key_expiry_choices():
    now = datetime(2026, 3, 10, tzinfo=UTC)
    assert expiry_from(now, None) is None
    assert expiry_from(now, 30) == now + timedelta(days=30)
    for bad in (0, 1, 31, 366, -7, "30", 30.0, True):
        with pytest.raises(InvalidInput):
            expiry_from(now, bad)
    assert is_expired(now, now)
    assert not is_expired(None, now)
    assert not is_expired(now + timedelta(seconds=1), now)


def test_dkim_key_pair_and_encryption_at_rest():
    pair = generate_dkim_key_pair()
    public = serialization.load_der_public_key(base64.b64decode(pair.record.public_key_b64))
    assert public.key_size == 2048
    assert "private" not in repr(pair).lower().replace("private_key_pem=b'**", "")
    cipher = DkimKeyCipher("k" * 32)
    stored = cipher.encrypt(pair.private_key_pem, domain="example.com")
    assert stored.startswith("v1:")
    assert b"PRIVATE" not in stored.encode()
    assert cipher.decrypt(stored, domain="example.com") == pair.private_key_pem
    with pytest.raises(DkimKeyError):
        cipher.decrypt(stored, domain="other.com")  # bound to its domain
    with pytest.raises(DkimKeyError):
        DkimKeyCipher("z" * 32).decrypt(stored, domain="example.com")
