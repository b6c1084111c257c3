"""The one address parser (parse_address) and its canonical writer (format_address): what the
API validates is what the worker reads back from Kafka (pure: no services)."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etrans.domain.addresses import (
    MAX_DISPLAY_NAME_LENGTH,
    Address,
    AddressError,
    canonical_address,
    format_address,
    parse_address,
)

# Display names people type, and what a careless split would misread.
TRICKY = [
    "Smith, John", "Doe; Jane", "O'Brien", "Ann (work)", "[Support]", "{team}", "a@evil.test",
    "bob@example.org, eve@evil.test", "postmaster@[127.0.0.1]", "Nguyễn Văn Ánh", "日本語 名前",
    "Zoë \u200b Ünïcödé", "=?utf-8?q?evil?=", "a  b", " leading", "trailing ", "\\", "back\\slash",
    "x" * MAX_DISPLAY_NAME_LENGTH, "Team: ops", "dot.ted", "ex!clam#ation",
]


@pytest.mark.parametrize(("text", "canonical", "email", "name"), [
    ("a@example.com", "a@example.com", "a@example.com", None),
    ("  Ann <ann@example.org>  ", "Ann <ann@example.org>", "ann@example.org", "Ann"),
    ("Smith, John <john@example.org>", '"Smith, John" <john@example.org>', "john@example.org",
     "Smith, John"),
    # An address as display name: the address is the one in angle brackets, always.
    ("a@evil.test <bob@example.org>", '"a@evil.test" <bob@example.org>', "bob@example.org",
     "a@evil.test"),
    ('"Acme, Inc" <hello@example.com>', '"Acme, Inc" <hello@example.com>', "hello@example.com",
     "Acme, Inc"),
    ('"Say \\"hi\\"" <h@example.com>', '"Say \\"hi\\"" <h@example.com>', "h@example.com",
     'Say "hi"'),
    ("Back\\slash <b@example.com>", '"Back\\\\slash" <b@example.com>', "b@example.com",
     "Back\\slash"),
    ('"a\\\\b" <b@example.com>', '"a\\\\b" <b@example.com>', "b@example.com", "a\\b"),
    ("Trần Thị Bé <be@example.com>", '"Trần Thị Bé" <be@example.com>', "be@example.com",
     "Trần Thị Bé"),
    ('"" <e@example.com>', "e@example.com", "e@example.com", None),
    ("<x.y+tag@sub.example.co>", "x.y+tag@sub.example.co", "x.y+tag@sub.example.co", None),
])
def test_parse_and_canonical_form(text: str, canonical: str, email: str,
                                  name: str | None) -> None:
    address = parse_address(text)
    assert (address.email, address.name) == (email, name)
    assert canonical_address(text) == canonical
    assert parse_address(canonical) == address


@pytest.mark.parametrize("text", [
    "a@example.com\r\nRCPT TO:<extra@evil.test>", "Name <a@example.com>\r\nBcc: v@evil.test",
    "Na\x00me <a@example.com>", "a\x00@example.com", "Na\x85me <a@example.com>",
    "Na\ud800me <a@example.com>", "Na\tme <a@example.com>",
    '"unbalanced <a@example.com>', '"a" b" <a@example.com>', '"a" "b" <a@example.com>',
    'Bad"Name <a@example.com>', '"<b@evil.test>" <a@example.com>', "<b@evil.test> <a@example.com>",
    "a@[127.0.0.1]", "Name <a@[127.0.0.1]>", "a@example.com, b@example.com",
    "x" * (MAX_DISPLAY_NAME_LENGTH + 1) + " <a@example.com>",
])
def test_refused(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


def test_tricky_names_round_trip_and_standard_readers_agree() -> None:
    for name in TRICKY:
        address = Address("rcpt@example.org", name.strip() or None)
        text = format_address(address)
        assert parse_address(text) == address, text
        # The standard library's RFC 5322 reader sees the same address in the canonical text.
        assert email.utils.parseaddr(text)[1] == "rcpt@example.org", text


_NAME_CHARS = st.one_of(
    st.sampled_from(list(',;:"\\()[]{}@.!#=?\' ')),
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="<>\u2028\u2029"),
)
names = st.text(_NAME_CHARS, min_size=1, max_size=60)


def quoted(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@given(names)
@settings(max_examples=400, deadline=None)
def test_every_valid_name_round_trips(name: str) -> None:
    """parse_address(format_address(a)) == a for every address the parser can return."""
    try:
        address = parse_address(f"{quoted(name)} <rcpt@example.org>")
    except AddressError:
        return  # e.g. a name of line separators: refused, nothing to round-trip
    assert address.email == "rcpt@example.org"
    assert parse_address(format_address(address)) == address
    assert email.utils.parseaddr(format_address(address))[1] == "rcpt@example.org"


@given(names)
@settings(max_examples=400, deadline=None)
def test_unquoted_input_is_read_as_the_api_validated_it(name: str) -> None:
    """Whatever bare ``name <addr>`` the API accepts, the canonical text reads the same."""
    try:
        address = parse_address(f"{name} <rcpt@example.org>")
    except AddressError:
        return
    assert address.email == "rcpt@example.org"
    assert parse_address(format_address(address)) == address
