"""The :class:`~etrans.app.template_ports.TemplateEngine` of etrans: Jinja2 in the limited
sandbox of :mod:`.sandbox`, compiled templates cached, renders bounded.

- A stored template's parts are Jinja templates: ``subject`` and ``text`` render without
  escaping, ``html`` with autoescape (MarkupSafe); a variable without a value is an error
  (``StrictUndefined``; ``{{ name | default("x") }}`` makes one optional).
- An inline text (an email's own subject/html/text with ``template_data``) is no template:
  :func:`etrans.domain.templates.render_inline` fills its ``{{ name }}`` placeholders in one
  linear pass, with the results of before.  (It was a loop of this engine, one sandboxed call
  per piece: ~10 us each, so a 4 MB text of placeholders held the event loop for its 0.5 s
  limit, per part, and a text over 2,000,000 characters was refused as one too large value.)
- Compiled templates are cached by their source (:data:`CACHE_SIZE` parts): the send path
  renders without parsing.
- Where a render runs: a stored template's parts render first on the event loop with a small
  budget (:func:`loop_budget`: 1,000 steps, 100,000 characters of values, 10 ms); one that
  outgrows it is rendered again in a worker thread (:data:`RENDER_THREADS` at once) with the
  full limits (100,000 steps, 0.5 s), so a heavy template never holds the event loop (one filter
  on a 2 MB value can take 0.2 s by itself; the loop budget refuses to read such a value).  A
  thread hop per send cost most of a template send's time (bench/api.py: template ratio 0.27
  with every render in a thread).  An inline text, a linear copy, renders on the event loop.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError

from etrans.adapters.jinja.constants import constant_over_limit
from etrans.adapters.jinja.sandbox import (
    LimitedSandbox,
    RenderBudget,
    render_with,
)
from etrans.domain.templates import (
    MAX_OUTPUT_CHARS,
    PARTS,
    MissingTemplateValue,
    RenderedParts,
    RenderLimitExceeded,
    TemplateProblem,
    TemplateSyntaxProblem,
    render_inline,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from jinja2 import Template

CACHE_SIZE = 512
RENDER_THREADS = 2
LOOP_STEPS = 1_000
LOOP_WORK_CHARS = 100_000
LOOP_SECONDS = 0.01
_UNDEFINED = re.compile(r"^'([^']{1,200})' is undefined$")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_UNSUPPORTED = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


class _Environments:
    """The two environments (html escapes, subject and text do not)."""

    def __init__(self) -> None:
        self.html = LimitedSandbox(autoescape=True)
        self.plain = LimitedSandbox(autoescape=False)

    def of(self, part: str) -> LimitedSandbox:
        return self.html if part == "html" else self.plain



@dataclass(frozen=True)
class Compiled:
    template: Template
    variables: tuple[str, ...]


_ENVS = _Environments()


def _syntax_column(source: str, line: int) -> int:
    """The column (1-based) of the first tag on ``line`` that fails to parse on its own, else of
    the first tag on it (Jinja reports only the line)."""
    lines = source.split("\n")
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    tags = list(re.finditer(r"\{\{.*?\}\}|\{%.*?%\}|\{#|\{\{|\{%", text))
    for match in tags:
        if match.group().startswith("{{"):
            try:
                _ENVS.plain.parse(match.group())
            except TemplateSyntaxError:
                return match.start() + 1
            except RecursionError:
                return match.start() + 1
    return tags[0].start() + 1 if tags else 1


def _private_names(tree: nodes.Template) -> Iterator[tuple[nodes.Node, str]]:
    """The attributes and keys starting with ``_`` a template names as constants (``x._a``,
    ``x['_a']``, ``x|attr('_a')``): the sandbox refuses them when rendering; this refuses them
    when the template is saved, with their line."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            names = [node.attr]
        elif isinstance(node, nodes.Getitem):
            names = [node.arg.value] if isinstance(node.arg, nodes.Const) else []
        else:
            names = [arg.value for arg in node.args if isinstance(arg, nodes.Const)] \
                if isinstance(node, nodes.Filter) and node.name == "attr" else []
        for name in names:
            if isinstance(name, str) and name.startswith("_"):
                yield node, name


@functools.lru_cache(maxsize=CACHE_SIZE)
def compiled(source: str, part: str) -> Compiled:
    """``source`` compiled for ``part``; TemplateSyntaxProblem when it is not a template."""
    env = _ENVS.of(part)
    try:
        tree = env.parse(source)
        for node in tree.find_all(_UNSUPPORTED):
            raise TemplateSyntaxProblem(part, "include, import and extends are not supported",
                                        node.lineno, _syntax_column(source, node.lineno))
        for named, name in _private_names(tree):
            raise TemplateSyntaxProblem(
                part, f"'{name}' is not allowed in a template (names starting with _ are not)",
                named.lineno, _syntax_column(source, named.lineno))
        over = constant_over_limit(tree)
        if over is not None:
            raise TemplateSyntaxProblem(
                part, f"{over[1]}, whatever template_data holds (an expression of constants)",
                over[0].lineno, _syntax_column(source, over[0].lineno), what="render limit")
        variables = tuple(sorted(meta.find_undeclared_variables(tree)))
        template = env.from_string(tree)
    except TemplateProblem:
        raise
    except TemplateSyntaxError as exc:
        line = exc.lineno or 1
        raise TemplateSyntaxProblem(part, exc.message or "invalid template", line,
                                    _syntax_column(source, line)) from None
    except (RecursionError, MemoryError):
        raise TemplateProblem(f"{part}: the template is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal over Python's digit limit
        raise TemplateProblem(f"{part}: {_clean(exc)}") from None
    return Compiled(template, variables)


def _clean(exc: BaseException) -> str:
    """An exception's message without memory addresses, short."""
    return _ADDRESS.sub("0x…", str(exc))[:300]


def _generate(template: Template, data: dict[str, Any], limit: int, part: str) -> str:
    out: list[str] = []
    size = 0
    for chunk in template.generate(data):
        size += len(chunk)
        if size > limit:
            raise RenderLimitExceeded(f"{part}: the rendered text is over {limit} characters")
        out.append(chunk)
    return "".join(out)


def _render(fn: Callable[[], str], limits: RenderBudget, part: str) -> str:
    """``fn()`` within ``limits``, every failure a TemplateProblem naming ``part``."""
    try:
        return render_with(limits, fn)
    except MissingTemplateValue:
        raise
    except RenderLimitExceeded as exc:
        if str(exc).startswith(f"{part}: "):
            raise
        raise RenderLimitExceeded(f"{part}: {exc}") from None
    except UndefinedError as exc:
        match = _UNDEFINED.match(exc.message or "")
        if match:
            raise MissingTemplateValue(part, match.group(1)) from None
        raise TemplateProblem(f"{part}: {_clean(exc)}") from None
    except SecurityError as exc:
        raise TemplateProblem(f"{part}: not allowed in a template: {_clean(exc)}") from None
    except (RecursionError, MemoryError):
        raise RenderLimitExceeded(f"{part}: the template recurses too deeply") from None
    except TemplateError as exc:
        raise TemplateProblem(f"{part}: {_clean(exc)}") from None
    except Exception as exc:  # a template's own error (1/0, int('x'), ...): the user's to fix
        raise TemplateProblem(f"{part}: the template failed: {type(exc).__name__}: "
                              f"{_clean(exc)}") from None


def loop_budget() -> RenderBudget:
    """What a render may do on the event loop: 1,000 steps, 100,000 characters of values made or
    read (so no single filter reads more: sorting that takes ~10 ms), 10 ms."""
    return RenderBudget(max_steps=LOOP_STEPS, max_work=LOOP_WORK_CHARS, seconds=LOOP_SECONDS)


class JinjaTemplateEngine:
    """Stored and inline templates rendered in :class:`.sandbox.LimitedSandbox`."""

    def __init__(self, *, threads: int = RENDER_THREADS,
                 limits: Callable[[], RenderBudget] = RenderBudget) -> None:
        self._limiter = trio.CapacityLimiter(threads)
        self._limits = limits

    async def check(self, parts: dict[str, str | None]) -> tuple[str, ...]:
        """The variables the parts use; TemplateSyntaxProblem naming line and column."""
        return await trio.to_thread.run_sync(self.variables, parts, limiter=self._limiter)

    def variables(self, parts: dict[str, str | None]) -> tuple[str, ...]:
        names: set[str] = set()
        for part in PARTS:
            source = parts.get(part)
            if source:
                names.update(compiled(source, part).variables)
        return tuple(sorted(names))

    async def render(self, parts: dict[str, str | None], data: dict[str, Any]) -> RenderedParts:
        """The parts of a stored template rendered with ``data``: first on the event loop with
        the small :func:`loop_budget`; a render that outgrows it is done again, whole, in a
        worker thread with the full limits (rendering has no side effects)."""
        try:
            return self._render_parts(parts, data, loop_budget)
        except RenderLimitExceeded:
            return await trio.to_thread.run_sync(self._render_parts, parts, data, self._limits,
                                                 limiter=self._limiter)

    @staticmethod
    def _render_parts(parts: dict[str, str | None], data: dict[str, Any],
                      limits: Callable[[], RenderBudget]) -> RenderedParts:
        out: dict[str, str | None] = {}
        for part in PARTS:
            source = parts.get(part)
            if not source:
                out[part] = None
                continue
            found = compiled(source, part)
            fn = functools.partial(_generate, found.template, data, MAX_OUTPUT_CHARS, part)
            out[part] = _render(fn, limits(), part)
        return RenderedParts(**out)

    def render_inline(self, text: str, data: dict[str, Any], part: str) -> str:
        """An email's own ``text`` with its ``{{ name }}`` placeholders filled from ``data``
        (:func:`etrans.domain.templates.render_inline`: a linear pass, on the event loop)."""
        return render_inline(text, data, part)

    def statistics(self) -> dict[str, Any]:
        info = compiled.cache_info()
        return {"compiled_hits": info.hits, "compiled_misses": info.misses,
                "compiled_size": info.currsize,
                "render_threads_busy": self._limiter.borrowed_tokens}
