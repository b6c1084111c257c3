"""The Jinja2 environment templates render in: Jinja's :class:`ImmutableSandboxedEnvironment`
(no ``_`` attributes, no internal attributes of functions, frames or code, no mutation of lists
and dicts, ``str.format`` sandboxed) with the limits Jinja does not have.

Jinja's sandbox keeps a template from reading the server's state; it does nothing about time and
memory (``range(100000)`` nested, ``'a' * 10**9``, ``9**9**9``, a macro that doubles a string 40
times).  A render here is charged, through one :class:`RenderBudget` per render (a context
variable), for every step it takes and every value it makes:

- every loop iteration, call, filter and intercepted operator (``*``, ``**``, ``%``, ``+``) is a
  step (at most ``max_steps``) and checks the clock (``deadline``);
- every value a call, filter, operator or ``~`` makes or reads is measured: a string or collection
  over ``max_value`` is refused, and the lengths (an item of a list counts as 16 characters) add
  up to at most ``max_work`` characters;
- the operations that could allocate far more than their inputs are checked *before* they run:
  repetition (``*``) and powers by the size of the result, ``%`` and ``str.format`` by the widths
  in the format, ``replace`` / ``join`` / ``center`` / ``indent`` / ``batch`` / ``slice`` /
  ``wordwrap`` by their arguments; the ``str`` methods that pad (``ljust``, ``zfill``,
  ``expandtabs`` ...) and ``int.to_bytes`` are not reachable, nor is ``lipsum``;
- ``range`` makes at most ``MAX_RANGE`` numbers.

Loops and ``~`` have no hook in Jinja, so the parsed template is rewritten before it is compiled
(:func:`instrument`): a ``for`` iterates ``environment.counted(...)`` and a ``~`` is wrapped in
``environment.measured(...)`` (``EnvironmentAttribute`` nodes: a template variable cannot shadow
them).  Recursion ends with Python's RecursionError, which the engine reports like a limit.
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from etrans.domain.templates import (
    MAX_RANGE,
    MAX_STEPS,
    MAX_VALUE_CHARS,
    MAX_WORK_CHARS,
    RENDER_SECONDS,
    RenderLimitExceeded,
    template_value,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from jinja2.runtime import Context

_INT_BITS = 4096
_ITEM_WORK = 16  # an item of a list costs what 16 characters cost (sorting, comparing)
_MAX_WIDTH = 1000
_STR_METHODS = frozenset({
    "capitalize", "casefold", "count", "endswith", "find", "format", "index", "isalnum",
    "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
    "isprintable", "isspace", "istitle", "isupper", "join", "lower", "lstrip", "partition",
    "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rpartition", "rsplit",
    "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper",
    "striptags", "unescape", "escape",
})
_PRINTF_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


@dataclass
class RenderBudget:
    """What one render may still do (see the module docstring)."""

    max_steps: int = MAX_STEPS
    max_work: int = MAX_WORK_CHARS
    max_value: int = MAX_VALUE_CHARS
    seconds: float = RENDER_SECONDS
    steps: int = 0
    work: int = 0
    deadline: float = 0.0

    def start(self) -> RenderBudget:
        self.deadline = time.monotonic() + self.seconds
        return self

    def step(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > self.max_steps:
            raise RenderLimitExceeded(f"the template takes more than {self.max_steps} steps "
                                      "(loop iterations, calls, filters)")
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded(f"the template takes more than {self.seconds:g} s "
                                      "to render")

    def charge(self, value: Any) -> Any:
        """``value`` when it is not too large; counts its size."""
        if isinstance(value, (str, list, tuple, dict, set, bytes)):
            size = len(value)
            if size > self.max_value:
                raise RenderLimitExceeded(f"the template makes a value of {size} characters "
                                          f"or items, the limit is {self.max_value}")
            self.work += size
            if self.work > self.max_work:
                raise RenderLimitExceeded(f"the template makes more than {self.max_work} "
                                          "characters of values")
        return value

    def consume(self, *values: Any) -> None:
        """Count the work of reading ``values`` (a filter or call going through them)."""
        for value in values:
            if isinstance(value, (str, bytes)):
                self.work += len(value)
            elif isinstance(value, (list, tuple, dict, set)):
                self.work += _ITEM_WORK * len(value)
        if self.work > self.max_work:
            raise RenderLimitExceeded(f"the template makes more than {self.max_work} "
                                      "characters of values")

    def allow_size(self, size: int) -> None:
        if size > self.max_value:
            raise RenderLimitExceeded(f"the template would make a value of {size} characters "
                                      f"or items, the limit is {self.max_value}")


_BUDGET: contextvars.ContextVar[RenderBudget] = contextvars.ContextVar("etrans_render_budget")


def budget() -> RenderBudget:
    found = _BUDGET.get(None)
    if found is None:  # rendering outside render_with(): never without limits
        raise RenderLimitExceeded("no render budget")
    return found


def render_with(limits: RenderBudget, fn: Callable[[], str]) -> str:
    """``fn()`` charged to ``limits`` (started now)."""
    token = _BUDGET.set(limits.start())
    try:
        return fn()
    finally:
        _BUDGET.reset(token)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple, dict, set, bytes)) else 1


def _check_format_widths(fmt: str) -> None:
    """Refuse widths or precisions over _MAX_WIDTH and nested fields in a str.format string."""
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec and ("{" in spec or any(int(n) > _MAX_WIDTH for n in re.findall(r"\d+", spec))):
            raise RenderLimitExceeded(f"format widths above {_MAX_WIDTH} are not allowed")


def _check_printf_widths(fmt: str) -> None:
    for match in _PRINTF_WIDTH.finditer(fmt):
        for group in match.groups():
            if group == "*" or (group and int(group) > _MAX_WIDTH):
                raise RenderLimitExceeded(f"format widths above {_MAX_WIDTH} are not allowed")


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        budget().allow_size(len(text) + hits * max(0, len(new) - len(old)))


def _check_join(items: Any) -> None:
    if isinstance(items, (list, tuple)):
        budget().allow_size(sum(_size(i) for i in items) + len(items))


def _check_binop(op: str, left: Any, right: Any) -> None:
    limits = budget()
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                limits.allow_size(len(seq) * max(times, 0))
        if isinstance(left, int) and isinstance(right, int) and \
                left.bit_length() + right.bit_length() > _INT_BITS:
            raise RenderLimitExceeded(f"numbers above {_INT_BITS} bits are not allowed")
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 \
            and abs(left) > 1 and left.bit_length() * right > _INT_BITS:
        raise RenderLimitExceeded(f"numbers above {_INT_BITS} bits are not allowed")
    elif op == "%" and isinstance(left, str):
        _check_printf_widths(left)
    elif op == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
        limits.allow_size(len(left) + len(right))


# Checks that must run before a filter does (the name -> check of its arguments).
def _filter_checks() -> dict[str, Callable[..., None]]:
    def width(value: Any, width: Any = 80, *args: Any, **kwargs: Any) -> None:
        if isinstance(width, int):
            budget().allow_size(_size(value) + width)
        if isinstance(width, str):
            budget().allow_size(_size(value) * (1 + len(width)))

    def indent(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> None:
        lines = str(value).count("\n") + 1
        pad = width if isinstance(width, int) else len(str(width))
        budget().allow_size(len(str(value)) + lines * max(pad, 0))

    def count_arg(value: Any, count: Any = 1, *args: Any, **kwargs: Any) -> None:
        if isinstance(count, int):
            budget().allow_size(count)

    def wordwrap(value: Any, width: Any = 79, break_long_words: Any = True,
                 wrapstring: Any = None, *args: Any, **kwargs: Any) -> None:
        wrap = kwargs.get("wrapstring", wrapstring) or "\n"
        if not isinstance(width, int) or width < 1:
            return
        budget().allow_size(_size(value) * (1 + len(str(wrap)) // width + 1))

    def printf(value: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(value, str):
            _check_printf_widths(value)

    def replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: Any = None) -> None:
        _check_replace(str(value), str(old), str(new), -1 if count is None else count)

    def join(eval_ctx: Any, value: Any, *args: Any, **kwargs: Any) -> None:
        _check_join(list(value) if isinstance(value, (list, tuple, range)) else value)

    return {"center": width, "indent": indent, "batch": count_arg, "slice": count_arg,
            "wordwrap": wordwrap, "format": printf, "replace": replace, "join": join}


def _measured_filter(name: str, fn: Callable[..., Any],
                     check: Callable[..., None] | None) -> Callable[..., Any]:
    @functools.wraps(fn)
    def filtered(*args: Any, **kwargs: Any) -> Any:
        limits = budget()
        limits.step()
        limits.consume(*args, *kwargs.values())
        if check is not None:
            check(*args, **kwargs)
        return limits.charge(fn(*args, **kwargs))

    return filtered


def _finalize(value: Any) -> Any:
    """Values are written as inline placeholders always wrote them (JSON for non-strings)."""
    if isinstance(value, (str, StrictUndefined)):
        return value
    return template_value(value)


def _safe_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise RenderLimitExceeded(f"range() makes at most {MAX_RANGE} numbers")
    budget().step()
    return numbers


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the limits of :mod:`etrans.adapters.jinja.sandbox`."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape, undefined=StrictUndefined,
                         keep_trailing_newline=True, finalize=_finalize, cache_size=0)
        self.globals.pop("lipsum", None)
        self.globals["range"] = _safe_range
        checks = _filter_checks()
        self.filters = {name: _measured_filter(name, fn, checks.get(name))
                        for name, fn in self.filters.items()}

    # -- the hooks of Jinja's sandbox -----------------------------------------------------------

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and callable(value) and attr not in _STR_METHODS:
            return False
        if isinstance(obj, int) and attr in ("to_bytes", "from_bytes"):
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def call_binop(self, context: Context, operator_name: str, left: Any, right: Any) -> Any:
        limits = budget()
        limits.step()
        _check_binop(operator_name, left, right)
        return limits.charge(super().call_binop(context, operator_name, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        limits = budget()
        limits.step()
        owner = getattr(__obj, "__self__", None)
        limits.consume(owner, *args, *kwargs.values())
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name == "replace":
                _check_replace(owner, *args[:3])
            elif name == "join" and args:
                _check_join(list(args[0]) if isinstance(args[0], (range, set)) else args[0])
        return limits.charge(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format_widths(fmt)
            return wrapped(*args, **kwargs)

        return checked

    # -- loops and ``~`` (no hook in Jinja: see instrument()) -----------------------------------

    @staticmethod
    def counted(iterable: Iterable[Any]) -> Iterator[Any]:
        limits = budget()
        for item in iterable:
            limits.step()
            yield item

    @staticmethod
    def measured(value: Any) -> Any:
        return budget().charge(value)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return instrument(super()._parse(source, name, filename))


def instrument(template: nodes.Template) -> nodes.Template:
    """Route every ``for`` through ``environment.counted`` and every ``~`` through
    ``environment.measured`` (in place; answers ``template``)."""
    for loop in template.find_all(nodes.For):
        loop.iter = _call("counted", loop.iter)
    _wrap_concats(template)
    return template


def _call(method: str, node: nodes.Node) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(method), [node], [], None, None,
                      lineno=node.lineno)


def _wrap_concats(node: nodes.Node) -> None:
    for field_name in node.fields:
        value = getattr(node, field_name, None)
        if isinstance(value, nodes.Node):
            _wrap_concats(value)
            if isinstance(value, nodes.Concat):
                setattr(node, field_name, _call("measured", value))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, nodes.Node):
                    _wrap_concats(item)
                    if isinstance(item, nodes.Concat):
                        value[index] = _call("measured", item)


__all__ = ["LimitedSandbox", "Markup", "RenderBudget", "budget", "instrument",
           "render_with"]
