"""Email addresses: the one parser (:func:`parse_address`) and its canonical writer
(:func:`format_address`), used by the API *and* the sendmail worker.

Pure rules, no I/O.  The API accepts ``email@domain``, ``Name <email@domain>`` and
``"Quoted, Name" <email@domain>`` (RFC 5322 quoted-string, ``\\"`` and ``\\\\`` escapes) and puts
:func:`format_address` of what it validated into the Kafka send request; the worker reads that
with the same :func:`parse_address`, so the recipients of RCPT TO are exactly the addresses the
API validated (``parse_address(format_address(a)) == a`` for every address it returns).

CR, LF and other control characters are refused everywhere (header and SMTP command injection);
the address syntax is a pragmatic subset of RFC 5322: a dot-atom local part and a domain of LDH
labels with a TLD of letters (or an IDN ``xn--`` label).  A display name may hold any printable
character except ``<`` and ``>``; unquoted, it may not hold ``"`` either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

MAX_ADDRESS_LENGTH = 254
MAX_LOCAL_LENGTH = 64
MAX_DISPLAY_NAME_LENGTH = 200

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TLD = re.compile(r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})")
_NAMED = re.compile(r"^(?P<name>.*?)\s*<(?P<email>[^<>]*)>$", re.DOTALL)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# C0 and C1 controls, DEL, and lone surrogates (not text: they cannot be encoded as UTF-8).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# A display name written without quotes: atoms separated by single spaces.
_ATOM_PHRASE = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*")


class AddressError(ValueError):
    """The text is not an acceptable address; the message says why."""


@dataclass(frozen=True)
class Address:
    email: str
    name: str | None = None

    @property
    def domain(self) -> str:
        return self.email.rsplit("@", 1)[1].lower()


def has_line_break(value: str) -> bool:
    """True when ``value`` contains CR or LF (or other line separators a mailer may honour)."""
    return any(ch in value for ch in "\r\n\u2028\u2029\x0b\x0c\x85")


def is_valid_domain(domain: str) -> bool:
    if not domain or len(domain) > 253:
        return False
    labels = domain.split(".")
    if len(labels) < 2:
        return False
    if not all(_LABEL.fullmatch(label) for label in labels):
        return False
    return _TLD.fullmatch(labels[-1]) is not None


def validate_email(email: str) -> str:
    """Return ``email`` when it is a plain ``local@domain`` address, else raise AddressError."""
    if has_line_break(email):
        raise AddressError("address must not contain line breaks")
    if _CONTROL.search(email):
        raise AddressError("address must not contain control characters")
    if len(email) > MAX_ADDRESS_LENGTH:
        raise AddressError(f"address longer than {MAX_ADDRESS_LENGTH} characters")
    local, sep, domain = email.rpartition("@")
    if not sep or not local or not domain:
        raise AddressError(f"invalid email address {email!r}")
    if len(local) > MAX_LOCAL_LENGTH or not _LOCAL.fullmatch(local):
        raise AddressError(f"invalid email address {email!r}")
    if not is_valid_domain(domain):
        raise AddressError(f"invalid email address {email!r}: bad domain")
    return email


def validate_display_name(name: str) -> str:
    """Return ``name`` when it may be a display name (already unquoted), else raise."""
    if has_line_break(name):
        raise AddressError("display name must not contain line breaks")
    if _CONTROL.search(name) or "<" in name or ">" in name:
        raise AddressError("display name contains forbidden characters")
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise AddressError(f"display name longer than {MAX_DISPLAY_NAME_LENGTH} characters")
    return name


def _display_name(text: str) -> str:
    """The display name that ``text`` (the part before ``<``, stripped) spells."""
    if text.startswith('"'):
        quoted = _QUOTED.fullmatch(text)
        if quoted is None:
            raise AddressError("display name contains forbidden characters (unbalanced quotes: "
                               'quote the whole name, escaping \\ and " inside)')
        return validate_display_name(_QUOTED_PAIR.sub(r"\1", quoted.group(1)))
    if '"' in text:
        raise AddressError("display name contains forbidden characters")
    return validate_display_name(text)


@lru_cache(maxsize=4096)
def parse_address(text: str) -> Address:
    """Parse ``email@domain``, ``Name <email@domain>`` or ``"Name" <email@domain>``; raise
    AddressError with the reason.

    Remembered for the last 4096 texts (a pure function returning a frozen value; errors are not
    remembered): one send parses the same sender up to three times (schema, rules, message),
    and the worker reads the same few senders and recipients over and over.
    """
    if has_line_break(text):
        raise AddressError("address must not contain line breaks")
    value = text.strip()
    match = _NAMED.match(value)
    if match is None:
        return Address(email=validate_email(value))
    name = _display_name(match.group("name").strip())
    return Address(email=validate_email(match.group("email").strip()), name=name or None)


def format_address(address: Address) -> str:
    """The canonical text of ``address``: what the API puts into Kafka.

    ``email`` alone; ``Name <email>`` when the name is plain atoms separated by single spaces;
    else the name as a quoted-string (``\\`` and ``"`` escaped).  :func:`parse_address` gives the
    same address back.
    """
    name = address.name
    if not name:
        return address.email
    if _ATOM_PHRASE.fullmatch(name):
        return f"{name} <{address.email}>"
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{address.email}>'


def canonical_address(text: str) -> str:
    """``format_address(parse_address(text))``: the validated address in its canonical text."""
    return format_address(parse_address(text))
