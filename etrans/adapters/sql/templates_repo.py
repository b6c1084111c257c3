"""Stored email templates in the USEND DB (``email_templates``): port
:class:`etrans.app.template_ports.TemplateStore` of the template use cases and of the send path.

Portable SQLAlchemy Core, so the same class runs on PostgreSQL and on ``etrans dev``'s SQLite
file (``tests/contract/test_template_store_contract.py`` holds both to one contract).  The cap
on templates per user is checked and the row inserted in one transaction that first takes a lock
per user (PostgreSQL: ``pg_advisory_xact_lock``; SQLite's writer lock already serialises
writers).  Every statement is within the user's rows.  The blocking work runs in
``Database.run``; a database that does not answer is UpstreamUnavailable (503).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import OperationalError

from etrans.adapters.sql.usend_templates import EmailTemplate
from etrans.app.template_records import Template
from etrans.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from etrans.adapters.sql import Database
    from etrans.app.template_records import TemplateChanges, TemplateFields

P = ParamSpec("P")
T = TypeVar("T")
_T = EmailTemplate.__table__
# pg_advisory_xact_lock(classid, objid): this class id names "creating a user's templates".
_LOCK_CLASS = 0x746D_706C  # "tmpl"


def _template(row: Any) -> Template:
    return Template(id=int(row.id), user_id=int(row.user_id), name=row.name,
                    subject=row.subject, html=row.html, text=row.text,
                    created_at=row.created_at, updated_at=row.updated_at)


class SqlTemplates:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await self.db.run(fn, *args, **kwargs)
        except OperationalError as exc:
            raise UpstreamUnavailable("USEND DB unavailable", retry_after_seconds=5) from exc

    async def create(self, user_id: int, fields: TemplateFields, *, max_per_user: int
                     ) -> Template | None:
        return await self._run(self._create, user_id, fields, max_per_user)

    async def get(self, user_id: int, template_id: int) -> Template | None:
        return await self._run(self._get, user_id, template_id)

    async def page(self, user_id: int, *, page: int, per_page: int, search: str | None
                   ) -> tuple[list[Template], int]:
        return await self._run(self._page, user_id, page, per_page, search)

    async def update(self, user_id: int, template_id: int, changes: TemplateChanges
                     ) -> Template | None:
        return await self._run(self._update, user_id, template_id, changes)

    async def delete(self, user_id: int, template_id: int) -> bool:
        return await self._run(self._delete, user_id, template_id)

    # -- blocking ------------------------------------------------------------------------------

    def _create(self, user_id: int, fields: TemplateFields, max_per_user: int
                ) -> Template | None:
        now = datetime.now(UTC)
        row = {"user_id": user_id, "name": fields.name, "subject": fields.subject,
               "html": fields.html, "text": fields.text, "created_at": now, "updated_at": now}
        with self.db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:class_id, :object_id)"),
                             {"class_id": _LOCK_CLASS, "object_id": user_id % 2**31})
            count = conn.scalar(select(func.count()).select_from(_T)
                                .where(_T.c.user_id == user_id)) or 0
            if count >= max_per_user:
                return None
            return _template(conn.execute(insert(_T).returning(*_T.c), row).one())

    def _get(self, user_id: int, template_id: int) -> Template | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(_T).where(_T.c.id == template_id,
                                                _T.c.user_id == user_id)).first()
        return _template(row) if row is not None else None

    def _page(self, user_id: int, page: int, per_page: int, search: str | None
              ) -> tuple[list[Template], int]:
        where = _T.c.user_id == user_id
        if search:
            where = where & func.lower(_T.c.name).contains(search.lower(), autoescape=True)
        with self.db.engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(_T).where(where)) or 0
            rows = conn.execute(select(_T).where(where)
                                .order_by(_T.c.created_at.desc(), _T.c.id.desc())
                                .offset((page - 1) * per_page).limit(per_page)).all()
        return [_template(r) for r in rows], total

    def _update(self, user_id: int, template_id: int, changes: TemplateChanges
                ) -> Template | None:
        values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
        for name in ("name", "subject"):
            if getattr(changes, name) is not None:
                values[name] = getattr(changes, name)
        for name in ("html", "text"):  # "" removes the part
            if getattr(changes, name) is not None:
                values[name] = getattr(changes, name) or None
        with self.db.engine.begin() as conn:
            found = conn.execute(update(_T).where(_T.c.id == template_id,
                                                  _T.c.user_id == user_id)
                                 .values(values).returning(*_T.c)).first()
        return _template(found) if found is not None else None

    def _delete(self, user_id: int, template_id: int) -> bool:
        with self.db.engine.begin() as conn:
            gone = conn.execute(delete(_T).where(_T.c.id == template_id,
                                                 _T.c.user_id == user_id)
                                .returning(_T.c.id)).first()
        return gone is not None
