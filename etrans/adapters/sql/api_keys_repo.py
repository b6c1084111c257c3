"""API keys (``api_keys``, USEND DB): port ``ApiKeyRepository`` of the account use cases.

Keys are soft-deleted (``deleted_at``).  A key created with another key (``created_by_key_id``)
is deleted with it, recursively; minting share-locks the creator row until the commit, so a
deletion of the creator running at the same time either comes first (the mint is refused) or
waits and deletes the new key too.  Authentication reads keys through
:class:`~etrans.adapters.sql.usend_repo.UsendRepository` (port ``ApiKeyStore``).  The blocking
work runs in ``Database.run``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from etrans.adapters.sql import usend as own
from etrans.app.account_records import ApiKey

if TYPE_CHECKING:
    from etrans.adapters.sql import Database


def _key(row: own.ApiKey) -> ApiKey:
    return ApiKey(id=row.id, user_id=row.user_id, name=row.name, key_hash=row.key_hash,
                  permission=row.permission, expires_at=row.expires_at, active=row.active,
                  created_at=row.created_at, updated_at=row.updated_at)


class SqlApiKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, *, user_id: int, name: str, key_hash: str, key_prefix: str,
                     permission: str, expires_at: datetime | None,
                     created_by_key_id: int | None = None) -> ApiKey | None:
        return await self.db.run(lambda: self._create(
            user_id=user_id, name=name, key_hash=key_hash, key_prefix=key_prefix,
            permission=permission, expires_at=expires_at, created_by_key_id=created_by_key_id))

    async def page(self, user_id: int, *, page: int, per_page: int
                   ) -> tuple[list[ApiKey], int]:
        return await self.db.run(self._page, user_id, page, per_page)

    async def get(self, user_id: int, key_id: int) -> ApiKey | None:
        return await self.db.run(self._get, user_id, key_id)

    async def delete(self, user_id: int, key_id: int) -> list[str] | None:
        return await self.db.run(self._delete, user_id, key_id)

    # -- blocking ------------------------------------------------------------------------------

    def _create(self, *, user_id: int, name: str, key_hash: str, key_prefix: str,
                permission: str, expires_at: datetime | None,
                created_by_key_id: int | None) -> ApiKey | None:
        k = own.ApiKey
        with Session(self.db.engine, expire_on_commit=False) as session, session.begin():
            if created_by_key_id is not None and session.scalars(
                    select(k.id).where(k.id == created_by_key_id, k.user_id == user_id,
                                       k.deleted_at.is_(None)).with_for_update(read=True)
            ).first() is None:
                return None
            row = own.ApiKey(user_id=user_id, name=name, key_hash=key_hash,
                             key_prefix=key_prefix, permission=permission, expires_at=expires_at,
                             active=True, created_by_key_id=created_by_key_id)
            session.add(row)
            session.flush()
            session.refresh(row)
            return _key(row)

    def _page(self, user_id: int, page: int, per_page: int) -> tuple[list[ApiKey], int]:
        k = own.ApiKey
        where = [k.user_id == user_id, k.deleted_at.is_(None)]
        with Session(self.db.engine) as session:
            total = session.scalar(select(func.count()).select_from(k).where(*where)) or 0
            rows = session.scalars(
                select(k).where(*where).order_by(k.created_at.desc(), k.id.desc())
                .offset((page - 1) * per_page).limit(per_page)).all()
            return [_key(r) for r in rows], total

    def _get(self, user_id: int, key_id: int) -> ApiKey | None:
        k = own.ApiKey
        with Session(self.db.engine) as session:
            row = session.scalars(select(k).where(k.id == key_id, k.user_id == user_id,
                                                  k.deleted_at.is_(None))).first()
            return _key(row) if row else None

    def _delete(self, user_id: int, key_id: int) -> list[str] | None:
        k = own.ApiKey
        now = datetime.now(UTC)
        with Session(self.db.engine) as session, session.begin():
            row = session.scalars(select(k).where(k.id == key_id, k.user_id == user_id,
                                                  k.deleted_at.is_(None)).with_for_update()
                                  ).first()
            if row is None:
                return None
            row.active, row.deleted_at, row.updated_at = False, now, now
            tree = select(k.id).where(k.created_by_key_id == key_id).cte("created", recursive=True)
            tree = tree.union(select(k.id).where(k.created_by_key_id == tree.c.id))
            minted = session.scalars(select(k).where(k.id.in_(select(tree.c.id)),
                                                     k.user_id == user_id,
                                                     k.deleted_at.is_(None)).with_for_update()
                                     ).all()
            for child in minted:
                child.active, child.deleted_at, child.updated_at = False, now, now
            return [row.key_hash] + [child.key_hash for child in minted]
