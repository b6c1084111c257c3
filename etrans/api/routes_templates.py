"""Routes of /templates, each user's stored email templates (use cases: :mod:`etrans.app.
templates`): read (and previewed: nothing changes) with ``read_only``, changed with
``full_access``, as the other account resources.  Syntax, escaping and limits:
``docs/api.md``, "Templates"."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response

from etrans.api.routes_domains import PAGE, TEXT
from etrans.api.schema import (
    NO_LINE_BREAKS,
    AnyJson,
    Array,
    Integer,
    MapOf,
    Object,
    Prop,
    QueryParam,
    String,
)
from etrans.app.templates import (
    CreateTemplate,
    DeleteTemplate,
    GetTemplate,
    ListTemplates,
    RenderTemplate,
    UpdateTemplate,
)
from etrans.domain.api_keys import Permission
from etrans.domain.templates import (
    MAX_NAME_CHARS,
    MAX_PART_CHARS,
    MAX_SUBJECT_CHARS,
    format_template_id,
    parse_template_id,
)
from etrans.domain.timestamps import iso

if TYPE_CHECKING:
    from etrans.api.routing import Api, RequestContext
    from etrans.app.template_records import TemplateView
    from etrans.domain.templates import RenderedParts

TAG = "Templates"
NAME = String(min_length=1, max_length=MAX_NAME_CHARS, pattern=NO_LINE_BREAKS, checks=TEXT)
SUBJECT = String(min_length=1, max_length=MAX_SUBJECT_CHARS, checks=TEXT,
                 description="a template; its output may not contain line breaks")
PART = String(max_length=MAX_PART_CHARS, text=True, description="a template")
PART_OR_EMPTY = String(max_length=MAX_PART_CHARS, text=True,
                       description='a template; "" removes the part')
CREATE = Object({
    "name": Prop(NAME, required=True),
    "subject": Prop(SUBJECT, required=True),
    "html": Prop(PART, nullable=True),
    "text": Prop(PART, nullable=True),
}, name="CreateTemplateRequest")
UPDATE = Object({
    "name": Prop(NAME, nullable=True),
    "subject": Prop(SUBJECT, nullable=True),
    "html": Prop(PART_OR_EMPTY, nullable=True),
    "text": Prop(PART_OR_EMPTY, nullable=True),
}, name="UpdateTemplateRequest")
DATA = MapOf(AnyJson(text=True), key=String(min_length=1, max_length=100), max_properties=200,
             description="the values of the template's variables")
RENDER = Object({"template_data": Prop(DATA, nullable=True)}, name="RenderTemplateRequest")
_TEXT = String()
_TEXT_OR_NULL = Prop(_TEXT, nullable=True)
TEMPLATE = Object(name="Template", properties={
    "id": Prop(_TEXT, required=True), "name": Prop(_TEXT, required=True),
    "subject": Prop(_TEXT, required=True), "html": _TEXT_OR_NULL, "text": _TEXT_OR_NULL,
    "variables": Prop(Array(_TEXT), required=True),
    "created_at": Prop(_TEXT, required=True), "updated_at": Prop(_TEXT, required=True)})
LIST_RESPONSE = Object(name="TemplateList", properties={
    "data": Prop(Array(TEMPLATE), required=True), "total": Prop(Integer(), required=True),
    "page": Prop(Integer(), required=True), "per_page": Prop(Integer(), required=True)})
RENDERED = Object(name="RenderedTemplate", properties={
    "subject": Prop(_TEXT, required=True), "html": _TEXT_OR_NULL, "text": _TEXT_OR_NULL})
LIST_QUERY = {**PAGE, "search": QueryParam(String(max_length=MAX_NAME_CHARS, checks=TEXT),
                                           description="a part of the name (case-insensitive)")}


def template_view(view: TemplateView) -> dict[str, Any]:
    row = view.template
    return {"id": format_template_id(row.id), "name": row.name, "subject": row.subject,
            "html": row.html, "text": row.text, "variables": list(view.variables),
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}


def rendered_view(parts: RenderedParts) -> dict[str, Any]:
    return {"subject": parts.subject, "html": parts.html, "text": parts.text}


def register(api: Api) -> None:
    bus = api.services.bus

    @api.route("POST", "/templates", permission=Permission.full_access,
               summary="Create template", tag=TAG, body=CREATE, response=TEMPLATE,
               errors=(400, 401, 403), success=(201,),
               description="Each part is checked when saved: a syntax error is a 400 naming "
                           "the part, line and column.")
    async def create_template(ctx: RequestContext) -> Any:
        b = ctx.body
        view = await bus.handle(CreateTemplate(ctx.user_id, name=b["name"], subject=b["subject"],
                                               html=b.get("html"), text=b.get("text")))
        return template_view(view), 201

    @api.route("GET", "/templates", permission=Permission.read_only, summary="List templates",
               tag=TAG, query=LIST_QUERY, response=LIST_RESPONSE, errors=(400, 401))
    async def list_templates(ctx: RequestContext) -> Any:
        q = ctx.query
        page = await bus.handle(ListTemplates(ctx.user_id, page=q["page"],
                                              per_page=q["per_page"], search=q["search"]))
        return {"data": [template_view(v) for v in page.rows], "total": page.total,
                "page": page.page, "per_page": page.per_page}

    @api.route("GET", "/templates/{template_id}", permission=Permission.read_only,
               summary="Get template", tag=TAG, response=TEMPLATE, errors=(400, 401, 404))
    async def get_template(ctx: RequestContext) -> Any:
        template_id = parse_template_id(ctx.path["template_id"])
        return template_view(await bus.handle(GetTemplate(ctx.user_id, template_id)))

    @api.route("PATCH", "/templates/{template_id}", permission=Permission.full_access,
               summary="Update template", tag=TAG, body=UPDATE, response=TEMPLATE,
               errors=(400, 401, 403, 404))
    async def update_template(ctx: RequestContext) -> Any:
        template_id = parse_template_id(ctx.path["template_id"])
        b = ctx.body or {}
        return template_view(await bus.handle(UpdateTemplate(
            ctx.user_id, template_id, name=b.get("name"), subject=b.get("subject"),
            html=b.get("html"), text=b.get("text"))))

    @api.route("DELETE", "/templates/{template_id}", permission=Permission.full_access,
               summary="Delete template", tag=TAG, errors=(400, 401, 403, 404),
               success=(204,))
    async def delete_template(ctx: RequestContext) -> Any:
        await bus.handle(DeleteTemplate(ctx.user_id, parse_template_id(ctx.path["template_id"])))
        return Response(b"", status=204)

    @api.route("POST", "/templates/{template_id}/render", permission=Permission.read_only,
               summary="Preview template", tag=TAG, body=RENDER, response=RENDERED,
               errors=(400, 401, 403, 404),
               description="The parts rendered with template_data, as a send would render "
                           "them; nothing is sent or stored (so read_only may).")
    async def render_template(ctx: RequestContext) -> Any:
        template_id = parse_template_id(ctx.path["template_id"])
        data = (ctx.body or {}).get("template_data") or {}
        return rendered_view(await bus.handle(RenderTemplate(ctx.user_id, template_id, data)))
