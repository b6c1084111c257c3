"""The one-click unsubscribe rule (``etrans.domain.unsubscribe``): which ``List-Unsubscribe`` and
``List-Unsubscribe-Post`` headers the API and the sendmail worker accept, and how they are
written into the message (pure: no services)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etrans.domain.emails import EmailRuleError, check_email
from etrans.domain.unsubscribe import (
    MAX_URI_LENGTH,
    ONE_CLICK,
    UnsubscribeError,
    header_field,
    parse_list_unsubscribe,
    unsubscribe_problem,
)

HTTPS = "<https://example.com/unsubscribe/abc123>"
MAILTO = "<mailto:unsubscribe@example.com?subject=unsubscribe>"

ACCEPTED = {
    "https": (HTTPS, ("https://example.com/unsubscribe/abc123",)),
    "mailto": ("<mailto:unsub@example.com>", ("mailto:unsub@example.com",)),
    "mailto with subject": (MAILTO, ("mailto:unsubscribe@example.com?subject=unsubscribe",)),
    "percent-encoded subject": ("<mailto:u@example.com?subject=Stop%20it%21>",
                                ("mailto:u@example.com?subject=Stop%20it%21",)),
    "both": (f"{HTTPS}, {MAILTO}", ("https://example.com/unsubscribe/abc123",
                                     "mailto:unsubscribe@example.com?subject=unsubscribe")),
    "no space after the comma": (f"{MAILTO},{HTTPS}", (
        "mailto:unsubscribe@example.com?subject=unsubscribe",
        "https://example.com/unsubscribe/abc123")),
    "spaces around": (f"  {HTTPS} ,\t{MAILTO} ", (
        "https://example.com/unsubscribe/abc123",
        "mailto:unsubscribe@example.com?subject=unsubscribe")),
    "upper-case scheme": ("<HTTPS://Example.COM/u>", ("HTTPS://Example.COM/u",)),
    "port, query and fragment": ("<https://mail.example.co.uk:8443/u?id=1,2&t=a%2Fb#x>",
                                 ("https://mail.example.co.uk:8443/u?id=1,2&t=a%2Fb#x",)),
    "IDN host": ("<https://xn--bcher-kva.example/u>", ("https://xn--bcher-kva.example/u",)),
}


@pytest.mark.parametrize(("value", "uris"), list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_accepted_values(value: str, uris: tuple[str, ...]) -> None:
    assert parse_list_unsubscribe(value) == uris
    assert unsubscribe_problem([("List-Unsubscribe", value)]) is None


REFUSED = {
    "plain http": "<http://example.com/u>",
    "http beside https": f"{HTTPS}, <http://example.com/u>",
    "javascript": "<javascript:alert(1)>",
    "data": "<data:text/html,hi>",
    "ftp": "<ftp://example.com/u>",
    "relative path": "</unsubscribe/abc>",
    "scheme-relative": "<//example.com/u>",
    "no scheme": "<example.com/u>",
    "https without //": "<https:example.com/u>",
    "https without host": "<https:///u>",
    "https host without a dot": "<https://localhost/u>",
    "https IP host": "<https://127.0.0.1/u>",
    "https IPv6 host": "<https://[::1]/u>",
    "user info": "<https://google.com@evil.example/u>",
    "bad port": "<https://example.com:99999/u>",
    "port not a number": "<https://example.com:x/u>",
    "no angle brackets": "https://example.com/u",
    "empty": "",
    "only spaces": "   ",
    "empty brackets": "<>",
    "trailing comma": f"{HTTPS},",
    "no comma between": f"{HTTPS} {MAILTO}",
    "comment after": f"{HTTPS} (unsubscribe)",
    "space inside": "<https://example.com/un subscribe>",
    "quote inside": '<https://example.com/"x">',
    "backslash": "<https://example.com\\@evil.example/u>",
    "non-ASCII": "<https://example.com/désabonner>",
    "bad percent": "<https://example.com/%zz>",
    "nested bracket": "<<https://example.com/u>>",
    "mailto without address": "<mailto:>",
    "mailto two addresses": "<mailto:a@example.com,b@example.com>",
    "mailto display name": "<mailto:Unsub <u@example.com>>",
    "mailto bad domain": "<mailto:u@example>",
    "mailto local needing encoding": "<mailto:a%b@example.com>",
    "mailto body": "<mailto:u@example.com?body=stop>",
    "mailto two fields": "<mailto:u@example.com?subject=a&body=b>",
    "mailto subject with a space": "<mailto:u@example.com?subject=stop it>",
    "URI too long": f"<https://example.com/{'a' * MAX_URI_LENGTH}>",
    "value too long": ", ".join([HTTPS] * 30),
}


@pytest.mark.parametrize("value", list(REFUSED.values()), ids=list(REFUSED))
def test_refused_values_name_the_header(value: str) -> None:
    with pytest.raises(UnsubscribeError):
        parse_list_unsubscribe(value)
    problem = unsubscribe_problem([("List-Unsubscribe", value)])
    assert problem is not None
    assert problem.startswith("List-Unsubscribe header: "), problem
    assert header_field("List-Unsubscribe", value) is None  # never written


def test_the_reason_says_what_to_do() -> None:
    assert "use https" in (unsubscribe_problem([("List-Unsubscribe", "<http://x.example/u>")])
                           or "")
    javascript = unsubscribe_problem([("list-unsubscribe", "<javascript:alert(1)>")]) or ""
    assert "'javascript' is not allowed" in javascript


@pytest.mark.parametrize(("headers", "ok"), [
    ([("List-Unsubscribe", HTTPS), ("List-Unsubscribe-Post", ONE_CLICK)], True),
    ([("list-unsubscribe", f"{MAILTO}, {HTTPS}"), ("LIST-UNSUBSCRIBE-POST", ONE_CLICK)], True),
    ([("List-Unsubscribe-Post", ONE_CLICK), ("List-Unsubscribe", HTTPS)], True),
    ([("List-Unsubscribe", HTTPS), ("List-Unsubscribe-Post", f" {ONE_CLICK} ")], True),
    ([("List-Unsubscribe-Post", ONE_CLICK)], False),  # nothing to POST to
    ([("List-Unsubscribe", MAILTO), ("List-Unsubscribe-Post", ONE_CLICK)], False),
    ([("List-Unsubscribe", HTTPS), ("List-Unsubscribe-Post", "List-Unsubscribe=one-click")],
     False),
    ([("List-Unsubscribe", HTTPS), ("List-Unsubscribe-Post", "One-Click")], False),
    ([("List-Unsubscribe", HTTPS), ("List-Unsubscribe-Post", "")], False),
    ([("List-Unsubscribe", HTTPS), ("list-unsubscribe", MAILTO)], False),  # twice
    ([("X-Campaign", "<http://anything>"), ("List-Id", "<news.example.com>")], True),
    ([], True),
])
def test_one_click_post_needs_exact_value_and_an_https_uri(
        headers: list[tuple[str, str]], ok: bool) -> None:
    problem = unsubscribe_problem(headers)
    if ok:
        assert problem is None
    else:
        assert problem is not None
        assert "List-Unsubscribe" in problem


def test_check_email_applies_the_rule() -> None:
    email = {"from": "a@example.com", "to": ["b@example.org"], "subject": "s", "text": "t"}
    check_email({**email, "headers": {"List-Unsubscribe": HTTPS,
                                      "List-Unsubscribe-Post": ONE_CLICK}})
    with pytest.raises(EmailRuleError, match=r"^List-Unsubscribe header: .*plain http"):
        check_email({**email, "headers": {"List-Unsubscribe": "<http://example.com/u>"}})
    with pytest.raises(EmailRuleError, match=r"^List-Unsubscribe-Post header"):
        check_email({**email, "headers": {"List-Unsubscribe-Post": ONE_CLICK}})


# -- writing: canonical names, folded between URIs, never encoded -------------------------------

def test_short_value_stays_on_one_line_with_the_canonical_name() -> None:
    assert header_field("list-unsubscribe", f"  {HTTPS}  ") == ("List-Unsubscribe", HTTPS)
    assert header_field("list-unsubscribe-post", f" {ONE_CLICK}") == (
        "List-Unsubscribe-Post", ONE_CLICK)
    assert header_field("List-Unsubscribe-Post", "yes") is None


def test_long_value_is_folded_between_uris() -> None:
    long_https = f"<https://example.com/unsubscribe/{'a' * 120}?u=1&t=2>"
    name, value = header_field("List-Unsubscribe", f"{long_https},{MAILTO}") or ("", "")
    assert name == "List-Unsubscribe"
    assert value == f"{long_https},\r\n {MAILTO}"
    assert "=?" not in value


_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_HOST = st.builds(lambda labels, tld: ".".join([*labels, tld]),
                  st.lists(_LABEL, min_size=1, max_size=3), st.from_regex(r"[a-z]{2,6}",
                                                                          fullmatch=True))
_PATH = st.text(st.sampled_from("abcXYZ019-._~!$&'()*+,;=:@/%"), max_size=150).map(
    lambda text: text.replace("%", "%2F"))
_HTTPS_URI = st.builds(lambda scheme, host, path: f"{scheme}://{host}/{path}",
                       st.sampled_from(["https", "HTTPS", "Https"]), _HOST, _PATH)
_MAILTO_URI = st.builds(lambda local, host, subject: f"mailto:{local}@{host}{subject}",
                        st.from_regex(r"[a-z0-9]{1,20}(?:[._+-][a-z0-9]{1,10}){0,2}",
                                      fullmatch=True), _HOST,
                        st.sampled_from(["", "?subject=unsubscribe", "?Subject=Stop%20now"]))
_URIS = st.lists(st.one_of(_HTTPS_URI, _MAILTO_URI), min_size=1, max_size=4)
_SEPARATORS = st.sampled_from([",", ", ", " , ", ",\t"])


@given(_URIS, _SEPARATORS)
@settings(max_examples=300, deadline=None)
def test_valid_uris_are_accepted_and_written_unchanged(uris: list[str], separator: str) -> None:
    value = separator.join(f"<{uri}>" for uri in uris)
    assert parse_list_unsubscribe(value) == tuple(uris)
    field = header_field("List-Unsubscribe", value)
    assert field is not None
    lines = f"{field[0]}: {field[1]}".split("\r\n")
    # RFC 5322 folding: each line after the first starts with whitespace; unfolding gives the
    # URIs back unchanged; a line passes 78 columns only when one URI alone makes it.
    assert all(line.startswith(" ") for line in lines[1:])
    assert parse_list_unsubscribe(field[1].replace("\r\n", "")) == tuple(uris)
    for line in lines:
        assert len(line) <= 78 or line.count("<") == 1, line
        assert len(line) <= 998
    assert "=?" not in field[1] or any("=?" in uri for uri in uris)


@given(st.text(max_size=200))
@settings(max_examples=500, deadline=None)
def test_any_text_is_either_refused_or_only_https_and_mailto(value: str) -> None:
    try:
        uris = parse_list_unsubscribe(value)
    except UnsubscribeError:
        return
    for uri in uris:
        assert uri.lower().startswith(("https://", "mailto:")), uri
        assert uri.isascii()
        assert uri.isprintable()
        assert " " not in uri
