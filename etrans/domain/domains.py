"""Pure rules of sending domains: names, public ids, DNS record templates, quota views.

Quota windows and counting are :mod:`etrans.domain.quota`; this module presents them.

Nothing here does I/O.  Ids travel in the API as ``dom_<n>`` (domains), ``key_<n>`` (API keys) and
``sender_<n>`` (senders) where ``<n>`` is the integer primary key of the row.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from encodings.idna import nameprep

from etrans.domain.quota import QuotaLimits, QuotaUsage, remaining
from etrans.errors import InvalidInput

# RFC 1035/1123 host names: labels of letters, digits and inner hyphens, 1..63 characters each,
# 253 characters in all; at least two labels; the last (TLD) not all digits.  IDNs are accepted
# as U-labels and stored as A-labels (xn--...), by IDNA 2008 (UTS #46, non-transitional), as
# registries, browsers and mail systems read them; see _a_label.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
DOMAIN_MAX_LENGTH = 253
# The letters IDNA 2003 (Python's "idna" codec) maps away but IDNA 2008 keeps: straße.de is
# xn--strae-oqa.de, a name of its own, not strasse.de; the capital sharp s is the small one.
_DEVIATIONS = re.compile("([\u00df\u03c2\u1e9e])")
_JOINERS = ("\u200c", "\u200d")


def _a_label(label: str) -> str:
    """``label`` (as typed, any case) in its A-label form; UnicodeError when IDNA has none.

    Python's codec (nameprep, IDNA 2003) maps ß to "ss" and the final sigma to the plain one,
    and drops the joiners U+200C/U+200D: "straße.de" became another registrable domain,
    "strasse.de".  Here ß and the final sigma stay (the capital sharp s becomes ß), nameprep
    maps the rest (case, compatibility forms), and a label with a joiner is refused rather than
    changed."""
    if any(joiner in label for joiner in _JOINERS):
        raise UnicodeError("joiners (U+200C, U+200D) are not supported")
    pieces = _DEVIATIONS.split(label)
    mapped = "".join(
        "\u00df" if piece == "\u1e9e" else piece if _DEVIATIONS.fullmatch(piece) else
        nameprep(piece) for piece in pieces if piece)
    mapped = unicodedata.normalize("NFC", mapped)
    if mapped.isascii():
        return mapped.lower()
    return "xn--" + mapped.encode("punycode").decode("ascii")


def _checked_a_label(label: str) -> str:
    """An ``xn--`` label as given when it is the A-label of its U-label, else UnicodeError
    (``xn--a`` decodes to U+0080, ``xn--zzzz`` to nothing: no registry holds such names)."""
    decoded = label[4:].encode("ascii").decode("punycode")
    if decoded.isascii() or _a_label(decoded) != label:
        raise UnicodeError(f"{label} is not a valid A-label")
    return label


def normalize_domain_name(raw: object) -> str:
    """Validated, lower-case, A-label domain name; InvalidInput with a clear message otherwise."""
    if not isinstance(raw, str):
        raise InvalidInput("domain must be a string")
    name = raw.strip().rstrip(".")
    if not name:
        raise InvalidInput("domain must not be empty")
    try:
        labels = [_a_label(label) if not label.isascii() else
                  _checked_a_label(label.lower()) if label.lower().startswith("xn--") else
                  label.lower() for label in name.split(".")]
    except UnicodeError:
        raise InvalidInput(f"invalid domain name: {raw!r}") from None
    name = ".".join(labels)
    if (
        len(name) > DOMAIN_MAX_LENGTH
        or len(labels) < 2
        or not all(_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise InvalidInput(f"invalid domain name: {raw!r}")
    return name


def domain_limit_message(limit: int, pack_code: str | None = None) -> str:
    """The 400 of POST /domains when the user's pack allows no more domains."""
    pack = f"your pack ({pack_code})" if pack_code else "your pack"
    return f"Domain limit reached: {pack} allows {limit} domain{'s' if limit != 1 else ''}"


def _format_id(prefix: str, number: int) -> str:
    return f"{prefix}_{number}"


def _parse_id(prefix: str, raw: str, what: str) -> int:
    match = re.fullmatch(rf"{prefix}_([1-9][0-9]{{0,17}})", raw)
    if match is None:
        raise InvalidInput(f"invalid {what} id {raw!r}: expected {prefix}_<number>")
    return int(match.group(1))


def format_domain_id(number: int) -> str:
    return _format_id("dom", number)


def parse_domain_id(raw: str) -> int:
    return _parse_id("dom", raw, "domain")


def format_key_id(number: int) -> str:
    return _format_id("key", number)


def parse_key_id(raw: str) -> int:
    return _parse_id("key", raw, "API key")


def format_sender_id(number: int) -> str:
    return _format_id("sender", number)


# -- DNS records ---------------------------------------------------------------------------

DKIM_SELECTOR = "dkim"


@dataclass(frozen=True)
class DkimRecord:
    """The DKIM public half: ``<selector>._domainkey`` TXT ``v=DKIM1; k=rsa; p=...``."""

    selector: str
    public_key_b64: str  # base64 of the DER SubjectPublicKeyInfo, no whitespace

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey"

    @property
    def txt_value(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_key_b64}"


@dataclass(frozen=True)
class DkimKeyPair:
    """A new domain's DKIM key (made by :mod:`etrans.adapters.crypto.dkim_keys`)."""

    record: DkimRecord
    private_key_pem: bytes  # in memory only; stored encrypted by the billing gateway

    def __repr__(self) -> str:
        return f"DkimKeyPair(record={self.record!r}, private_key_pem=b'**********')"


@dataclass(frozen=True)
class RecordCheck:
    """One published record looked up: ``reason`` says why it does not count when it does not."""

    verified: bool
    reason: str = ""


@dataclass(frozen=True)
class DnsVerification:
    """The lookups of POST /domains/{id}/verify (:mod:`etrans.adapters.dns.verify`)."""

    spf: RecordCheck
    mx: RecordCheck
    dkim: RecordCheck

    @property
    def all_verified(self) -> bool:
        return self.spf.verified and self.mx.verified and self.dkim.verified


def parse_dkim_tags(text: str) -> dict[str, str]:
    """``"v=DKIM1; k=rsa; p=MIIB..."`` -> ``{"v": "DKIM1", "k": "rsa", "p": "MIIB..."}``."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = value.strip()
    return tags


def expected_spf_includes(spf_value: str) -> tuple[str, ...]:
    """The ``include:`` terms of our SPF value, lower-cased: what a published record must hold."""
    return tuple(term.lower() for term in spf_value.split() if term.lower().startswith("include:"))


@dataclass(frozen=True)
class DnsTemplate:
    """Operator settings that shape the records a customer publishes."""

    spf_value: str
    mx_host: str
    mx_priority: int


def dns_records(template: DnsTemplate, dkim: DkimRecord | None) -> list[dict[str, object]]:
    """The records of the API's ``dns_records`` list, in the spec's order: SPF, MX, DKIM."""
    records: list[dict[str, object]] = [
        {"type": "TXT", "name": "@", "value": template.spf_value, "purpose": "spf"},
        {"type": "MX", "name": "@", "value": template.mx_host, "priority": template.mx_priority,
         "purpose": "mx"},
    ]
    if dkim is not None:
        records.append({"type": "TXT", "name": dkim.name, "value": dkim.txt_value,
                        "purpose": "dkim"})
    return records


# -- quotas --------------------------------------------------------------------------------


def quota_view(limits: QuotaLimits, used: QuotaUsage) -> dict[str, int | None]:
    """The nine ``*_limit/_used/_remaining`` fields of the quota responses (None = unlimited)."""
    view: dict[str, int | None] = {}
    for period in ("daily", "hourly", "monthly"):
        limit = getattr(limits, period)
        spent = getattr(used, period)
        view[f"{period}_limit"] = limit
        view[f"{period}_used"] = spent
        view[f"{period}_remaining"] = remaining(limit, spent)
    return view
