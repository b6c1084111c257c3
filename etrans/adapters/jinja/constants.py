"""Expressions of constants alone that exceed a render limit, found when a template is saved.

``{% for i in range(10**9) %}`` or ``{{ 'a' * 10**9 }}`` fails every render that reaches it,
whatever ``template_data`` holds; without this check such a template was saved (201) and refused
at every send.  The expressions are evaluated with the sandbox's own checks
(:mod:`etrans.adapters.jinja.sandbox`), which refuse *before* computing, so the check refuses
nothing a render would accept, and its own work is bounded.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jinja2 import nodes

from etrans.adapters.jinja.sandbox import (
    _BUDGET,
    LimitedSandbox,
    RenderBudget,
    _check_binop,
    _safe_range,
    _size,
)
from etrans.domain.templates import MAX_VALUE_CHARS, RenderLimitExceeded

if TYPE_CHECKING:
    from collections.abc import Callable

# The operators a constant expression may use here, and what they compute; those the sandbox
# intercepts (``*``, ``**``, ``%``, ``+``) go through its checks first, as in a render.
_CONSTANT_OPERATORS: dict[type[nodes.BinExpr], tuple[str, Callable[[Any, Any], Any]]] = {
    nodes.Add: ("+", operator.add), nodes.Sub: ("-", operator.sub),
    nodes.Mul: ("*", operator.mul), nodes.Pow: ("**", operator.pow),
    nodes.Mod: ("%", operator.mod), nodes.FloorDiv: ("//", operator.floordiv),
}
_CONSTANT_DEPTH = 32
# Values computed by one check in all: what a template can make the check compute is bounded
# (a few milliseconds), and past it the check stops: it refuses less, never more.
_CONSTANT_WORK = 2 * MAX_VALUE_CHARS


class _NotConstant(Exception):
    """The expression depends on the render (a variable, a filter ...) or is not tried here."""


class _WorkDone(Exception):
    """The check computed :data:`_CONSTANT_WORK` characters: it stops there."""


def constant_over_limit(template: nodes.Template) -> tuple[nodes.Node, str] | None:
    """The first expression of ``template`` made of constants alone that exceeds a render limit,
    with the limit's message (``range(10**9)``, ``'a' * 10**9``, ``9 ** (9 ** 9)``), else None.

    Such an expression fails every render that reaches it, whatever ``template_data`` holds:
    it is evaluated here with the very checks a render applies (which refuse *before* computing),
    so nothing a render would accept is refused.  Only literals, ``+ - * ** % //``, unary
    ``-``/``+`` and ``range(...)`` (when the template does not assign the name) count as
    constant, at most :data:`_CONSTANT_DEPTH` levels deep, :data:`_CONSTANT_WORK` characters of
    values in all."""
    check = _ConstantCheck(calls_range=not any(
        name.name == "range" and name.ctx != "load" for name in template.find_all(nodes.Name)))
    token = _BUDGET.set(RenderBudget().start())  # the checks are per value, never cumulative
    try:
        for node in template.find_all((nodes.BinExpr, nodes.Call)):
            try:
                check.value(node, _CONSTANT_DEPTH)
            except RenderLimitExceeded as exc:
                return node, str(exc)
            except _WorkDone:
                return None
            except Exception:  # not constant, or an error the render reports itself
                continue
    finally:
        _BUDGET.reset(token)
    return None


@dataclass
class _ConstantCheck:
    calls_range: bool
    work: int = 0

    def value(self, node: nodes.Node, depth: int) -> Any:
        if depth <= 0:
            raise _NotConstant
        if isinstance(node, nodes.Const) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, (nodes.List, nodes.Tuple)):
            items = [self.value(item, depth - 1) for item in node.items]
            return items if isinstance(node, nodes.List) else tuple(items)
        if isinstance(node, (nodes.Neg, nodes.Pos)):
            number = self.value(node.node, depth - 1)
            if not isinstance(number, (int, float)):
                raise _NotConstant
            return -number if isinstance(node, nodes.Neg) else number
        if isinstance(node, nodes.BinExpr) and type(node) in _CONSTANT_OPERATORS:
            symbol, compute = _CONSTANT_OPERATORS[type(node)]
            left, right = self.value(node.left, depth - 1), self.value(node.right, depth - 1)
            if symbol in LimitedSandbox.intercepted_binops:
                _check_binop(symbol, left, right)
            elif not all(isinstance(v, (int, float)) for v in (left, right)):
                raise _NotConstant
            return self._counted(compute(left, right))
        if (self.calls_range and isinstance(node, nodes.Call)
                and isinstance(node.node, nodes.Name) and node.node.name == "range"
                and not node.kwargs and node.dyn_args is None and node.dyn_kwargs is None):
            args = [self.value(arg, depth - 1) for arg in node.args]
            if not all(isinstance(arg, int) and not isinstance(arg, bool) for arg in args):
                raise _NotConstant
            return _safe_range(*args)
        raise _NotConstant

    def _counted(self, value: Any) -> Any:
        self.work += _size(value) if not isinstance(value, int) else value.bit_length() // 8
        if self.work > _CONSTANT_WORK:
            raise _WorkDone
        return value


__all__ = ["constant_over_limit"]
