"""The send path's read of a stored template (POST /emails with ``template_id``) on PostgreSQL:
grouped, on the Trio thread, over the connection of the send path's lookups.

A send by template reads its row every time, so a template changed or deleted by any ``serve``
process is seen by the next send (no cache to invalidate; the compiled template is cached by
its source, :mod:`etrans.adapters.jinja.engine`).  The read used to be SQLAlchemy in a worker
thread (a pool checkout with its pre-ping, the SELECT, the ROLLBACK of the checkin): measured
with ``bench/api.py``, a send by template then cost 0.74-0.89 ms more CPU in ``serve`` and
0.25-0.32 ms more in PostgreSQL than a plain send (template cpu ratio 0.62-0.64).  Here concurrent
reads share one prepared statement (:class:`~etrans.adapters.sql.group_commit.GroupCommit`, as
the suppression lookups), each a probe of the primary key of ``email_templates``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from etrans.adapters.sql.group_commit import GroupCommit
from etrans.app.template_records import Template

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from etrans.adapters._net.trio_pq import TrioPqConnection

# The reads of concurrent sends in one statement: $1 is a JSON array of {user_id, id}.
_TEMPLATES = b"""
SELECT t.id, t.user_id, t.name, t.subject, t.html, t.text, t.created_at, t.updated_at
FROM json_to_recordset($1::json) AS w(user_id bigint, id bigint)
JOIN email_templates AS t ON t.id = w.id AND t.user_id = w.user_id
"""


@dataclass(eq=False)
class _Read:
    user_id: int
    template_id: int
    found: Template | None = None


class GroupedTemplateReads:
    """``await reads.get(user_id, template_id)``: the user's template or None; psycopg errors
    as raised by the connection."""

    def __init__(self, connection: Callable[[], Awaitable[TrioPqConnection]]) -> None:
        self._connection = connection
        self._reads: GroupCommit[_Read] = GroupCommit(self._read)

    async def get(self, user_id: int, template_id: int) -> Template | None:
        read = _Read(user_id, template_id)
        await self._reads.write([read])
        return read.found

    async def _read(self, reads: list[_Read]) -> None:
        wanted = json.dumps([{"user_id": r.user_id, "id": r.template_id} for r in reads])
        connection = await self._connection()
        result = await connection.execute(_TEMPLATES, [wanted], prepared=b"etrans_templates")
        found: dict[tuple[int, int], Template] = {}
        for id_, user_id, name, subject, html, text, created_at, updated_at in result.rows:
            row = Template(id=int(id_ or 0), user_id=int(user_id or 0), name=name or "",
                           subject=subject or "", html=html, text=text,
                           created_at=datetime.fromisoformat(created_at or ""),
                           updated_at=datetime.fromisoformat(updated_at or ""))
            found[(row.user_id, row.id)] = row
        for read in reads:
            read.found = found.get((read.user_id, read.template_id))
