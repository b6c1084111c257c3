"""Bad input is a 4xx, whatever its shape: every operation of the API (emails, logs, domains, API
keys, senders, billing) in-process against real PostgreSQL, Redis and MongoDB, with the shapes a
black-box run found answered 5xx - deep JSON, control characters in path, query and body,
timestamps whose offset leaves datetime's range - generated with hypothesis on top of fixed cases.

The requests are drawn from hypothesis strategies first (:func:`_draw`), then sent from one Trio
run: the app's connections belong to the run that opened them.
"""

from __future__ import annotations

import json
import string
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from etrans.api.request_input import MAX_JSON_DEPTH
from etrans.api.schema import Integer, Object, String
from tests.integration.sending_api import SendingApi, email, open_sending_api

if TYPE_CHECKING:
    from collections.abc import Callable

    from etrans.api.routing import Operation

CONTROLS = [chr(c) for c in range(0x20)]
TEXT_CONTROLS = [c for c in CONTROLS if c not in "\t\r\n"]  # refused even in a body's text


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any) -> Any:
    """The sending routes as ``etrans serve`` wires them, plus the account routes (all of
    /openapi.json)."""
    async with open_sending_api(etrans_env, billing_db, all_routes=True,
                                ETRANS_ENABLE_TESTING_ROUTES="true") as built:
        yield built


def _operations(api: SendingApi) -> list[Operation]:
    return list(api.app.extensions["etrans_api"].operations)


def _draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` (at most) examples of ``strategy``, reproducibly."""
    drawn: list[Any] = []

    @seed(20261206)
    @settings(max_examples=count, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn


def _fill(path: str, value: str | None = None) -> str:
    """``path`` with every parameter set to ``value`` (URL-quoted), or to a well-formed id."""
    import re

    well_formed = {"domain_id": "dom_1", "key_id": "key_1", "message_id": "m1",
                   "webhook_id": "wh_1", "template_id": "tpl_1"}
    return re.sub(r"\{(\w+)\}", lambda m: quote(value, safe="") if value is not None
                  else well_formed[m.group(1)], path)


async def _send(api: SendingApi, method: str, path: str, headers: dict[str, str],
                data: bytes | None = None) -> tuple[int, Any]:
    extra = {"Content-Type": "application/json"} if data is not None else {}
    response = await api.client.open(path, method=method, headers={**headers, **extra},
                                     data=data)
    return response.status_code, await response.get_json()


# -- JSON: depth, size, numbers ---------------------------------------------------------------


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


async def test_deep_or_huge_json_is_400_on_every_json_endpoint(api: SendingApi) -> None:
    user = api.user()
    headers = api.bearer(user)
    bodies = [
        _nested(100_000, "array"),  # RecursionError in the decoder: was a 500
        _nested(100_000, "object"),
        _nested(MAX_JSON_DEPTH + 1, "array"),
        b'{"emails": ' + _nested(MAX_JSON_DEPTH + 5, "array") + b"}",
        b"[" + b"[]," * 100_001 + b"[]]",  # too many containers, each shallow
        b'{"domain": NaN}', b'{"domain": Infinity}', b'{"domain_id": 1e999}',
        b'{"domain_id": -Infinity, "pack_code": "x"}',
    ]
    json_operations = [op for op in _operations(api) if op.body is not None]
    assert len(json_operations) >= 8
    for op in json_operations:
        for body in bodies:
            status, answer = await _send(api, op.method, _fill(op.path), headers, body)
            assert status == 400, (op.method, op.path, body[:60], answer)
            assert answer["detail"][0]["type"] == "json_invalid", answer
    # Depth up to the limit is accepted by the decoder (the schema then decides).
    status, answer = await _send(api, "POST", "/domains", headers,
                                 b'{"domain": ' + _nested(MAX_JSON_DEPTH - 1, "array") + b"}")
    assert status == 400
    assert answer["detail"][0]["type"] == "string_type"
    # Brackets inside strings are text, not nesting.
    status, answer = await _send(api, "POST", "/api-keys", headers,
                                 json.dumps({"name": "[{" * 100}).encode())
    assert status == 200, answer


async def test_generated_deep_json_is_400(api: SendingApi) -> None:
    user = api.user()
    headers = api.bearer(user)
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))

    def deepen(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(st.lists(inner, min_size=1, max_size=2),
                         st.dictionaries(st.text(max_size=3), inner, min_size=1, max_size=2))

    too_deep = st.integers(MAX_JSON_DEPTH + 1, 500).flatmap(
        lambda depth: st.lists(st.sampled_from(["list", "dict"]), min_size=depth,
                               max_size=depth)).map(_wrap)
    shapes = _draw(st.tuples(too_deep, st.recursive(leaf, deepen, max_leaves=8)), 40)
    operations = [op for op in _operations(api) if op.body is not None]
    for index, (deep, sibling) in enumerate(shapes):
        op = operations[index % len(operations)]
        body = json.dumps({"x": sibling, "deep": deep}).encode()
        status, answer = await _send(api, op.method, _fill(op.path), headers, body)
        assert status == 400, (op.path, body[:80], answer)
        assert answer["detail"][0]["type"] == "json_invalid"


async def test_a_key_given_twice_is_400_on_every_json_endpoint(api: SendingApi) -> None:
    """Decoders disagree on ``{"to": [a], "to": [b]}`` (Python keeps the last, many keep the
    first): a proxy or the client's own check would see ``a`` while etrans sent to ``b``."""
    user, _, domain = api.sender(daily=None, hourly=None)
    headers = api.bearer(user)
    twice = (b'{"from": "noreply@' + domain.encode() + b'", "to": ["seen@example.org"], '
             b'"subject": "s", "text": "t", "to": ["other@example.org"]}')
    status, answer = await _send(api, "POST", "/emails", headers, twice)
    assert status == 400, answer  # was 200, sent to other@example.org only
    assert answer["detail"] == [{"loc": ["body"], "type": "json_invalid",
                                 "msg": "Invalid JSON: duplicate key 'to' in an object"}]
    nested = json.dumps(email(domain, template_data={"n": {"a": 1}})).encode().replace(
        b'{"a": 1}', b'{"a": 1, "a": 2}')
    bodies = [nested, b'{"emails": [{"a": 1, "b": 2, "a": 3}]}', b'{"x": {}, "x": {}}',
              b'{"name": "k", "name": "k"}']
    for op in (op for op in _operations(api) if op.body is not None):
        for body in bodies:
            status, answer = await _send(api, op.method, _fill(op.path), headers, body)
            assert status == 400, (op.method, op.path, body[:60], answer)
            assert answer["detail"][0]["type"] == "json_invalid", answer
            assert "duplicate key" in answer["detail"][0]["msg"], answer
    # The same key in different objects is fine.
    body = email(domain, template_data={"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]})
    status, answer = await _send(api, "POST", "/emails", headers, json.dumps(body).encode())
    assert status == 200, answer


async def test_a_body_that_is_not_utf8_is_400_on_every_json_endpoint(api: SendingApi) -> None:
    """json.loads(bytes) read UTF-16 and UTF-32 too, and decoded with "surrogatepass": a
    surrogate in a UTF-16 body, or written as bytes (ED A0 80), passed the lone-surrogate check
    and POST /emails answered 500 when it encoded the email."""
    user, _, domain = api.sender(daily=None, hourly=None)
    headers = api.bearer(user)
    body = json.dumps(email(domain, subject="a\ud800b"))
    bodies = [body.encode("utf-16"), body.encode("utf-32"),
              json.dumps(email(domain)).encode("utf-16-le"),
              json.dumps(email(domain, subject="a-b")).encode().replace(b"a-b", b"a\xed\xa0\x80b"),
              b'{"name": "\xff"}']
    for op in (op for op in _operations(api) if op.body is not None):
        for raw in bodies:
            status, answer = await _send(api, op.method, _fill(op.path), headers, raw)
            assert status == 400, (op.method, op.path, raw[:40], answer)
            assert answer["detail"][0]["type"] == "json_invalid", answer
    # UTF-8, with or without a byte order mark, is read.
    for raw in (json.dumps(email(domain)).encode(), b"\xef\xbb\xbf" + json.dumps(
            email(domain, subject="caf\u00e9")).encode()):
        status, answer = await _send(api, "POST", "/emails", headers, raw)
        assert status == 200, answer


def _wrap(kinds: list[str]) -> Any:
    value: Any = 0
    for kind in kinds:
        value = [value] if kind == "list" else {"k": value}
    return value


# -- control characters: path, query, body ------------------------------------------------------


async def test_control_characters_in_path_parameters_are_400(api: SendingApi) -> None:
    user = api.user()
    headers = api.bearer(user)
    with_path = [op for op in _operations(api) if "{" in op.path]
    assert len(with_path) >= 9
    values = _draw(st.builds(lambda a, c, b: a + c + b, st.text(string.ascii_letters, max_size=8),
                             st.sampled_from(CONTROLS), st.text(max_size=8)), 30)
    cases = [(with_path[i % len(with_path)], value) for i, value in enumerate(values)]
    cases += [(op, value) for op in with_path
              for value in ("\x00", "m1\x00", "dom_1\x00", "\x01", "\x1f", "x" * 1025)]
    for op, value in cases:
        path = _fill(op.path, value)
        status, answer = await _send(api, op.method, path, headers,
                                     b"{}" if op.body is not None else None)
        assert status == 400, (op.method, path, answer)
        assert answer["detail"][0]["loc"][0] == "path", answer
    # "²".isdigit() is true but int() refuses it: the billing path id was a 500.
    status, _ = await _send(api, "GET", "/billing/payg/subscriptions/%C2%B2", headers)
    assert status == 400


async def test_control_characters_in_query_values_are_400(api: SendingApi) -> None:
    user = api.user()
    headers = api.bearer(user)
    strings = [(op, name) for op in _operations(api) for name, param in op.query.items()
               if isinstance(param.spec, String)]
    assert len(strings) >= 10
    values = _draw(st.builds(lambda a, c, b: a + c + b, st.text(max_size=6),
                             st.sampled_from(CONTROLS), st.text(max_size=6)), 40)
    for index, value in enumerate(values):
        op, name = strings[index % len(strings)]
        status, answer = await _send(api, op.method, f"{op.path}?{name}={quote(value)}", headers)
        assert status == 400, (op.path, name, value, answer)
        assert answer["detail"][0]["loc"] == ["query", name], answer


async def test_integer_query_values_are_ascii_digits(api: SendingApi) -> None:
    """int() read page=1_0 as 10 and page=U+0661 (Arabic-Indic) or U+FF11 (fullwidth) as 1."""
    user = api.user()
    headers = api.bearer(user)
    integers = [(op, name) for op in _operations(api) for name, param in op.query.items()
                if isinstance(param.spec, Integer)]
    assert len(integers) >= 10
    for op, name in integers:
        for value in ("1_0", "\u0661", "\uff11", "\u00b2", "1.0", "0x1", "1e1", "", "9" * 5000):
            status, answer = await _send(api, op.method, f"{op.path}?{name}={quote(value)}",
                                         headers)
            assert status == 400, (op.path, name, value, answer)
            assert answer["detail"][0]["loc"] == ["query", name], answer
            assert answer["detail"][0]["type"] == "int_parsing", answer
    for value, page in (("2", 2), ("+2", 2), (" 3 ", 3)):
        status, answer = await _send(api, "GET", f"/emails?page={quote(value)}", headers)
        assert (status, answer["page"]) == (200, page), answer


def _string_leaves(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, str):
        return [at]
    if isinstance(value, list):
        return [loc for i, item in enumerate(value) for loc in _string_leaves(item, (*at, i))]
    if isinstance(value, dict):
        return [loc for k, item in value.items() for loc in _string_leaves(item, (*at, k))]
    return []


def _put(value: Any, at: tuple[Any, ...], leaf: Callable[[str], str]) -> Any:
    if not at:
        return leaf(value)
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[at[0]] = _put(value[at[0]], at[1:], leaf)
    return copy


def _valid_bodies(domain: str) -> dict[str, Any]:
    full = email(domain, text="plain", cc=[f"cc@{domain}"], bcc=["b@example.org"],
                 reply_to=f"Reply <r@{domain}>", headers={"X-Campaign": "spring"},
                 tags=[{"name": "kind", "value": "welcome"}],
                 attachments=[{"filename": "a.txt", "content": "aGk=",
                               "content_type": "text/plain"}],
                 template_data={"name": "Ann", "more": {"list": ["x"]}})
    return {
        "/emails": full,
        "/domains": {"domain": "new-domain.example"},
        "/api-keys": {"name": "a key", "permission": "read_only"},
        "/senders": {"account": f"s@{domain}", "domain": domain, "password": "long enough pw"},
        "/billing/subscription/subs": {"pack_code": "FREE", "domain_id": 1},
        "/testing/set-pack": {"pack_code": "FREE"},
    }


def _free_text(at: tuple[Any, ...]) -> bool:
    """Where TAB, CR and LF are allowed: the bodies and template values of an email."""
    return bool(at) and at[0] in ("html", "text", "template_data")


async def test_control_characters_anywhere_in_a_body_are_400(api: SendingApi) -> None:
    user, _, domain = api.sender(daily=None, hourly=None)
    headers = api.bearer(user)
    bodies = _valid_bodies(domain)
    for path in bodies:
        assert any(op.path == path and isinstance(op.body, Object) for op in _operations(api))
    cases = [(path, at) for path, body in bodies.items() for at in _string_leaves(body)]
    assert len(cases) >= 20

    def inject(case: tuple[str, tuple[Any, ...]]) -> st.SearchStrategy[Any]:
        path, at = case
        controls = TEXT_CONTROLS if _free_text(at) else CONTROLS
        return st.tuples(st.just(path), st.just(at), st.sampled_from(controls),
                         st.integers(0, 20))

    drawn = _draw(st.sampled_from(cases).flatmap(inject), 80)
    drawn += [(path, at, "\x00", 0) for path, at in cases]  # every string at least once
    for path, at, control, position in drawn:
        body = _put(bodies[path], at, lambda s, c=control, p=position: s[:p] + c + s[p:])
        status, answer = await _send(api, "POST", path, headers, json.dumps(body).encode())
        assert status == 400, (path, at, repr(control), answer)
        assert "control characters" in json.dumps(answer), answer
    # Batch items are validated one by one: the item fails, the request does not.
    item = email(domain, subject="a\x00b")
    status, answer = await _send(api, "POST", "/emails/batch", headers,
                                 json.dumps({"emails": [item, email(domain)]}).encode())
    assert status == 200, answer
    assert [e["index"] for e in answer["errors"]] == [0]
    assert "control characters" in answer["errors"][0]["error"]
    assert len(answer["data"]) == 1
    # TAB, CR and LF stay allowed in an email's text and html.
    body = email(domain, text="line 1\r\n\tline 2\n", html="<p>\ta\r\nb</p>")
    status, answer = await _send(api, "POST", "/emails", headers, json.dumps(body).encode())
    assert status == 200, answer


async def test_one_bad_send_among_50_good_ones_does_not_split_their_rounds(api: SendingApi) -> None:
    # A NUL used to reach the group commit and make its round fall back to one statement per
    # caller; now it is refused at the schema and the good sends share their rounds untouched.
    user, _, domain = api.sender(daily=None, hourly=None)
    headers = api.bearer(user)
    statuses: dict[int, int] = {}

    async def send(index: int) -> None:
        body = email(domain, subject="bad \x00" if index == 25 else f"good {index}")
        status, _ = await _send(api, "POST", "/emails", headers, json.dumps(body).encode())
        statuses[index] = status

    import trio

    stats = api.stores.usend_repo.statistics()["group_commit"]
    before = (stats.rounds, stats.statements)
    async with trio.open_nursery() as nursery:
        for index in range(51):
            nursery.start_soon(send, index)
    assert statuses.pop(25) == 400
    assert set(statuses.values()) == {200}
    assert stats.split_rounds == 0
    assert stats.statements - before[1] == stats.rounds - before[0]  # one statement per round


# -- timestamps -------------------------------------------------------------------------------


async def test_out_of_range_and_generated_timestamps_are_never_5xx(api: SendingApi) -> None:
    user = api.user()
    headers = api.bearer(user)
    filters = [("/emails", "created_at_from"), ("/emails", "created_at_to"),
               ("/logs", "log_before"), ("/logs", "log_after")]
    overflow = ["0001-01-01T00:00:00+01:00", "0001-01-01T00:30:00+00:31",
                "9999-12-31T23:59:59-01:00", "9999-12-31T23:00:00-23:59"]
    for path, name in filters:
        for value in overflow:
            status, answer = await _send(api, "GET", f"{path}?{name}={quote(value)}", headers)
            assert status == 400, (path, name, value, answer)
            assert answer["detail"][0]["loc"] == ["query", name]
    offsets = st.builds(lambda sign, h, m: f"{sign}{h:02d}:{m:02d}", st.sampled_from("+-"),
                        st.integers(0, 23), st.integers(0, 59))
    moments = st.builds(lambda d, off: d.isoformat() + off, st.datetimes(), offsets | st.just(""))
    values = _draw(moments | st.text(max_size=30), 60)
    for index, value in enumerate(values):
        path, name = filters[index % len(filters)]
        status, answer = await _send(api, "GET", f"{path}?{name}={quote(value)}", headers)
        assert status in (200, 400), (path, name, value, answer)
    status, answer = await _send(api, "GET", "/emails?created_at_from=2026-01-01T00:00:00%2B01:00",
                                 headers)
    assert status == 200, answer
