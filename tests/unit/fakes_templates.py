"""An in-memory :class:`etrans.app.template_ports.TemplateStore` for the app-layer unit tests
(the same contract as ``SqlTemplates``: tests/contract/test_template_store_contract.py)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime

from etrans.app.template_records import Template, TemplateChanges, TemplateFields


class FakeTemplateStore:
    def __init__(self) -> None:
        self.rows: dict[int, Template] = {}
        self._ids = itertools.count(1)

    async def create(self, user_id: int, fields: TemplateFields, *, max_per_user: int
                     ) -> Template | None:
        if sum(1 for t in self.rows.values() if t.user_id == user_id) >= max_per_user:
            return None
        now = datetime.now(UTC)
        row = Template(next(self._ids), user_id, fields.name, fields.subject, fields.html,
                       fields.text, now, now)
        self.rows[row.id] = row
        return row

    async def get(self, user_id: int, template_id: int) -> Template | None:
        row = self.rows.get(template_id)
        return row if row is not None and row.user_id == user_id else None

    async def page(self, user_id: int, *, page: int, per_page: int, search: str | None
                   ) -> tuple[list[Template], int]:
        rows = [t for t in self.rows.values() if t.user_id == user_id
                and (not search or search.lower() in t.name.lower())]
        rows.sort(key=lambda t: (t.created_at, t.id), reverse=True)
        return rows[(page - 1) * per_page:page * per_page], len(rows)

    async def update(self, user_id: int, template_id: int, changes: TemplateChanges
                     ) -> Template | None:
        row = await self.get(user_id, template_id)
        if row is None:
            return None
        row = replace(
            row, name=changes.name or row.name, subject=changes.subject or row.subject,
            html=row.html if changes.html is None else changes.html or None,
            text=row.text if changes.text is None else changes.text or None,
            updated_at=datetime.now(UTC))
        self.rows[row.id] = row
        return row

    async def delete(self, user_id: int, template_id: int) -> bool:
        return self.rows.pop(template_id, None) is not None if \
            await self.get(user_id, template_id) else False
