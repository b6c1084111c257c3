"""How GroupCommit cuts rounds: by item count and by weight (bytes), each caller's items in one
round, and a caller heavier than the cap still written (alone)."""

from __future__ import annotations

import trio

from etrans.adapters.sql.group_commit import GroupCommit


async def test_rounds_stop_at_the_weight_cap_and_keep_callers_whole() -> None:
    rounds: list[list[bytes]] = []

    async def write_group(items: list[bytes]) -> None:
        rounds.append(list(items))
        await trio.sleep(0.01)  # a write in flight: the next callers queue up behind it

    writer: GroupCommit[bytes] = GroupCommit(write_group, weight=len, max_weight=100)
    callers = [[b"a" * 40], [b"b" * 30, b"c" * 30], [b"d" * 40], [b"e" * 250], [b"f" * 10]]

    async with trio.open_nursery() as nursery:
        for items in callers:
            nursery.start_soon(writer.write, items)
            await trio.lowlevel.checkpoint()

    assert sorted(item for r in rounds for item in r) == sorted(i for c in callers for i in c)
    for written in rounds:
        assert sum(map(len, written)) <= 100 or len(written) == 1  # alone when heavier
        for caller in callers:  # a caller's items are never split between rounds
            assert set(caller) <= set(written) or not set(caller) & set(written)
    # The first caller leads alone; the next three queue behind it and fill one round to the
    # cap; the heavy one goes alone; the last one follows.
    assert [[len(item) for item in r] for r in rounds] == [[40], [30, 30, 40], [250], [10]]
    assert writer.statistics().items == 6
