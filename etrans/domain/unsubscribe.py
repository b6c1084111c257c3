"""One-click unsubscribe: the one rule for the ``List-Unsubscribe`` (RFC 2369) and
``List-Unsubscribe-Post`` (RFC 8058) headers a sender gives, and how they are written.

Gmail and Yahoo require bulk senders to offer one-click unsubscribe: a ``List-Unsubscribe``
header with an https URI that takes a POST, and ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click``.  The API (:func:`etrans.domain.emails.check_email`) and the
sendmail worker's trust boundary (:mod:`etrans.workers.send_request`) both check a message's
headers with :func:`unsubscribe_problem`, so a record written by something else is held to the
same rule as a request.

Accepted (``docs/api.md``, "One-click unsubscribe"):

- ``List-Unsubscribe``: one or more ``<URI>`` separated by commas, at most
  :data:`MAX_VALUE_LENGTH` characters, each URI at most :data:`MAX_URI_LENGTH`: either
  ``https://host/...`` (absolute, a DNS host name, no user info; RFC 3986 characters only) or
  ``mailto:address`` (a plain address the one address parser accepts, optionally
  ``?subject=...``, percent-encoded).  Plain ``http:``, any other scheme (``javascript:``,
  ``data:``), relative or malformed URIs are refused.
- ``List-Unsubscribe-Post``: exactly ``List-Unsubscribe=One-Click``, and only with a
  ``List-Unsubscribe`` holding an https URI (RFC 8058 section 3: the POST goes to that URI).
- each at most once; names compare case-insensitively.

:func:`header_field` writes them: the canonical name, the URIs joined by ``", "`` and folded
between two URIs when the line would pass 78 columns (RFC 5322 folding at whitespace, never inside
a URI and never as RFC 2047 encoded words, which no unsubscribe client decodes).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from etrans.domain.addresses import AddressError, is_valid_domain, validate_email

if TYPE_CHECKING:
    from collections.abc import Iterable

LIST_UNSUBSCRIBE = "List-Unsubscribe"
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe-Post"
ONE_CLICK = "List-Unsubscribe=One-Click"
MAX_VALUE_LENGTH = 998  # RFC 5322's line limit: the value of any custom header
# A URI alone on a folded line, "List-Unsubscribe: <uri>,", stays within RFC 5322's 998.
MAX_URI_LENGTH = 900
CANONICAL_NAMES = {name.lower(): name for name in (LIST_UNSUBSCRIBE, LIST_UNSUBSCRIBE_POST)}

# RFC 3986 characters (unreserved, reserved, and % of a percent-encoding).
_URI_TEXT = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_ITEM = re.compile(r"[ \t]*<([^<>]*)>[ \t]*")
# RFC 6068: what a mailto address and a header value may hold without percent-encoding.
_MAILTO_LOCAL = re.compile(r"[A-Za-z0-9._~!$'*+-]+")
_MAILTO_QUERY_VALUE = re.compile(r"(?:[A-Za-z0-9\-._~!$'()*+,;:@/?]|%[0-9A-Fa-f]{2})*")
_MAX_LINE = 78
_SHOWN = 80  # characters of a refused URI quoted in the error


class UnsubscribeError(ValueError):
    """The header breaks the rule; the message says why."""


def _shown(uri: str) -> str:
    return repr(uri if len(uri) <= _SHOWN else uri[:_SHOWN] + "...")


def _https(uri: str) -> None:
    if not uri[len("https:"):].startswith("//"):
        raise UnsubscribeError(f"{_shown(uri)} is not an absolute https://host/... URI")
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        raise UnsubscribeError(f"{_shown(uri)} must not carry user info (user@host)")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise UnsubscribeError(f"{_shown(uri)} has an invalid port") from None
    if not is_valid_domain(parts.hostname or ""):
        raise UnsubscribeError(f"{_shown(uri)} must name a DNS host (example.com)")


def _mailto(uri: str) -> None:
    address, question, query = uri[len("mailto:"):].partition("?")
    try:
        validate_email(address)
    except AddressError:
        raise UnsubscribeError(f"{_shown(uri)} does not hold one valid address") from None
    if not _MAILTO_LOCAL.fullmatch(address.rpartition("@")[0]):
        raise UnsubscribeError(f"{_shown(uri)}: the address has characters a mailto URI must "
                               "percent-encode; use a plainer address")
    if question:
        name, equals, value = query.partition("=")
        if name.lower() != "subject" or not equals or not _MAILTO_QUERY_VALUE.fullmatch(value):
            raise UnsubscribeError(f"{_shown(uri)}: only ?subject=... (percent-encoded) may "
                                   "follow the address")


def check_uri(uri: str) -> str:
    """The scheme (``https`` or ``mailto``) of ``uri`` when it may be an unsubscribe URI, else
    raise :class:`UnsubscribeError`."""
    if not uri:
        raise UnsubscribeError("an empty <> is not a URI")
    if len(uri) > MAX_URI_LENGTH:
        raise UnsubscribeError(f"a URI is longer than {MAX_URI_LENGTH} characters")
    if not _URI_TEXT.fullmatch(uri) or _BAD_PERCENT.search(uri):
        raise UnsubscribeError(f"{_shown(uri)} is not a URI (spaces, quotes and non-ASCII must "
                               "be percent-encoded)")
    scheme_match = _SCHEME.match(uri)
    if scheme_match is None:
        raise UnsubscribeError(f"{_shown(uri)} is not an absolute URI: use https:// or mailto:")
    scheme = scheme_match.group(1).lower()
    if scheme == "https":
        _https(uri)
    elif scheme == "mailto":
        _mailto(uri)
    elif scheme == "http":
        raise UnsubscribeError(f"{_shown(uri)} is plain http: use https (or mailto)")
    else:
        raise UnsubscribeError(f"{_shown(uri)}: scheme {scheme!r} is not allowed, only https "
                               "and mailto")
    return scheme


def parse_list_unsubscribe(value: str) -> tuple[str, ...]:
    """The URIs of a ``List-Unsubscribe`` value, in order; :class:`UnsubscribeError` when the
    value is not one or more acceptable ``<URI>`` separated by commas."""
    if len(value) > MAX_VALUE_LENGTH:
        raise UnsubscribeError(f"longer than {MAX_VALUE_LENGTH} characters")
    uris: list[str] = []
    position = 0
    while True:
        item = _ITEM.match(value, position)
        if item is None:
            raise UnsubscribeError("must be one or more <URI> separated by commas, e.g. "
                                   "<https://example.com/unsubscribe/abc>, "
                                   "<mailto:unsubscribe@example.com>")
        check_uri(item.group(1))
        uris.append(item.group(1))
        position = item.end()
        if position == len(value):
            return tuple(uris)
        if value[position] != ",":
            raise UnsubscribeError("URIs must be separated by commas")
        position += 1


def unsubscribe_problem(headers: Iterable[tuple[str, str]]) -> str | None:
    """Why the unsubscribe headers among ``headers`` (name, value) are refused, or None.

    The message names the header; headers of other names are not looked at."""
    given: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in CANONICAL_NAMES:
            if key in given:
                return f"{CANONICAL_NAMES[key]} header given more than once"
            given[key] = value
    if not given:
        return None
    schemes: list[str] = []
    listed = given.get("list-unsubscribe")
    if listed is not None:
        try:
            schemes = [uri.partition(":")[0].lower() for uri in parse_list_unsubscribe(listed)]
        except UnsubscribeError as exc:
            return f"{LIST_UNSUBSCRIBE} header: {exc}"
    post = given.get("list-unsubscribe-post")
    if post is not None:
        if post.strip() != ONE_CLICK:
            return f"{LIST_UNSUBSCRIBE_POST} header must be exactly {ONE_CLICK!r} (RFC 8058)"
        if "https" not in schemes:
            return (f"{LIST_UNSUBSCRIBE_POST} header needs a {LIST_UNSUBSCRIBE} header with an "
                    "https URI to POST to (RFC 8058)")
    return None


def is_unsubscribe_header(name: str) -> bool:
    return name.lower() in CANONICAL_NAMES


def header_field(name: str, value: str) -> tuple[str, str] | None:
    """The header as written into the message: (canonical name, value folded with CRLF +
    space between URIs), or None when it breaks the rule (the worker refuses such requests
    before rendering; the writer then leaves it out rather than write it)."""
    canonical = CANONICAL_NAMES[name.lower()]
    if canonical == LIST_UNSUBSCRIBE_POST:
        return (canonical, ONE_CLICK) if value.strip() == ONE_CLICK else None
    try:
        uris = parse_list_unsubscribe(value)
    except UnsubscribeError:
        return None
    lines: list[str] = []
    line = f"{canonical}:"
    last = len(uris) - 1
    for index, uri in enumerate(uris):
        token = f"<{uri}>," if index < last else f"<{uri}>"
        if index > 0 and len(line) + 1 + len(token) > _MAX_LINE:
            lines.append(line)
            line = " " + token
        else:
            line += " " + token
    lines.append(line)
    return canonical, "\r\n".join(lines)[len(canonical) + 2:]
