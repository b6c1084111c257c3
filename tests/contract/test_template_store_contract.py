"""TemplateStore (:mod:`etrans.app.template_ports`): ``SqlTemplates`` on PostgreSQL and on the
``etrans dev`` SQLite file, and the unit tests' in-memory fake, keep templates alike.

What /templates and the send path rely on: ``create`` answers the stored row (id, both
timestamps) or None at the cap; every call is within the user's rows (another user's id is
None / False, as an unknown one); ``page`` is newest first, with the total, filtered by a
case-insensitive part of the name (``%`` and ``_`` literal); ``update`` changes only what is
given, ``""`` removes html or text, and moves ``updated_at``; ``delete`` answers whether it
removed one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from etrans.app.template_records import TemplateChanges, TemplateFields
from tests.contract.conftest import _usend
from tests.contract.usend_backends import fresh_user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture(params=["fake", "postgres", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "fake":
        from tests.unit.fakes_templates import FakeTemplateStore

        yield FakeTemplateStore()
        return
    from etrans.adapters.sql.templates_repo import SqlTemplates

    async for backend in _usend(request.param, request, tmp_path):
        yield SqlTemplates(backend.db)


def fields(name: str = "Welcome", **parts: Any) -> TemplateFields:
    values = {"subject": "Hi {{ name }}", "html": "<p>{{ name }}</p>", "text": None}
    values.update(parts)
    return TemplateFields(name=name, **values)


async def test_create_get_and_tenants(store: Any) -> None:
    alice, bob = fresh_user(), fresh_user()
    row = await store.create(alice, fields(text="Zoë ✓ {{ name }}\r\n"), max_per_user=10)
    assert row.id > 0
    assert (row.user_id, row.name, row.subject, row.html, row.text) == (
        alice, "Welcome", "Hi {{ name }}", "<p>{{ name }}</p>", "Zoë ✓ {{ name }}\r\n")
    assert row.created_at.tzinfo is not None
    assert row.updated_at >= row.created_at
    assert await store.get(alice, row.id) == row
    assert await store.get(bob, row.id) is None
    assert await store.get(alice, row.id + 10**9) is None
    assert await store.update(bob, row.id, TemplateChanges(name="mine")) is None
    assert await store.delete(bob, row.id) is False
    assert await store.get(alice, row.id) == row


async def test_the_cap_per_user(store: Any) -> None:
    user, other = fresh_user(), fresh_user()
    assert await store.create(user, fields("a"), max_per_user=2) is not None
    assert await store.create(user, fields("b"), max_per_user=2) is not None
    assert await store.create(user, fields("c"), max_per_user=2) is None
    assert await store.create(other, fields("c"), max_per_user=2) is not None


async def test_page_newest_first_with_search(store: Any) -> None:
    user = fresh_user()
    ids = [(await store.create(user, fields(name), max_per_user=10)).id
           for name in ("Welcome", "Receipt", "welcome back", "100%_off")]
    rows, total = await store.page(user, page=1, per_page=2, search=None)
    assert total == 4
    assert [r.id for r in rows] == [ids[3], ids[2]]
    rows, total = await store.page(user, page=2, per_page=2, search=None)
    assert [r.id for r in rows] == [ids[1], ids[0]]
    rows, total = await store.page(user, page=1, per_page=10, search="WELCOME")
    assert (total, [r.id for r in rows]) == (2, [ids[2], ids[0]])
    rows, total = await store.page(user, page=1, per_page=10, search="%_")
    assert (total, [r.id for r in rows]) == (1, [ids[3]])
    assert await store.page(fresh_user(), page=1, per_page=10, search=None) == ([], 0)


async def test_update_changes_what_is_given_and_delete(store: Any) -> None:
    user = fresh_user()
    row = await store.create(user, fields(text="t"), max_per_user=10)
    changed = await store.update(user, row.id, TemplateChanges(subject="New {{ x }}", html=""))
    assert (changed.name, changed.subject, changed.html, changed.text) == (
        "Welcome", "New {{ x }}", None, "t")
    assert changed.updated_at >= row.updated_at
    assert changed.created_at == row.created_at
    assert await store.get(user, row.id) == changed
    assert await store.delete(user, row.id) is True
    assert await store.delete(user, row.id) is False
    assert await store.get(user, row.id) is None


async def test_the_send_paths_read_answers_as_the_store(usend: Any) -> None:
    """``UsendRepository.template`` (port TemplateSource: serve reads a send's template there,
    grouped on its own connection) answers as ``get``, at once after a change or a delete, within
    the user's rows; concurrent reads share a statement and each gets its own row."""
    import trio

    from etrans.adapters.sql.templates_repo import SqlTemplates

    store, source = SqlTemplates(usend.db), usend.repo
    alice, bob = fresh_user(), fresh_user()
    rows = [await store.create(alice, fields(f"t{i}", text=f"Zoë {i} {{{{ name }}}}"),
                               max_per_user=10) for i in range(3)]
    assert await source.template(alice, rows[0].id) == await store.get(alice, rows[0].id)
    assert await source.template(bob, rows[0].id) is None
    assert await source.template(alice, rows[2].id + 10**9) is None
    found: dict[int, Any] = {}

    async def read(template_id: int) -> None:
        found[template_id] = await source.template(alice, template_id)

    async with trio.open_nursery() as nursery:
        for row in rows:
            nursery.start_soon(read, row.id)
    assert found == {row.id: row for row in rows}
    changed = await store.update(alice, rows[1].id, TemplateChanges(subject="New {{ x }}"))
    assert await source.template(alice, rows[1].id) == changed
    assert await store.delete(alice, rows[1].id) is True
    assert await source.template(alice, rows[1].id) is None
