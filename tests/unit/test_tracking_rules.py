"""Open and click tracking rules (etrans/domain/tracking.py): tokens that cannot be forged or
altered, and HTML instrumentation that rewrites exactly the http(s) links."""

from __future__ import annotations

import base64
import json

import pytest

from etrans.domain import tracking
from etrans.domain.tracking import (
    CLICK,
    OPEN,
    InvalidToken,
    TrackingTarget,
    derive_tracking_key,
    instrument_html,
    make_token,
    read_token,
)

KEY = derive_tracking_key(b"s" * 32)
OTHER_KEY = derive_tracking_key(b"t" * 32)
CLICK_TARGET = TrackingTarget(CLICK, 42, "msg_ab@example.com", "https://shop.example/p?a=1&b=ü")


def _track(url: str) -> str:
    return "https://t.example/t/c/" + make_token(KEY, TrackingTarget(CLICK, 42, "m", url))


def test_a_token_round_trips_for_its_kind_only() -> None:
    token = make_token(KEY, CLICK_TARGET)
    assert read_token(KEY, CLICK, token) == CLICK_TARGET
    with pytest.raises(InvalidToken):
        read_token(KEY, OPEN, token)
    opened = TrackingTarget(OPEN, 42, "msg_ab@example.com")
    assert read_token(KEY, OPEN, make_token(KEY, opened)) == opened


def test_a_token_of_another_key_or_altered_is_refused() -> None:
    token = make_token(KEY, CLICK_TARGET)
    with pytest.raises(InvalidToken):
        read_token(OTHER_KEY, CLICK, token)
    payload, mac = token.split(".")
    forged_body = json.dumps(["c", 42, "msg_ab@example.com", "https://evil.test/"]).encode()
    forged = base64.urlsafe_b64encode(forged_body).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        read_token(KEY, CLICK, f"{forged}.{mac}")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    with pytest.raises(InvalidToken):
        read_token(KEY, CLICK, f"{payload}.{flipped}")


@pytest.mark.parametrize("token", [
    "", ".", "a.b.c", "x" * 5000, "é.é", "abc", "!!!.???", "abc.=", "a b.c",
])
def test_garbage_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        read_token(KEY, CLICK, token)


def test_a_signed_payload_of_the_wrong_shape_is_refused() -> None:
    # Signed with the right key but not a make_token payload (a defence-in-depth check).
    for body in ([], ["c", "42", "m", "u"], ["c", 42, "m", None], ["o", 42, "m", "u"], {"a": 1}):
        payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
        mac = tracking._b64(tracking._mac(KEY, CLICK, payload))
        with pytest.raises(InvalidToken):
            read_token(KEY, CLICK, f"{payload}.{mac}")


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        derive_tracking_key(b"short")


def test_http_links_are_rewritten_and_the_rest_left_alone() -> None:
    html = ('<html><body><p>Hi <a href="https://shop.example/p?a=1&amp;b=2">shop</a>, '
            "<a class=x HREF='http://old.example/'>old</a>, "
            '<a href="mailto:help@example.com">mail</a>, <a href="#top">top</a>, '
            '<a href="https://example.com/unsub">unsubscribe</a>, '
            '<a data-etrans-no-track href="https://keep.example/">keep</a>, '
            '<area href=https://map.example/x alt=m>'
            "<script>var s = '<a href=\"https://inscript.example/\">';</script>"
            "<!-- <a href=\"https://comment.example/\"> -->"
            "</p></body></html>")
    out = instrument_html(html, click_url=_track, skip={"https://example.com/unsub"})
    targets = [read_token(KEY, CLICK, part.split('"')[0].split("'")[0]).url
               for part in out.split("https://t.example/t/c/")[1:]]
    assert targets == ["https://shop.example/p?a=1&b=2", "http://old.example/",
                       "https://map.example/x"]
    for kept in ('href="mailto:help@example.com"', 'href="#top"',
                 'href="https://example.com/unsub"', 'href="https://keep.example/"',
                 "https://inscript.example/", "https://comment.example/"):
        assert kept in out
    assert "class=x HREF=" in out  # the other attributes are untouched
    assert out.count("<a ") == html.count("<a ")


def test_multi_line_tags_and_a_decoy_href_inside_another_attribute() -> None:
    html = ('<p>x</p>\n<a\n title=" href=https://decoy.example/"\n href="https://real.example/"'
            '>r</a>\n<a href="https://two.example/">2</a>')
    out = instrument_html(html, click_url=_track)
    assert 'title=" href=https://decoy.example/"' in out
    urls = [read_token(KEY, CLICK, part.split('"')[0]).url
            for part in out.split("https://t.example/t/c/")[1:]]
    assert urls == ["https://real.example/", "https://two.example/"]


def test_the_open_pixel_goes_before_the_last_body_end_or_at_the_end() -> None:
    pixel_url = "https://t.example/t/o/abc.def"
    out = instrument_html("<html><body>hi</BODY ></html>", open_url=pixel_url)
    assert out.index(pixel_url) < out.index("</BODY >")
    assert 'width="1" height="1"' in out
    assert instrument_html("just text", open_url=pixel_url).startswith("just text<img ")


def test_nothing_changes_when_tracking_is_off() -> None:
    html = '<a href="https://x.example/">x</a>'
    assert instrument_html(html) == html
