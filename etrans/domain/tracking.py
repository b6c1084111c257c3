"""Open and click tracking (issue 16): what changes in an HTML body, and the signed tokens of the
tracking URLs.

With open tracking on, the HTML part gets a 1x1 image whose URL carries a token for the message;
with click tracking on, the ``href`` of each ``<a>``/``<area>`` pointing to an ``http(s)`` URL is
replaced by a tracking URL carrying a token for the message and the original URL.  Left alone:
text parts, ``mailto:`` and every other scheme, the unsubscribe URLs given to
:func:`instrument_html` (the message's ``List-Unsubscribe`` URIs: a one-click unsubscribe must
reach the sender as is),
and any link with the attribute ``data-etrans-no-track``.

A token is ``<payload>.<mac>``: the payload is base64url (no padding) of compact JSON
``[kind, user_id, message_id, url]`` and the mac the first 16 bytes of HMAC-SHA256 over
``kind.payload`` with a key derived from a server secret (:func:`derive_tracking_key`), compared
in constant time.  Without the secret a token can be neither forged nor altered, so the click
endpoint redirects only to URLs that were in a message etrans sent (no open redirect).

Pure rules, standard library only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html as html_text
import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

Kind = Literal["o", "c"]
OPEN: Kind = "o"
CLICK: Kind = "c"
MAC_BYTES = 16
MAX_TOKEN_LENGTH = 4096
NO_TRACK_ATTRIBUTE = "data-etrans-no-track"
_KEY_LABEL = b"etrans tracking token key v1"
_HREF = re.compile(r"""(\shref\s*=\s*)("[^"]*"|'[^']*'|[^\s"'=<>`]+)""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


class InvalidToken(ValueError):
    """A token that was not made by this server's key (or not for this endpoint)."""


@dataclass(frozen=True)
class TrackingTarget:
    """What a valid token names: the message (and its user) and, for a click, the URL."""

    kind: Kind
    user_id: int
    message_id: str
    url: str | None = None


def derive_tracking_key(secret: bytes) -> bytes:
    """The token key, derived from a server secret so that the secret itself never signs."""
    if len(secret) < 16:
        raise ValueError("the tracking secret must be at least 16 bytes")
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, kind: str, payload: str) -> bytes:
    return hmac.new(key, f"{kind}.{payload}".encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES]


def make_token(key: bytes, target: TrackingTarget) -> str:
    body = [target.kind, target.user_id, target.message_id, target.url]
    payload = _b64(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(key, target.kind, payload))}"


def read_token(key: bytes, kind: Kind, token: str) -> TrackingTarget:
    """The target of a token made by :func:`make_token` with ``key`` for ``kind``; else
    :class:`InvalidToken` (whatever the input: length, alphabet, padding, JSON, types)."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1 or not token.isascii():
        raise InvalidToken("malformed token")
    payload, mac_text = token.split(".")
    try:
        mac = _unb64(mac_text)
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None
    # Canonical base64 only: the unused low bits of the last character must not give a second
    # spelling of the same token.
    if _b64(mac) != mac_text or not hmac.compare_digest(mac, _mac(key, kind, payload)):
        raise InvalidToken("bad signature")
    try:
        body = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed payload") from None
    if not (isinstance(body, list) and len(body) == 4 and body[0] == kind
            and isinstance(body[1], int) and isinstance(body[2], str)
            and (body[3] is None or isinstance(body[3], str))):
        raise InvalidToken("malformed payload")
    if (kind == CLICK) != (body[3] is not None):
        raise InvalidToken("malformed payload")
    return TrackingTarget(kind=kind, user_id=body[1], message_id=body[2], url=body[3])


def is_trackable_url(url: str) -> bool:
    lowered = url.strip().lower()
    return lowered.startswith(("http://", "https://")) and len(url) <= 2048


class _LinkFinder(HTMLParser):
    """The start tags of links to rewrite: (offset of the tag, the raw tag text, its href)."""

    def __init__(self, skip: Collection[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.skip = skip
        self.found: list[tuple[tuple[int, int], str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("a", "area"):
            return
        names = [name for name, _ in attrs]
        # Browsers take the first of repeated attributes (dict() would keep the last).
        href = next((value for name, value in attrs if name == "href"), None)
        if href is None or NO_TRACK_ATTRIBUTE in names:
            return
        if not is_trackable_url(href) or href.strip() in self.skip:
            return
        raw = self.get_starttag_text()
        if raw is not None:
            self.found.append((self.getpos(), raw, href.strip()))


def instrument_html(html: str, *, click_url: Callable[[str], str] | None = None,
                    open_url: str | None = None, skip: Collection[str] = ()) -> str:
    """``html`` with its links rewritten by ``click_url`` (original URL -> tracking URL) and the
    open pixel ``open_url`` added; each None leaves that part out.  ``skip``: URLs to leave."""
    if click_url is not None:
        html = _rewrite_links(html, click_url, skip)
    if open_url is not None:
        html = _add_pixel(html, open_url)
    return html


def _rewrite_links(html: str, click_url: Callable[[str], str], skip: Collection[str]) -> str:
    finder = _LinkFinder(skip)
    finder.feed(html)
    finder.close()
    if not finder.found:
        return html
    line_starts = [0]
    line_starts.extend(m.end() for m in re.finditer("\n", html))
    out: list[str] = []
    done = 0
    for (line, column), raw, href in finder.found:
        start = line_starts[line - 1] + column
        if html[start:start + len(raw)] != raw:
            continue  # the parser's position does not match the text: leave the link as is
        new_tag = _replace_href(raw, href, click_url(href))
        if new_tag is None:
            continue
        out.append(html[done:start])
        out.append(new_tag)
        done = start + len(raw)
    out.append(html[done:])
    return "".join(out)


def _replace_href(tag: str, href: str, tracked: str) -> str | None:
    """``tag`` with the href attribute whose value is ``href`` set to ``tracked`` (None when
    no attribute of the raw text is that one, e.g. ``href=`` inside another attribute)."""
    for match in _HREF.finditer(tag):
        value = match.group(2)
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        if html_text.unescape(value).strip() == href:
            quoted = tracked.replace("&", "&amp;").replace('"', "&quot;")
            return f'{tag[:match.start()]}{match.group(1)}"{quoted}"{tag[match.end():]}'
    return None


def _add_pixel(html: str, open_url: str) -> str:
    source = open_url.replace("&", "&amp;").replace('"', "&quot;")
    pixel = (f'<img src="{source}" width="1" height="1" alt="" '
             'style="display:block;border:0;width:1px;height:1px" />')
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + pixel
    at = ends[-1].start()
    return html[:at] + pixel + html[at:]
