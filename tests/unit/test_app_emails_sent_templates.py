"""Sends by stored template with guarded saves (as serve and dev wire them), on in-memory fakes:
a template a send used lately is rendered again without reading it, and the store checks, as it
saves, that it is still that version; a template changed elsewhere (another ``serve`` process:
here the update use case, which does not touch the send path's memory) or deleted makes the
store refuse once, then the send reads it and renders the new version (or answers 400)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from etrans.app.emails import SendBatch, SendEmail
from etrans.app.templates import CreateTemplate, DeleteTemplate, UpdateTemplate
from etrans.domain.templates import format_template_id
from etrans.errors import InvalidInput
from tests.unit.fakes_templates import FakeTemplateStore
from tests.unit.test_app_emails import World, email


class CountingTemplates(FakeTemplateStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, user_id: int, template_id: int) -> Any:
        self.reads += 1
        return await super().get(user_id, template_id)


def _world() -> tuple[World, CountingTemplates]:
    from etrans.adapters.jinja.engine import JinjaTemplateEngine
    from etrans.app.templates import TemplateDeps

    store = CountingTemplates()
    world = World(templates=TemplateDeps(store, JinjaTemplateEngine()), guarded_saves=True)
    return world, store


def by_template(template_id: int, name: str = "Ann") -> dict[str, Any]:
    return email(subject=None, html=None, template_id=format_template_id(template_id),
                 template_data={"name": name})


def subject(world: World, index: int = -1) -> str:
    return str(json.loads(world.store.outbox[index][2])["payload"]["subject"])


async def test_a_template_used_lately_is_not_read_again_and_a_change_is_seen() -> None:
    world, templates = _world()
    row = await world.bus.handle(CreateTemplate(1, "t", "Hi {{ name }}", html="<p>{{ name }}</p>"))
    tid = row.template.id
    for name in ("Ann", "Bo"):  # VERIFIED takes 3 an hour
        await world.bus.handle(SendEmail(1, by_template(tid, name)))
    assert [subject(world, i) for i in range(2)] == ["Hi Ann", "Hi Bo"]
    assert (templates.reads, world.store.refused) == (1, 0)

    await world.bus.handle(UpdateTemplate(1, tid, subject="Changed {{ name }}"))
    reads = templates.reads
    new = await world.bus.handle(SendEmail(1, by_template(tid)))
    assert subject(world) == "Changed Ann"
    assert [r["subject"] for r in world.store.rows if r["message_id"] == new.message_id] == [
        "Changed Ann"]
    assert (templates.reads - reads, world.store.refused) == (1, 1)  # refused once, read once
    assert await world.used() == 3  # the refused try's quota was given back

    assert await world.bus.handle(DeleteTemplate(1, tid)) is None
    with pytest.raises(InvalidInput, match="template not found"):
        await world.bus.handle(SendEmail(1, by_template(tid)))
    assert len(world.store.rows) == 3


async def test_a_batch_with_a_changed_template_is_sent_from_the_new_version() -> None:
    world, _ = _world()
    row = await world.bus.handle(CreateTemplate(1, "t", "Hi {{ name }}", text="{{ name }}"))
    tid = row.template.id
    await world.bus.handle(SendEmail(1, by_template(tid)))
    await world.bus.handle(UpdateTemplate(1, tid, subject="New {{ name }}"))
    outcome = await world.bus.handle(SendBatch(1, [(0, by_template(tid, "A")),
                                                   (1, by_template(tid, "B"))]))
    assert len(outcome.sent) == 2
    assert [subject(world, i) for i in (-2, -1)] == ["New A", "New B"]
    assert world.store.refused == 1
