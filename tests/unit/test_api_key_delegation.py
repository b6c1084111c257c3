"""A key created with an API key stays within that key's rights (issue 13.4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from etrans.domain.api_keys import Permission, check_delegation
from etrans.errors import Forbidden

NOW = datetime(2026, 12, 6, tzinfo=UTC)
LEVELS = list(Permission)


@pytest.mark.parametrize("creator", LEVELS)
@pytest.mark.parametrize("asked", LEVELS)
def test_permission_is_at_most_the_creators(creator: Permission, asked: Permission) -> None:
    if asked <= creator:
        check_delegation(creator_permission=creator, creator_expires_at=None, permission=asked,
                         expires_at=None)
    else:
        with pytest.raises(Forbidden, match="more permission than its own"):
            check_delegation(creator_permission=creator, creator_expires_at=None,
                             permission=asked, expires_at=None)


def test_expiry_is_at_most_the_creators() -> None:
    ends = NOW + timedelta(days=30)
    rule = {"creator_permission": Permission.full_access, "permission": Permission.read_only}
    check_delegation(**rule, creator_expires_at=ends, expires_at=ends)
    check_delegation(**rule, creator_expires_at=ends, expires_at=NOW + timedelta(days=7))
    check_delegation(**rule, creator_expires_at=None, expires_at=None)
    check_delegation(**rule, creator_expires_at=None, expires_at=NOW + timedelta(days=365))
    for later in (None, ends + timedelta(seconds=1), NOW + timedelta(days=365)):
        with pytest.raises(Forbidden, match="cannot create a key that outlives it"):
            check_delegation(**rule, creator_expires_at=ends, expires_at=later)
