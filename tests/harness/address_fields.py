"""An independent reader of the address fields etrans writes, for the tests.

Python's modern header parser (``email.policy.default``) reads addr-specs well but is no oracle
for display names: it puts a space between adjacent RFC 2047 encoded words (RFC 2047 6.2 says the
whitespace between them is ignored) and collapses runs of spaces inside them.  This reader uses
the standard library's RFC 5322 address-list parser (``email.utils.getaddresses``) for the
structure and ``email.header.decode_header`` (which follows RFC 2047 6.2) for the names.
"""

from __future__ import annotations

import email.header
import email.utils
import re

_FOLD = re.compile(r"\r?\n(?=[ \t])")


def field_value(head: bytes, name: str) -> str | None:
    """The unfolded value of field ``name`` in the raw header block ``head`` (first one)."""
    text = _FOLD.sub("", head.decode("ascii"))
    for line in text.split("\r\n"):
        field, sep, value = line.partition(":")
        if sep and field.lower() == name.lower():
            return value.strip()
    return None


def _decoded(phrase: str) -> str:
    return str(email.header.make_header(email.header.decode_header(phrase)))


def read_addresses(value: str) -> list[tuple[str, str]]:
    """``[(display name, addr-spec)]`` of an unfolded address-list field value."""
    return [(_decoded(name) if "=?" in name else name, address)
            for name, address in email.utils.getaddresses([value])]


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]
