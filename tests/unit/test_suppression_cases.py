"""The suppression use cases (:mod:`etrans.app.suppressions`) on a bus with an in-memory store
that implements :class:`~etrans.app.ports.SuppressionStore`: normalisation, the first entry
stays, reasons a user may add, and a store that does not answer is a 503 (never a 500)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from etrans.app.bus import MessageBus
from etrans.app.records import Suppression, SuppressionFilter, SuppressionPage
from etrans.app.suppressions import (
    AddSuppression,
    ListSuppressions,
    RemoveSuppression,
    SuppressionDeps,
    register,
)
from etrans.errors import InvalidInput, NotFound, RetryLater, UpstreamUnavailable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.domain.delivery_log import RecipientOutcome

NOW = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)


class MemoryStore:
    def __init__(self) -> None:
        self.rows: dict[tuple[int, str], Suppression] = {}
        self.down = False
        self.filters: list[SuppressionFilter] = []

    def _check(self) -> None:
        if self.down:
            raise RetryLater("USEND DB suppressions failed: OperationalError")

    async def suppressed(self, user_id: int, addresses: Sequence[str]) -> dict[str, Suppression]:
        self._check()
        return {a: self.rows[(user_id, a)] for a in addresses if (user_id, a) in self.rows}

    async def add(self, entries: Sequence[Suppression]) -> int:
        self._check()
        new = [e for e in entries if (e.user_id, e.address) not in self.rows]
        for e in new:
            self.rows[(e.user_id, e.address)] = replace(e, created_at=NOW)
        return len(new)

    async def add_hard_bounces(self, outcomes: Sequence[RecipientOutcome]) -> int:
        raise NotImplementedError

    async def remove(self, user_id: int, address: str) -> bool:
        self._check()
        return self.rows.pop((user_id, address), None) is not None

    async def list(self, query: SuppressionFilter) -> SuppressionPage:
        self._check()
        self.filters.append(query)
        rows = [r for (u, _), r in self.rows.items() if u == query.user_id]
        return SuppressionPage(rows=rows, total=len(rows))


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def bus(store: MemoryStore) -> MessageBus:
    bus = MessageBus()
    register(bus, SuppressionDeps(store))
    return bus


async def test_add_normalises_and_the_first_entry_stays(bus: MessageBus) -> None:
    first = await bus.handle(AddSuppression(1, " Bob@Example.ORG ", "complaint"))
    assert first.created
    assert (first.entry.address, first.entry.reason, first.entry.created_at) == (
        "bob@example.org", "complaint", NOW)
    again = await bus.handle(AddSuppression(1, "BOB@example.org"))
    assert not again.created
    assert again.entry.reason == "complaint"
    assert (await bus.handle(AddSuppression(2, "bob@example.org"))).created


@pytest.mark.parametrize(("email", "reason"), [
    ("bob@example.org", "hard_bounce"), ("bob@example.org", "spam"), ("bob", "manual"),
    ("Bob <bob@example.org>", "manual"), ("a" * 250 + "@example.org", "manual"),
])
async def test_what_a_user_cannot_add(bus: MessageBus, email: str, reason: str) -> None:
    with pytest.raises(InvalidInput):
        await bus.handle(AddSuppression(1, email, reason))


async def test_remove_is_per_user_and_normalised(bus: MessageBus) -> None:
    await bus.handle(AddSuppression(1, "bob@example.org"))
    with pytest.raises(NotFound):
        await bus.handle(RemoveSuppression(2, "bob@example.org"))
    assert await bus.handle(RemoveSuppression(1, "BOB@Example.org")) == "bob@example.org"
    with pytest.raises(NotFound):
        await bus.handle(RemoveSuppression(1, "bob@example.org"))
    for bad in ("", "a" * 321, "x\x00@example.org"):
        with pytest.raises(InvalidInput):
            await bus.handle(RemoveSuppression(1, bad))


async def test_list_parses_its_filters(bus: MessageBus, store: MemoryStore) -> None:
    await bus.handle(ListSuppressions(1, page=2, per_page=5, reason="manual", address=" ExAm ",
                                      created_at_from="2026-12-01T01:00:00+01:00"))
    assert store.filters[-1] == SuppressionFilter(
        user_id=1, reason="manual", address="exam", created_from=datetime(2026, 12, 1, tzinfo=UTC),
        created_to=None, page=2, per_page=5)
    for bad in (ListSuppressions(1, reason="bogus"), ListSuppressions(1, created_at_to="x"),
                ListSuppressions(1, created_at_from="2026-12-02", created_at_to="2026-12-01")):
        with pytest.raises(InvalidInput):
            await bus.handle(bad)


async def test_a_store_that_does_not_answer_is_503(bus: MessageBus, store: MemoryStore) -> None:
    store.down = True
    for command in (ListSuppressions(1), AddSuppression(1, "bob@example.org"),
                    RemoveSuppression(1, "bob@example.org")):
        with pytest.raises(UpstreamUnavailable) as raised:
            await bus.handle(command)
        assert raised.value.status_code == 503
