"""The template engine (:mod:`etrans.adapters.jinja.engine`), without services: inline
placeholders keep their results from before templates (escaping, JSON values, verbatim text),
stored templates render strictly with html escaped and text not, syntax errors name part, line
and column, and the limits refuse what could read the server's state, hang or exhaust memory."""

from __future__ import annotations

from typing import Any

import pytest

from etrans.adapters.jinja.engine import JinjaTemplateEngine, compiled
from etrans.domain.templates import (
    MissingTemplateValue,
    RenderLimitExceeded,
    TemplateProblem,
    TemplateSyntaxProblem,
)

ENGINE = JinjaTemplateEngine()


def _inline(email: dict[str, Any]) -> dict[str, Any]:
    data = email["template_data"]
    return {part: ENGINE.render_inline(email[part], data, part) if email.get(part) else None
            for part in ("subject", "html", "text")}


def test_inline_placeholders_give_the_results_of_before() -> None:
    # The assertions of the former domain test of render_templates, unchanged.
    rendered = _inline({"subject": "Hi {{name}}", "html": "<b>{{ name }}</b>", "text": "{{ n }}",
                        "template_data": {"name": "<A>", "n": 3}})
    assert (rendered["subject"], rendered["html"], rendered["text"]) == \
        ("Hi <A>", "<b>&lt;A&gt;</b>", "3")
    with pytest.raises(TemplateProblem, match="no value"):
        _inline({"html": "{{ x }}", "template_data": {"y": 1}})
    # Quotes as html.escape writes them, JSON values, names with dots and dashes, CRLF and the
    # last line break kept, any other Jinja syntax verbatim.
    data = {"q": "\"it's\"", "a.b-c": True, "none": None, "list": [1, "x"]}
    assert ENGINE.render_inline("{{ q }}{{a.b-c}} {{ none }} {{ list }}\r\n", data, "html") == \
        "&quot;it&#x27;s&quot;true null [1, &quot;x&quot;]\r\n"
    assert ENGINE.render_inline("{{ q }} {% if %}{# x #}{{ q|upper }}{{ list }}\n", data,
                                "text") == "\"it's\" {% if %}{# x #}{{ q|upper }}[1, \"x\"]\n"
    with pytest.raises(MissingTemplateValue) as missing:
        ENGINE.render_inline("a {{ gone }}", {}, "subject")
    assert str(missing.value) == "template_data has no value for {{ gone }} in subject"


def test_inline_texts_are_a_linear_copy_up_to_the_email_size() -> None:
    """A text of 3,000,000 characters with a placeholder was refused (one value over the
    stored templates' 2,000,000), and 90,000 placeholders ran into their 100,000 steps: a
    sandboxed call per piece (~10 us), which also held the event loop 0.5 s per part."""
    big = "x" * 3_000_000 + " {{ name }}"
    assert ENGINE.render_inline(big, {"name": "Ann"}, "html") == "x" * 3_000_000 + " Ann"
    many = "<p>{{ a }}</p>" * 90_000
    assert ENGINE.render_inline(many, {"a": "<&>"}, "html") == "<p>&lt;&amp;&gt;</p>" * 90_000
    with pytest.raises(RenderLimitExceeded, match=r"^text: more than 100000 placeholders$"):
        ENGINE.render_inline("{{a}}" * 100_001, {"a": ""}, "text")
    with pytest.raises(RenderLimitExceeded,
                       match=r"^text: the rendered text is over 26214400 characters$"):
        ENGINE.render_inline("{{a}}" * 30, {"a": "x" * 1_000_000}, "text")
    # The missing value is named even after others were filled.
    with pytest.raises(MissingTemplateValue, match=r"no value for \{\{ b \}\} in text"):
        ENGINE.render_inline("{{a}}" * 1000 + "{{ b }}", {"a": 1}, "text")


async def test_stored_templates_escape_html_only_and_are_strict() -> None:
    parts = {"subject": "Hi {{ name }}", "html": "<p>{{ name }} {{ flag }} {{ n }}</p>",
             "text": "{{ name }} {{ n|default('none') }}\n"}
    assert await ENGINE.check(parts) == ("flag", "n", "name")
    out = await ENGINE.render(parts, {"name": "<A&'\">", "flag": True, "n": None})
    assert out.subject == "Hi <A&'\">"
    assert out.html == "<p>&lt;A&amp;&#39;&#34;&gt; true null</p>"
    assert out.text == "<A&'\"> null\n"
    with pytest.raises(MissingTemplateValue) as missing:
        await ENGINE.render(parts, {"name": "x"})
    assert str(missing.value) == "template_data has no value for 'flag' (used in html)"
    assert (await ENGINE.render({"subject": "s", "text": "{{ n|default('-') }}"}, {})).text == "-"


@pytest.mark.parametrize(("source", "line", "column"), [
    ("{{ x ", 1, 1), ("ok\n  {{ a + }} {{ b }}", 2, 3), ("{% if x %}", 1, 1),
    ("a\nb\n{% for %}", 3, 1), ("{% include 'x' %}", 1, 1),
])
async def test_syntax_errors_name_part_line_and_column(source: str, line: int,
                                                       column: int) -> None:
    with pytest.raises(TemplateSyntaxProblem) as problem:
        await ENGINE.check({"subject": "s", "html": source})
    assert (problem.value.part, problem.value.line, problem.value.column) == ("html", line, column)
    assert str(problem.value).startswith(f"html: syntax error at line {line}, column {column}: ")


@pytest.mark.parametrize(("source", "message"), [
    ("{{ ''.__class__ }}", "not allowed in a template"),
    ("{{ cycler.__init__.__globals__ }}", "not allowed in a template"),
    ("{{ 'x'.ljust(10**9) }}", "not allowed in a template"),
    ("{{ 'a'.translate({97: 'b'}) }}", "not allowed in a template"),
    ("{{ (1).to_bytes(10**9, 'big') }}", "not allowed in a template"),
    ("{{ lipsum(10**9) }}", "no value for 'lipsum'"),
    ("{% for i in range(10**9) %}{% endfor %}", "range() makes at most"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
     "steps"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recurses too deeply"),
    ("{% block b %}{{ self.b() }}{% endblock %}", "recurses too deeply"),
    ("{{ 'a' * 10**9 }}", "value of 1000000000"),
    ("{{ 9 ** (9 ** 9) }}", "4096 bits"),
    ("{% set ns = namespace(s='a' * 1000000) %}{% for i in range(40) %}"
     "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "value of 4000000"),
    ("{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% endif %}{% endmacro %}"
     "{{ f('a' * 1000000, 30) }}", "value of 4000000"),
    ("{{ '{:>999999999}'.format(1) }}", "format widths"),
    ("{{ '%0999999999d' % 1 }}", "format widths"),
    ("{{ 'x'|center(1000000000) }}", "value of 1000000001"),
    ("{{ ('a' * 1000000)|replace('a', 'aaaaaaaaaa') }}", "value of 10000000"),
    ("{{ [1]|batch(10**9, 'x')|list }}", "value of 1000000000"),
    ("{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}", "over 2000000 characters"),
    ("{% set big = 'a' * 1000000 %}{% for i in range(1000) %}{{ big|length }}{% endfor %}",
     "characters of values"),
    # Slow filters over large values: the work budget or the clock, whichever comes first.
    ("{% set big = 'a b ' * 400000 %}{% for i in range(1000) %}{{ big|wordcount }}{% endfor %}",
     "the template "),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
])
async def test_limits_refuse_what_could_leak_or_hang(source: str, message: str) -> None:
    with pytest.raises(TemplateProblem) as problem:
        await ENGINE.render({"subject": "s", "html": source}, {})
    assert message in str(problem.value)
    assert str(problem.value).startswith("html: ") or "(used in html)" in str(problem.value)
    assert "0x" not in str(problem.value).replace("0x…", "")


@pytest.mark.parametrize(("source", "name", "line"), [
    ("{{ ''.__class__ }}", "__class__", 1),
    ("Hi\n{{ cycler.__init__.__globals__ }}", "__globals__", 2),
    ("{{ x['__globals__'] }}", "__globals__", 1),
    ("{{ x|attr('__class__') }}", "__class__", 1),
    ("{% for k in x._private %}{% endfor %}", "_private", 1),
])
async def test_private_names_are_refused_when_saved(source: str, name: str, line: int) -> None:
    """Refused when the template is saved, with its line, not only when it is sent."""
    with pytest.raises(TemplateSyntaxProblem) as problem:
        await ENGINE.check({"subject": "s", "html": source})
    assert (problem.value.part, problem.value.line) == ("html", line)
    assert f"'{name}' is not allowed in a template" in str(problem.value)


@pytest.mark.parametrize(("source", "line", "message"), [
    ("{% for i in range(10**9) %}{% endfor %}", 1, "range() makes at most 10000 numbers"),
    ("a\n{{ range(1, 20002, 2)|list }}", 2, "range() makes at most"),
    ("{% if false %}{{ range(-1, 10**5) }}{% endif %}", 1, "range() makes at most"),
    ("{{ 'a' * 10**9 }}", 1, "value of 1000000000"),
    ("{{ [1, 2] * (10**7) }}", 1, "value of 20000000"),
    ("{{ (('ab' * 1000) * 1000) * 3 }}", 1, "value of 6000000"),
    ("{{ 9 ** (9 ** 9) }}", 1, "4096 bits"),
    ("{{ -(2 ** 4097) }}", 1, "4096 bits"),
    ("{{ '%0999999999d' % 1 }}", 1, "format widths"),
])
async def test_constants_over_a_render_limit_are_refused_when_saved(
        source: str, line: int, message: str) -> None:
    """An expression of constants alone fails every render that reaches it: refused when the
    template is saved (it was saved, and refused at every send)."""
    with pytest.raises(TemplateSyntaxProblem) as problem:
        await ENGINE.check({"subject": "s", "html": source})
    assert (problem.value.part, problem.value.line) == ("html", line)
    assert str(problem.value).startswith(f"html: render limit at line {line}, column ")
    assert message in str(problem.value)


@pytest.mark.parametrize("source", [
    "{{ range(10000)|length }}", "{{ 'a' * 10**6 }}", "{{ x * 10**9 }}",
    "{{ range(n * 10**9) }}", "{% set range = x %}{{ range(10**9) }}",
    "{% macro m(range) %}{{ range(10**9) }}{% endmacro %}", "{{ range(0, 10**9, 10**6) }}",
    "{{ 9**9**9 }}",  # Jinja's ** is left-associative: (9**9)**9, 257 bits
    "{{ 1 / 0 }}", "{{ 2.0 ** 10**9 }}", "{{ range(10**9, 0) }}",
])
async def test_what_depends_on_the_data_or_fits_is_saved(source: str) -> None:
    await ENGINE.check({"subject": "s", "html": source})


async def test_names_with_an_inner_underscore_are_fine() -> None:
    assert await ENGINE.check({"subject": "{{ user.first_name }}", "html": "{{ x['a_b'] }}"}) \
        == ("user", "x")


async def test_deep_nesting_is_refused_when_saved() -> None:
    with pytest.raises(TemplateProblem, match="nested too deeply"):
        await ENGINE.check({"subject": "s", "html": "{{" + "(" * 3000 + "1" + ")" * 3000 + "}}"})


async def test_compiled_templates_are_cached() -> None:
    parts = {"subject": "cached {{ n }}", "text": "t {{ n }}"}
    await ENGINE.render(parts, {"n": 1})
    before = compiled.cache_info().hits
    assert (await ENGINE.render(parts, {"n": 2})).subject == "cached 2"
    assert compiled.cache_info().hits == before + 2


def test_a_render_outside_its_budget_is_refused() -> None:
    template = compiled("{{ 'a' * 2 }}", "text").template
    with pytest.raises(RenderLimitExceeded):
        template.render()
