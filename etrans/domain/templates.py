"""Rules of stored email templates (``/templates``) and of the inline placeholders of
POST /emails, both rendered by one sandboxed engine (:mod:`etrans.adapters.jinja`).

A stored template has a name and three parts, each a template: ``subject`` (required), ``html``
and ``text`` (at least one of them).  Limits (``docs/api.md``, "Templates"): a part's source is at
most :data:`MAX_PART_CHARS` characters (the subject :data:`MAX_SUBJECT_CHARS`), a render may
produce at most :data:`MAX_OUTPUT_CHARS` per part, take :data:`MAX_STEPS` steps (loop
iterations, calls, filters, operators) and produce :data:`MAX_WORK_CHARS` characters of values on
the way, and is cut after :data:`RENDER_SECONDS` whatever it does.

Inline placeholders (an email's own subject/html/text with ``template_data``, no template) keep
their rules from before templates existed: only ``{{ name }}`` is replaced (``name`` a key of
``template_data`` as written, dots and dashes included), everything else is kept verbatim,
non-string values are written as JSON, and html values are escaped as :func:`html.escape` does.
:func:`render_inline` fills them in one linear pass (no template engine: nothing in such a text
is code).
"""

from __future__ import annotations

import html as html_lib
import json
import re
from dataclasses import dataclass
from typing import Any

from etrans.errors import InvalidInput

MAX_NAME_CHARS = 255
MAX_SUBJECT_CHARS = 998
MAX_PART_CHARS = 200_000
MAX_TEMPLATES_PER_USER = 1000
# What one render may do: see the module docstring and docs/api.md.
MAX_OUTPUT_CHARS = 2_000_000
MAX_VALUE_CHARS = 2_000_000
MAX_STEPS = 100_000
MAX_WORK_CHARS = 20_000_000
MAX_RANGE = 10_000
RENDER_SECONDS = 0.5
# An inline text is an email's own body: it may be as large as the email (25 MB), and its render
# is a linear copy, so its output limit is the email's.
MAX_INLINE_OUTPUT_CHARS = 25 * 1024 * 1024
MAX_INLINE_PLACEHOLDERS = 100_000

PARTS = ("subject", "html", "text")
INLINE_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_ID = re.compile(r"tpl_([1-9][0-9]{0,17})")


class TemplateProblem(ValueError):
    """A template cannot be saved or rendered; the message is the API's ``detail``."""


class TemplateSyntaxProblem(TemplateProblem):
    def __init__(self, part: str, message: str, line: int, column: int, *,
                 what: str = "syntax error") -> None:
        self.part, self.line, self.column = part, line, column
        super().__init__(f"{part}: {what} at line {line}, column {column}: {message}")


class MissingTemplateValue(TemplateProblem):
    """Strict rendering: a variable has no value in ``template_data``."""

    def __init__(self, part: str, name: str, *, inline: bool = False) -> None:
        self.part, self.name = part, name
        if inline:  # the message inline placeholders always had
            super().__init__(f"template_data has no value for {{{{ {name} }}}} in {part}")
        else:
            super().__init__(f"template_data has no value for {name!r} (used in {part})")


class RenderLimitExceeded(TemplateProblem):
    pass


@dataclass(frozen=True)
class RenderedParts:
    subject: str | None
    html: str | None
    text: str | None


def format_template_id(number: int) -> str:
    return f"tpl_{number}"


def parse_template_id(raw: str) -> int:
    """The number of ``tpl_<n>``; InvalidInput (400) for anything else, as the other ids."""
    match = _ID.fullmatch(raw)
    if match is None:
        raise InvalidInput(f"invalid template id {raw[:64]!r}: expected tpl_<number>")
    return int(match.group(1))


def check_parts(parts: dict[str, str | None]) -> None:
    """Sizes and presence of a template's parts (before their syntax is checked)."""
    if not parts.get("subject"):
        raise TemplateProblem("subject is required")
    if not parts.get("html") and not parts.get("text"):
        raise TemplateProblem("At least one of html or text is required")
    for part in PARTS:
        source = parts.get(part) or ""
        limit = MAX_SUBJECT_CHARS if part == "subject" else MAX_PART_CHARS
        if len(source) > limit:
            raise TemplateProblem(f"{part} is {len(source)} characters, the limit is {limit}")


def template_value(value: Any) -> str:
    """How a value of ``template_data`` is written: strings as they are, anything else as JSON
    (``true``, ``null``, ``3.5``, ``["a"]``), as inline placeholders always did."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def inline_html_value(value: Any) -> str:
    """An inline placeholder's value in html: :func:`html.escape` (quotes as ``&quot;`` and
    ``&#x27;``), unlike stored templates (``&#34;`` and ``&#39;``, MarkupSafe)."""
    return html_lib.escape(template_value(value))


def render_inline(text: str, data: dict[str, Any], part: str) -> str:
    """``text`` with its ``{{ name }}`` placeholders filled from ``data``, as they always were
    (:func:`template_value`; in html :func:`inline_html_value`): one linear pass, each name's
    value made once, at most :data:`MAX_INLINE_PLACEHOLDERS` placeholders and
    :data:`MAX_INLINE_OUTPUT_CHARS` characters (RenderLimitExceeded; MissingTemplateValue for a
    name ``data`` lacks)."""
    write = inline_html_value if part == "html" else template_value
    values: dict[str, str] = {}
    out: list[str] = []
    size = at = 0
    for count, match in enumerate(INLINE_PLACEHOLDER.finditer(text), 1):
        if count > MAX_INLINE_PLACEHOLDERS:
            raise RenderLimitExceeded(f"{part}: more than {MAX_INLINE_PLACEHOLDERS} "
                                      "placeholders")
        name = match.group(1)
        value = values.get(name)
        if value is None:
            if name not in data:
                raise MissingTemplateValue(part, name, inline=True)
            value = values[name] = write(data[name])
        size += match.start() - at + len(value)
        if size > MAX_INLINE_OUTPUT_CHARS:
            break
        out += (text[at:match.start()], value)
        at = match.end()
    size += len(text) - at
    if size > MAX_INLINE_OUTPUT_CHARS:
        raise RenderLimitExceeded(f"{part}: the rendered text is over "
                                  f"{MAX_INLINE_OUTPUT_CHARS} characters")
    out.append(text[at:])
    return "".join(out)


# What a request's own subject, html and text may not hold (etrans.api.schema: control
# characters; the subject no line break of any kind, etrans.domain.addresses.has_line_break):
# rendered parts are held to the same rules, else a template or template_data could bring in
# what the request itself could not - a NUL the worker refuses (the email Bounced after a 200)
# or a U+2028 the MIME builder turns into a space.
_SUBJECT_REFUSED = re.compile("[\x00-\x1f\x85\u2028\u2029]")
_TEXT_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def check_rendered_subject(subject: str) -> None:
    found = _SUBJECT_REFUSED.search(subject)
    if found:
        raise TemplateProblem("the rendered subject contains a line break or control character "
                              f"(U+{ord(found.group()):04X}): subject lines cannot")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise TemplateProblem(f"the rendered subject is {len(subject)} characters, the limit "
                              f"is {MAX_SUBJECT_CHARS}")


def check_rendered_text(text: str, part: str) -> None:
    """The rendered ``html`` or ``text``: no control character but TAB, CR and LF."""
    found = _TEXT_REFUSED.search(text)
    if found:
        raise TemplateProblem(f"the rendered {part} contains the control character "
                              f"U+{ord(found.group()):04X}")
