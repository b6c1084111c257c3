"""/templates and sending by template against PostgreSQL, Redis and the real API (every route of
``etrans serve``): create / list / get / update / delete / render, syntax errors with line and
column, variables, permissions, tenant isolation, POST /emails and /emails/batch with
``template_id`` (rendered before the row and its Kafka record are stored), and hostile input:
the classic server-side template injection payloads are a 400, never a 5xx, never a leak."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from etrans.adapters.sql.usend import EmailOutbox
from tests.integration.sending_api import SendingApi, email, open_sending_api

OUTBOX = EmailOutbox.__table__
WELCOME = {"name": "Welcome", "subject": "Hi {{ name }}",
           "html": "<p>Hello {{ name }}, {% for item in items %}<b>{{ item }}</b>{% endfor %}</p>",
           "text": "Hello {{ name }}: {{ items|join(', ') }}"}


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db, all_routes=True) as api:
        yield api


async def _create(api: SendingApi, user: int, body: dict[str, Any] | None = None,
                  expected: int = 201) -> dict[str, Any]:
    status, created = await api.call("POST", "/templates", api.bearer(user), json=body or WELCOME)
    assert status == expected, created
    return dict(created)


def _outbox_payload(api: SendingApi, message_id: str) -> dict[str, Any]:
    with api.usend.engine.connect() as conn:
        row = conn.execute(select(OUTBOX.c.payload)
                           .where(OUTBOX.c.message_id == message_id)).one()
    return dict(json.loads(bytes(row.payload))["payload"])


async def test_create_list_get_update_render_delete(api: SendingApi) -> None:
    user = api.user()
    auth = api.bearer(user)
    created = await _create(api, user)
    assert created["id"].startswith("tpl_")
    assert created["variables"] == ["items", "name"]
    assert (created["name"], created["subject"], created["html"], created["text"]) == (
        WELCOME["name"], WELCOME["subject"], WELCOME["html"], WELCOME["text"])
    other = await _create(api, user, {"name": "Receipt", "subject": "Receipt", "text": "Paid"})
    assert other["variables"] == []

    status, page = await api.call("GET", "/templates?per_page=1", auth)
    assert status == 200, page
    assert (page["total"], page["page"], page["per_page"]) == (2, 1, 1)
    assert [t["id"] for t in page["data"]] == [other["id"]]  # newest first
    status, found = await api.call("GET", "/templates?search=WELC", auth)
    assert [t["id"] for t in found["data"]] == [created["id"]]
    status, got = await api.call("GET", f"/templates/{created['id']}", auth)
    assert (status, got) == (200, created)

    status, preview = await api.call("POST", f"/templates/{created['id']}/render", auth,
                                     json={"template_data": {"name": "<Ann & Bo>",
                                                             "items": ["a<b", 2]}})
    assert status == 200, preview
    assert preview == {"subject": "Hi <Ann & Bo>",
                       "html": "<p>Hello &lt;Ann &amp; Bo&gt;, <b>a&lt;b</b><b>2</b></p>",
                       "text": "Hello <Ann & Bo>: a<b, 2"}

    status, changed = await api.call("PATCH", f"/templates/{created['id']}", auth,
                                     json={"subject": "Welcome {{ first }}", "text": ""})
    assert status == 200, changed
    assert (changed["subject"], changed["text"], changed["html"]) == (
        "Welcome {{ first }}", None, WELCOME["html"])
    assert changed["variables"] == ["first", "items", "name"]
    status, body = await api.call("DELETE", f"/templates/{created['id']}", auth)
    assert (status, body) == (204, None)
    for method, path in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/render")):
        status, body = await api.call(method, f"/templates/{created['id']}{path}", auth,
                                      json={} if method in ("PATCH", "POST") else None)
        assert status == 404, (method, body)


async def test_syntax_errors_are_400_with_part_line_and_column(api: SendingApi) -> None:
    user = api.user()
    status, body = await api.call("POST", "/templates", api.bearer(user), json={
        "name": "broken", "subject": "ok", "html": "<p>\n  <b>{{ name + }}</b>\n</p>"})
    assert status == 400
    assert body["detail"].startswith("html: syntax error at line 2, column 6: "), body
    status, body = await api.call("POST", "/templates", api.bearer(user), json={
        "name": "unclosed", "subject": "ok", "text": "{% if x %}never closed"})
    assert status == 400
    assert "text: syntax error at line 1, column 1" in body["detail"]
    created = await _create(api, user)
    status, body = await api.call("PATCH", f"/templates/{created['id']}", api.bearer(user),
                                  json={"subject": "{{ }}"})
    assert status == 400
    assert body["detail"].startswith("subject: syntax error at line 1"), body
    status, body = await api.call("POST", "/templates", api.bearer(user),
                                  json={"name": "x", "subject": "s"})
    assert (status, body["detail"]) == (400, "At least one of html or text is required")
    status, page = await api.call("GET", "/templates", api.bearer(user))
    assert page["total"] == 1


async def test_constants_over_a_render_limit_are_400_when_saved(api: SendingApi) -> None:
    """``range(10**9)`` was saved (201) and refused at every send."""
    user = api.user()
    status, body = await api.call("POST", "/templates", api.bearer(user), json={
        "name": "huge", "subject": "ok",
        "text": "Hello\n{% for i in range(10**9) %}x{% endfor %}"})
    assert status == 400, body
    assert body["detail"] == ("text: render limit at line 2, column 1: range() makes at most "
                              "10000 numbers, whatever template_data holds (an expression of "
                              "constants)")
    created = await _create(api, user)
    status, body = await api.call("PATCH", f"/templates/{created['id']}", api.bearer(user),
                                  json={"subject": "{{ 'a' * 10**9 }}"})
    assert status == 400, body
    assert body["detail"].startswith("subject: render limit at line 1, column 1: "), body
    status, page = await api.call("GET", "/templates", api.bearer(user))
    assert page["total"] == 1


async def test_read_only_reads_and_previews_full_access_writes(api: SendingApi) -> None:
    user = api.user()
    created = await _create(api, user)
    path = f"/templates/{created['id']}"
    for level in ("read_only", "sending_access"):
        key = {"X-API-KEY": api.api_key(user, level)[0]}
        assert (await api.call("GET", "/templates", key))[0] == 200
        assert (await api.call("GET", path, key))[0] == 200
        status, _ = await api.call("POST", f"{path}/render", key,
                                   json={"template_data": {"name": "a", "items": []}})
        assert status == 200
        assert (await api.call("POST", "/templates", key, json=WELCOME))[0] == 403
        assert (await api.call("PATCH", path, key, json={"name": "x"}))[0] == 403
        assert (await api.call("DELETE", path, key))[0] == 403
    full = {"X-API-KEY": api.api_key(user, "full_access")[0]}
    assert (await api.call("PATCH", path, full, json={"name": "x"}))[0] == 200
    status, doc = await api.call("GET", "/openapi.json")
    assert status == 200
    ops = doc["paths"]
    assert (ops["/templates"]["get"]["x-permission"], ops["/templates"]["post"]["x-permission"],
            ops["/templates/{template_id}"]["patch"]["x-permission"],
            ops["/templates/{template_id}"]["delete"]["x-permission"],
            ops["/templates/{template_id}/render"]["post"]["x-permission"]) == (
        "read_only", "full_access", "full_access", "full_access", "read_only")


async def test_another_users_template_is_404_and_cannot_be_sent(api: SendingApi) -> None:
    owner = api.user()
    created = await _create(api, owner)
    intruder, _, domain = api.sender()
    auth = api.bearer(intruder)
    for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/render")):
        status, _ = await api.call(method, f"/templates/{created['id']}{suffix}", auth,
                                   json={} if method in ("PATCH", "POST") else None)
        assert status == 404
    status, page = await api.call("GET", "/templates", auth)
    assert page["total"] == 0
    status, body = await api.call("POST", "/emails", auth, json=email(
        domain, subject=None, html=None, template_id=created["id"],
        template_data={"name": "x", "items": []}))
    assert status == 400
    assert body["detail"] == f"template_id {created['id']!r}: template not found"
    for bad in ("tpl_0", "tpl_x", "12", "tpl_99999999999999999999"):
        assert (await api.call("GET", f"/templates/{bad}", auth))[0] == 400


async def test_send_by_template_renders_before_storing_and_publishing(api: SendingApi) -> None:
    user, _, domain = api.sender()
    auth = api.bearer(user)
    created = await _create(api, user)
    data = {"name": "<Ann>", "items": ["x&y"]}
    status, sent = await api.call("POST", "/emails", auth, json=email(
        domain, subject=None, html=None, template_id=created["id"], template_data=data))
    assert status == 200, sent
    status, detail = await api.call("GET", f"/emails/{sent['id']}", auth)
    assert (detail["subject"], detail["html"], detail["text"]) == (
        "Hi <Ann>", "<p>Hello &lt;Ann&gt;, <b>x&amp;y</b></p>", "Hello <Ann>: x&y")
    assert (detail["template_id"], detail["template_data"]) == (created["id"], data)
    payload = _outbox_payload(api, sent["id"])
    assert (payload["subject"], payload["body"], payload["text"]) == (
        detail["subject"], detail["html"], detail["text"])

    # The request's own parts win (rendered with the inline rules), the others come from it.
    status, sent = await api.call("POST", "/emails", auth, json=email(
        domain, subject="Own {{ name }}", html=None, template_id=created["id"],
        template_data=data))
    assert status == 200, sent
    status, detail = await api.call("GET", f"/emails/{sent['id']}", auth)
    assert (detail["subject"], detail["html"]) == ("Own <Ann>",
                                                   "<p>Hello &lt;Ann&gt;, <b>x&amp;y</b></p>")

    # Strict: a missing variable is a 400 naming it; nothing is stored.
    status, body = await api.call("POST", "/emails", auth, json=email(
        domain, subject=None, html=None, template_id=created["id"],
        template_data={"name": "a"}))
    assert status == 400
    assert body["detail"] == "template_data has no value for 'items' (used in html)"
    # A deleted template: 400 naming the id.
    assert (await api.call("DELETE", f"/templates/{created['id']}", auth))[0] == 204
    status, body = await api.call("POST", "/emails", auth, json=email(
        domain, subject=None, template_id=created["id"], template_data=data))
    assert (status, body["detail"]) == (400, f"template_id {created['id']!r}: template not found")
    status, body = await api.call("POST", "/emails", auth, json=email(domain, subject=None))
    assert status == 400
    assert "subject" in body["detail"]


async def test_a_change_is_used_by_the_next_send_in_every_process(
        api: SendingApi, etrans_env: Any, billing_db: Any) -> None:
    """Two API processes on one USEND DB: a template changed (or deleted) through one is what
    the next send through the other renders (no process keeps a stale template)."""
    user, _, domain = api.sender()
    auth = api.bearer(user)
    created = await _create(api, user)
    data = {"name": "Ann", "items": ["x"]}
    by_template = email(domain, subject=None, html=None, template_id=created["id"],
                        template_data=data)
    async with open_sending_api(etrans_env, billing_db, all_routes=True) as other:
        for _ in range(3):  # whatever a send may keep of the template, it has it now
            status, sent = await api.call("POST", "/emails", auth, json=by_template)
            assert status == 200, sent
        status, _ = await other.call("PATCH", f"/templates/{created['id']}", auth,
                                     json={"subject": "Changed {{ name }}", "text": "T {{ name }}"})
        assert status == 200
        status, sent = await api.call("POST", "/emails", auth, json=by_template)
        assert status == 200, sent
        status, detail = await api.call("GET", f"/emails/{sent['id']}", auth)
        assert (detail["subject"], detail["text"]) == ("Changed Ann", "T Ann")
        assert _outbox_payload(api, sent["id"])["subject"] == "Changed Ann"
        assert (await other.call("DELETE", f"/templates/{created['id']}", auth))[0] == 204
        status, body = await api.call("POST", "/emails", auth, json=by_template)
        assert (status, body["detail"]) == (
            400, f"template_id {created['id']!r}: template not found")


async def test_batch_sends_by_template_item_by_item(api: SendingApi) -> None:
    user, _, domain = api.sender()
    auth = api.bearer(user)
    created = await _create(api, user)
    items = [email(domain, subject=None, html=None, template_id=created["id"],
                   template_data={"name": f"n{i}", "items": [i]}) for i in range(3)]
    items[1]["template_data"] = {"items": []}
    status, answer = await api.call("POST", "/emails/batch", auth, json={"emails": items})
    assert status == 200, answer
    assert len(answer["data"]) == 2
    assert answer["errors"] == [{"index": 1, "error": "template_data has no value for 'name' "
                                                      "(used in subject)"}]
    status, detail = await api.call("GET", f"/emails/{answer['data'][1]['id']}", auth)
    assert (detail["subject"], detail["text"]) == ("Hi n2", "Hello n2: 2")


async def test_inline_placeholders_keep_their_results(api: SendingApi) -> None:
    user, _, domain = api.sender()
    status, sent = await api.call("POST", "/emails", api.bearer(user), json=email(
        domain, subject="Hi {{ user.name }} {% raw %}", html="<p>{{ q }}{{ flag }}</p>\r\n",
        text="{{ q }} {{ n }}\n", template_data={"user.name": "Zoë", "q": "\"it's\" <b>",
                                                 "flag": True, "n": None}))
    assert status == 200, sent
    status, detail = await api.call("GET", f"/emails/{sent['id']}", api.bearer(user))
    assert detail["subject"] == "Hi Zoë {% raw %}"
    assert detail["html"] == "<p>&quot;it&#x27;s&quot; &lt;b&gt;true</p>\r\n"
    assert detail["text"] == "\"it's\" <b> null\n"


async def test_rendered_parts_are_held_to_the_rules_of_a_request(api: SendingApi) -> None:
    """A request's own subject may hold no line break or control character, its html and text
    no control character but TAB, CR, LF; a rendered part was not checked: a subject with U+2028
    was sent as "Hi a b", a NUL made the worker refuse the email after a 200."""
    user, _, domain = api.sender()
    auth = api.bearer(user)
    for value in ("a\u2028b", "a\u0085b", "a\tb", "a\rb"):
        status, body = await api.call("POST", "/emails", auth, json=email(
            domain, subject="Hi {{ s }}", template_data={"s": value}))
        assert status == 400, (value, body)
        assert body["detail"].startswith("the rendered subject contains a line break or "
                                         "control character (U+"), body
    created = []
    for parts in ({"subject": "S {{ '\\x00' }}", "text": "t"},
                  {"subject": "S", "text": "body {{ '\\x07' }}"},
                  {"subject": "S", "html": "<p>{{ '\\x0b' }}</p>"}):
        status, row = await api.call("POST", "/templates", auth, json={"name": "c", **parts})
        assert status == 201, row
        created.append(row["id"])
    for template_id, part in zip(created, ("subject", "text", "html"), strict=True):
        status, body = await api.call("POST", "/emails", auth, json={
            "from": f"noreply@{domain}", "to": ["r@example.org"], "template_id": template_id})
        assert status == 400, body
        assert f"the rendered {part} contains" in body["detail"], body
        status, body = await api.call("POST", f"/templates/{template_id}/render", auth,
                                      json={"template_data": {}})
        assert status == 400, body
    # TAB, CR and LF stay fine in a rendered text, as in a request's own.
    status, body = await api.call("POST", "/emails", auth, json=email(
        domain, text="a{{ s }}b", template_data={"s": "\t\r\n"}))
    assert status == 200, body


SSTI = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ request.application.__globals__ }}",
    "{{ config.items() }}",
    "{{ lipsum.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% endif %}{% endmacro %}"
    "{{ f('a' * 1000000, 40) }}",
    "{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}",
    "{{ 'a' * 10**9 }}",
    "{{ 9 ** (9 ** 9) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ (1).to_bytes(10**9, 'big') }}",
    "{% block b %}{{ self.b() }}{% endblock %}",
    "{% include '/etc/passwd' %}",
    "{{" + "(" * 2000 + "1" + ")" * 2000 + "}}",
]


@pytest.mark.parametrize("payload", SSTI)
async def test_template_injection_payloads_are_400_never_5xx_never_a_leak(
        api: SendingApi, payload: str) -> None:
    user, _, domain = api.sender()
    auth = api.bearer(user)
    status, saved = await api.call("POST", "/templates", auth,
                                   json={"name": "evil", "subject": "s", "html": payload})
    answers = [(status, saved)]
    if status == 201:
        answers.append(await api.call("POST", f"/templates/{saved['id']}/render", auth,
                                      json={"template_data": {}}))
        answers.append(await api.call("POST", "/emails", auth, json=email(
            domain, subject=None, html=None, template_id=saved["id"], template_data={"a": 1})))
    answers.append(await api.call("POST", "/emails", auth, json=email(
        domain, html=payload, template_data={"a": 1})))  # inline: only {{ name }} is replaced
    for status, body in answers[:-1]:
        assert status == 400 or (status == 201 and body is saved), (payload, status, body)
        text = json.dumps(body)
        for leak in ("<class", "<function", "<module", "0x", "/etc", "Traceback", "uid="):
            assert leak not in text, (payload, body)
    status, body = answers[-1]
    assert status == 200 or body["detail"].startswith("template_data has no value for {{ "), body


async def test_hostile_input_is_400(api: SendingApi) -> None:
    user, _, domain = api.sender()
    auth = api.bearer(user)
    created = await _create(api, user, {"name": "t", "subject": "s {{ a }}", "text": "{{ a }}"})
    cases = [
        ("POST", "/templates", {"name": "big", "subject": "s", "html": "x" * 200_001}),
        ("POST", "/templates", {"name": "a\x00b", "subject": "s", "text": "t"}),
        ("POST", "/templates", {"name": "n", "subject": "line\nbreak", "text": "t"}),
        ("POST", "/templates", {"name": "n", "subject": "s" * 999, "text": "t"}),
        ("POST", f"/templates/{created['id']}/render", {"template_data": {"a\x01": 1}}),
        ("POST", f"/templates/{created['id']}/render", {"template_data": {"a": "x\r\ny"}}),
        ("POST", f"/templates/{created['id']}/render", {"template_data": {"a": "x" * 1000}}),
        ("POST", f"/templates/{created['id']}/render", {"template_data": "not an object"}),
        ("POST", f"/templates/{created['id']}/render",
         {"template_data": {f"k{i}": i for i in range(201)}}),
    ]
    for method, path, body in cases:
        status, answer = await api.call(method, path, auth, json=body)
        assert status == 400, (path, body if len(json.dumps(body)) < 200 else "...", answer)
    # Non-string values are written as JSON, as inline placeholders always did.
    status, preview = await api.call("POST", f"/templates/{created['id']}/render", auth,
                                     json={"template_data": {"a": {"k": [1, None, True]}}})
    assert (status, preview["text"]) == (200, '{"k": [1, null, true]}')
    # Huge template_data values: the rendered email is refused by its limits, not a 5xx.
    status, answer = await api.call("POST", "/emails", auth, json=email(
        domain, subject=None, template_id=created["id"],
        template_data={"a": "y" * 3_000_000}))
    assert status == 400, answer
