"""What every request is held to before its route sees it: the JSON body bounded and decoded,
the query string parsed against its :class:`~etrans.api.schema.QueryParam` declarations, the
path parameters checked (:mod:`etrans.api.routing` calls these for every route).

Bad input is a 400, never a 500, whatever its shape (docs/api.md, "Errors"):

- every string of a request (path parameters, query values, body strings and keys, at any depth)
  is refused when it holds a C0 control character (U+0000..U+001F): NUL cannot be stored by
  PostgreSQL, and the others have no business in names, addresses or ids.  TAB, CR and LF are
  allowed only where text is free (``String(text=True)``: the html/text bodies, template values);
- a JSON body is bounded before it is decoded (:func:`decode_json`: size, nesting depth, number
  of arrays and objects), and NaN, Infinity, numbers beyond a float and objects with a key
  given twice are refused;
- path parameters are 1..1024 characters (:func:`check_path`), and timestamps are parsed and
  range-checked by the schema (:data:`etrans.api.schema.TIMESTAMP`), so the use cases never
  see one they cannot convert.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from etrans.api.schema import ErrorList, Integer, SchemaError, String

if TYPE_CHECKING:
    from collections.abc import Mapping

    from etrans.api.schema import Loc, QueryParam

# -- query strings and path parameters ------------------------------------------------------


# ASCII digits only: int() also reads "1_0" as 10 and U+0661 (Arabic-Indic) or U+FF11
# (fullwidth) as 1.
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def parse_query(params: Mapping[str, QueryParam], args: Mapping[str, str]) -> dict[str, Any]:
    """Validate query arguments (text) against ``params``; unknown arguments are ignored."""
    errors = ErrorList()
    result: dict[str, Any] = {}
    for name, param in params.items():
        raw = args.get(name)
        if raw is None:
            result[name] = param.default
            continue
        loc: Loc = ("query", name)
        if isinstance(param.spec, Integer):
            try:
                if not _INTEGER.fullmatch(raw):
                    raise ValueError(raw)
                number = int(raw)
            except ValueError:  # also over 4,300 digits
                errors.add(loc, f"must be an integer, got {raw!r}", "int_parsing")
                continue
            result[name] = param.spec.check(number, loc, errors)
        else:
            result[name] = param.spec.check(raw, loc, errors)
    if errors.items:
        raise SchemaError(errors.items)
    return result


MAX_PATH_PARAMETER = 1024
PATH_PARAMETER = String(min_length=1, max_length=MAX_PATH_PARAMETER)


def check_path(args: Mapping[str, str]) -> dict[str, str]:
    """Path parameters: 1..1024 characters, no control characters (NUL reached the database
    as a message id); ``loc`` is ``["path", name]``."""
    errors = ErrorList()
    for name, value in args.items():
        PATH_PARAMETER.check(value, ("path", name), errors)
    if errors.items:
        raise SchemaError(errors.items)
    return dict(args)


# -- JSON bodies ---------------------------------------------------------------------------------

MAX_JSON_DEPTH = 32
MAX_JSON_CONTAINERS = 100_000
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _json_error(msg: str) -> SchemaError:
    return SchemaError([{"loc": ["body"], "msg": msg, "type": "json_invalid"}])


def _nesting_problem(raw: bytes, max_depth: int, max_containers: int) -> str | None:
    """Depth and count of arrays/objects, from the bytes (before decoding: a deep document made
    the decoder raise RecursionError, a 500 on every JSON endpoint)."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return None  # the common case: cannot be deeper, whatever is in strings
    structure = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    opened = structure.count(b"[") + structure.count(b"{")
    if opened > max_containers:
        return f"more than {max_containers} arrays and objects"
    if opened <= max_depth:
        return None
    depth = 0
    for byte in structure:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
        else:
            depth -= 1
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: with a key given twice, decoders disagree on
    which value counts (Python's keeps the last, many keep the first), so a proxy or a client's
    own check could read another recipient than the one etrans sends to."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:64]!r} in an object")
            seen.add(key)
    return obj


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text[:40]}")
    return number


def decode_json(raw: bytes, *, max_bytes: int | None = None, max_depth: int = MAX_JSON_DEPTH,
                max_containers: int = MAX_JSON_CONTAINERS) -> Any:
    """The JSON document ``raw``, bounded before decoding (size, depth, arrays and objects);
    a body that is not UTF-8, NaN, Infinity, numbers that overflow a float, an object with a key
    given twice, and text that is not valid Unicode (a lone surrogate escape) are refused.
    Raises :class:`SchemaError` (``json_invalid``)."""
    if max_bytes is not None and len(raw) > max_bytes:
        raise _json_error(f"JSON body larger than {max_bytes} bytes")
    problem = _nesting_problem(raw, max_depth, max_containers)
    if problem:
        raise _json_error(f"Invalid JSON: {problem}")
    try:
        # UTF-8 only (RFC 8259, 8.1), strictly: json.loads(bytes) also reads UTF-16 and UTF-32,
        # and decodes with "surrogatepass", so a surrogate written as bytes (ED A0 80) or in a
        # UTF-16 body became a lone surrogate that the escape check below does not see (a 500
        # when the email was encoded).  A leading byte order mark is ignored, as it was.
        text = raw.decode("utf-8").removeprefix("\ufeff")
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                           object_pairs_hook=_unique_keys)
        if _SURROGATE_ESCAPE.search(raw):
            # "\ud800" alone is valid JSON but no valid text: refuse it here, not in a driver.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise _json_error(f"Invalid JSON: {exc}") from None
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
