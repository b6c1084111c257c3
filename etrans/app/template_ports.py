"""Ports of the template use cases (:mod:`etrans.app.templates`) and of sending by template
(:mod:`etrans.app.emails`): where templates are kept, and the engine that checks and renders
them (:mod:`etrans.adapters.jinja.engine`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from etrans.app.template_records import Template, TemplateChanges, TemplateFields
    from etrans.domain.templates import RenderedParts


class TemplateStore(Protocol):
    """A user's templates; every call is within ``user_id``'s rows.  A database that does not
    answer is UpstreamUnavailable."""

    async def create(self, user_id: int, fields: TemplateFields, *, max_per_user: int
                     ) -> Template | None:
        """The new template; None when the user has ``max_per_user`` already."""

    async def get(self, user_id: int, template_id: int) -> Template | None: ...

    async def page(self, user_id: int, *, page: int, per_page: int, search: str | None
                   ) -> tuple[list[Template], int]:
        """Newest first; ``search``: a part of the name (case-insensitive)."""

    async def update(self, user_id: int, template_id: int, changes: TemplateChanges
                     ) -> Template | None: ...

    async def delete(self, user_id: int, template_id: int) -> bool: ...


class TemplateSource(Protocol):
    """The send path's read of one template: the answer of :meth:`TemplateStore.get`, over the
    cheaper connection a store may keep for its hot path.  A database that does not answer is
    UpstreamUnavailable."""

    async def template(self, user_id: int, template_id: int) -> Template | None: ...


class TemplateEngine(Protocol):
    """Checks and renders templates; every problem is a
    :class:`~etrans.domain.templates.TemplateProblem` (its message the API's ``detail``)."""

    async def check(self, parts: dict[str, str | None]) -> tuple[str, ...]:
        """The variables the parts use, once their syntax is checked (TemplateSyntaxProblem
        names part, line and column)."""

    def variables(self, parts: dict[str, str | None]) -> tuple[str, ...]:
        """The variables of parts that were checked when saved."""

    async def render(self, parts: dict[str, str | None], data: dict[str, Any]
                     ) -> RenderedParts:
        """A stored template's parts rendered with ``data`` (html escaped, strict)."""

    def render_inline(self, text: str, data: dict[str, Any], part: str) -> str:
        """An email's own ``text`` with its ``{{ name }}`` placeholders filled (the rules of
        :mod:`etrans.domain.templates`)."""
