"""Email addresses as the API accepts them: ``email@domain`` or ``Name <email@domain>``.

Pure rules, no I/O.  CR and LF are refused everywhere a value ends up in a message header
(header injection); the address syntax is a pragmatic subset of RFC 5322: a dot-atom local part
and a domain of LDH labels with a TLD of letters (or an IDN ``xn--`` label).
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
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AddressError(ValueError):
    """The text is not an acceptable address; the message says why."""


@dataclass(frozen=True)
class Address:
    email: str
    name: str | None = None

    @property
    def domain(self) -> str:
        return self.email.rsplit("@", 1)[1].lower()

    def formatted(self) -> str:
        if not self.name:
            return self.email
        return f"{self.name} <{self.email}>"


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


@lru_cache(maxsize=4096)
def parse_address(text: str) -> Address:
    """Parse ``email@domain`` or ``Name <email@domain>``; raise AddressError with the reason.

    Remembered for the last 4096 texts (a pure function returning a frozen value; errors are not
    remembered): one send parses the same sender up to three times (schema, rules, message).
    """
    if has_line_break(text):
        raise AddressError("address must not contain line breaks")
    value = text.strip()
    match = _NAMED.match(value)
    if match is None:
        return Address(email=validate_email(value))
    name = match.group("name").strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1]
    if _CONTROL.search(name) or '"' in name or "<" in name or ">" in name:
        raise AddressError("display name contains forbidden characters")
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise AddressError(f"display name longer than {MAX_DISPLAY_NAME_LENGTH} characters")
    return Address(email=validate_email(match.group("email").strip()), name=name or None)
