"""Use cases of stored email templates (POST/GET/PATCH/DELETE /templates, POST
/templates/{id}/render) and the rendering of an email's subject, html and text before it is sent
(:func:`rendered_email`, used by :mod:`etrans.app.emails`).

A template is checked when it is saved (created or changed): the sizes of its parts
(:func:`etrans.domain.templates.check_parts`), then their syntax by the engine (400 naming part,
line and column).  Every query is within the user's templates: another user's id is a 404, as
an id that never existed.  Rendering problems (a missing variable, a limit) are 400.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from etrans.app.template_records import (
    Template,
    TemplateChanges,
    TemplateFields,
    TemplatePage,
    TemplateView,
)
from etrans.domain.templates import (
    MAX_TEMPLATES_PER_USER,
    PARTS,
    RenderedParts,
    TemplateProblem,
    check_parts,
    check_rendered_subject,
    check_rendered_text,
    format_template_id,
    parse_template_id,
)
from etrans.errors import InvalidInput, NotFound
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.bus import MessageBus
    from etrans.app.template_ports import TemplateEngine, TemplateSource, TemplateStore

log = get_logger(__name__)
NOT_FOUND = "Template not found"
CACHED_TEMPLATES = 256
CACHED_TEMPLATE_CHARS = 64_000


class SentTemplates:
    """The templates sends used lately, by (user, id): a guarded send renders from here and the
    store checks, as it saves, that the template is still that version
    (``NewEmail.template_version``), so no process sends from a changed template.  At most
    :data:`CACHED_TEMPLATES`, each of at most :data:`CACHED_TEMPLATE_CHARS` characters."""

    def __init__(self) -> None:
        self._rows: OrderedDict[tuple[int, int], Template] = OrderedDict()

    def get(self, user_id: int, template_id: int) -> Template | None:
        row = self._rows.get((user_id, template_id))
        if row is not None:
            self._rows.move_to_end((user_id, template_id))
        return row

    def put(self, user_id: int, template_id: int, row: Template | None) -> None:
        self._rows.pop((user_id, template_id), None)
        if row is None or sum(len(p or "") for p in row.parts().values()) > CACHED_TEMPLATE_CHARS:
            return
        self._rows[(user_id, template_id)] = row
        while len(self._rows) > CACHED_TEMPLATES:
            self._rows.popitem(last=False)


@dataclass(frozen=True)
class TemplateDeps:
    store: TemplateStore
    engine: TemplateEngine
    max_per_user: int = MAX_TEMPLATES_PER_USER
    # Where a send reads its template (serve: the send path's own connection); None: ``store``.
    source: TemplateSource | None = None
    sent: SentTemplates = field(default_factory=SentTemplates)

    async def for_sending(self, user_id: int, template_id: int, *, cached: bool = False
                          ) -> Template | None:
        """The template of a send; ``cached``: the one sends used lately, if any (the caller has
        the store check its version); else read, and remembered."""
        if cached:
            row = self.sent.get(user_id, template_id)
            if row is not None:
                return row
        if self.source is not None:
            row = await self.source.template(user_id, template_id)
        else:
            row = await self.store.get(user_id, template_id)
        self.sent.put(user_id, template_id, row)
        return row


@dataclass(frozen=True)
class CreateTemplate:
    user_id: int
    name: str
    subject: str
    html: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class ListTemplates:
    user_id: int
    page: int = 1
    per_page: int = 20
    search: str | None = None


@dataclass(frozen=True)
class GetTemplate:
    user_id: int
    template_id: int


@dataclass(frozen=True)
class UpdateTemplate:
    """None = unchanged; ``""`` for html or text removes that part."""

    user_id: int
    template_id: int
    name: str | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class DeleteTemplate:
    user_id: int
    template_id: int


@dataclass(frozen=True)
class RenderTemplate:
    """A preview: the parts rendered with ``data``, nothing sent."""

    user_id: int
    template_id: int
    data: dict[str, Any]


async def _checked(deps: TemplateDeps, parts: dict[str, str | None]) -> tuple[str, ...]:
    try:
        check_parts(parts)
        return await deps.engine.check(parts)
    except TemplateProblem as exc:
        raise InvalidInput(str(exc)) from None


async def _found(deps: TemplateDeps, user_id: int, template_id: int) -> Template:
    row = await deps.store.get(user_id, template_id)
    if row is None:
        raise NotFound(NOT_FOUND)
    return row


def _view(deps: TemplateDeps, row: Template) -> TemplateView:
    return TemplateView(row, deps.engine.variables(row.parts()))


async def create_template(deps: TemplateDeps, cmd: CreateTemplate) -> TemplateView:
    fields = TemplateFields(name=cmd.name, subject=cmd.subject, html=cmd.html or None,
                            text=cmd.text or None)
    variables = await _checked(deps, {"subject": fields.subject, "html": fields.html,
                                      "text": fields.text})
    row = await deps.store.create(cmd.user_id, fields, max_per_user=deps.max_per_user)
    if row is None:
        raise InvalidInput(f"Template limit reached: at most {deps.max_per_user} templates "
                           "per account")
    log.info("template created", user_id=cmd.user_id, template_id=row.id)
    return TemplateView(row, variables)


async def list_templates(deps: TemplateDeps, cmd: ListTemplates) -> TemplatePage:
    rows, total = await deps.store.page(cmd.user_id, page=cmd.page, per_page=cmd.per_page,
                                        search=cmd.search or None)
    return TemplatePage([_view(deps, r) for r in rows], total, cmd.page, cmd.per_page)


async def get_template(deps: TemplateDeps, cmd: GetTemplate) -> TemplateView:
    return _view(deps, await _found(deps, cmd.user_id, cmd.template_id))


async def update_template(deps: TemplateDeps, cmd: UpdateTemplate) -> TemplateView:
    current = await _found(deps, cmd.user_id, cmd.template_id)
    merged = replace(current, name=cmd.name if cmd.name is not None else current.name,
                     subject=cmd.subject if cmd.subject is not None else current.subject,
                     html=current.html if cmd.html is None else cmd.html or None,
                     text=current.text if cmd.text is None else cmd.text or None)
    variables = await _checked(deps, merged.parts())
    row = await deps.store.update(cmd.user_id, cmd.template_id, TemplateChanges(
        name=cmd.name, subject=cmd.subject, html=cmd.html, text=cmd.text))
    if row is None:
        raise NotFound(NOT_FOUND)
    log.info("template updated", user_id=cmd.user_id, template_id=row.id)
    return TemplateView(row, variables)


async def delete_template(deps: TemplateDeps, cmd: DeleteTemplate) -> None:
    if not await deps.store.delete(cmd.user_id, cmd.template_id):
        raise NotFound(NOT_FOUND)
    log.info("template deleted", user_id=cmd.user_id, template_id=cmd.template_id)


async def render_template(deps: TemplateDeps, cmd: RenderTemplate) -> RenderedParts:
    row = await _found(deps, cmd.user_id, cmd.template_id)
    try:
        rendered = await deps.engine.render(row.parts(), cmd.data)
        check_rendered_subject(rendered.subject or "")
        for part in ("html", "text"):
            check_rendered_text(getattr(rendered, part) or "", part)
    except TemplateProblem as exc:
        raise InvalidInput(str(exc)) from None
    return rendered


async def rendered_email(deps: TemplateDeps | None, user_id: int, email: dict[str, Any],
                         used: list[Template] | None = None, *, cached: bool = False
                         ) -> dict[str, Any]:
    """``email`` with its subject, html and text rendered (TemplateProblem: a 400).

    With ``template_id``: each part the request does not give comes from the template, rendered
    with ``template_data``; a part the request gives wins and is rendered as an inline text.
    Without: the request's own parts, their ``{{ name }}`` placeholders filled when there is
    ``template_data``.  Unknown, deleted or another user's template: 400 naming the id.  None
    ``deps`` (no template store wired): such emails are refused.  ``cached``: the template may
    come from :class:`SentTemplates` (the caller has its version checked); the one used is
    appended to ``used``."""
    data = email.get("template_data") or {}
    raw_id = email.get("template_id")
    if raw_id is None and not data:
        return email
    if deps is None:
        raise InvalidInput("Templates are not available on this server")
    own = {part: email.get(part) for part in PARTS}
    out = dict(email)
    if raw_id is not None:
        row = await deps.for_sending(user_id, parse_template_id(raw_id), cached=cached)
        if row is None:
            raise InvalidInput(f"template_id {raw_id!r}: template not found")
        if used is not None:
            used.append(row)
        missing = {part: source for part, source in row.parts().items() if not own.get(part)}
        rendered = await deps.engine.render(missing, data)
        for part in missing:
            out[part] = getattr(rendered, part)
        out["template_id"] = format_template_id(row.id)
    if data:
        for part, text in own.items():
            if text:
                out[part] = deps.engine.render_inline(text, data, part)
    if raw_id is not None or data:
        if out.get("subject") is not None:
            check_rendered_subject(out["subject"])
        for part in ("html", "text"):
            if out.get(part):
                check_rendered_text(out[part], part)
    return out


def register(bus: MessageBus, deps: TemplateDeps) -> None:
    bus.register(CreateTemplate, partial(create_template, deps))
    bus.register(ListTemplates, partial(list_templates, deps))
    bus.register(GetTemplate, partial(get_template, deps))
    bus.register(UpdateTemplate, partial(update_template, deps))
    bus.register(DeleteTemplate, partial(delete_template, deps))
    bus.register(RenderTemplate, partial(render_template, deps))
