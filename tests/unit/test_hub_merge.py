"""hub/merge.py: the k-way merge behind /entries and /pcap."""

from __future__ import annotations

import asyncio
from functools import partial

from hub.merge import Merge


def sources(*lists: list[int]):
    """Pulls over in-order lists, and how many items each pull handed out."""
    iterators = [iter(items) for items in lists]
    pulled = [0] * len(lists)

    async def pull(index: int):
        await asyncio.sleep(0)
        item = next(iterators[index], None)
        if item is None:
            return None
        pulled[index] += 1
        return item, f"{index}:{item}"
    return [partial(pull, i) for i in range(len(lists))], pulled


def test_merges_in_key_order_ties_by_source():
    pulls, _ = sources([1, 4, 9], [2, 3, 4], [], [0])

    async def go():
        return [item async for _, item in Merge(pulls).items()]
    assert asyncio.run(go()) == ["3:0", "0:1", "1:2", "1:3", "0:4", "1:4", "0:9"]


def test_holds_one_item_per_source_and_reads_no_further_than_asked():
    pulls, pulled = sources([1, 2, 3, 4], [5, 6, 7])

    async def go():
        merge = Merge(pulls)
        await merge.prime()
        assert pulled == [1, 1] and merge.first() == (0, "0:1")
        out = []
        async for _, item in merge.items():
            out.append(item)
            if len(out) == 2:
                break
        return out
    assert asyncio.run(go()) == ["0:1", "0:2"]
    assert pulled == [2, 1]


def test_a_dropped_source_is_left_out_with_its_held_item():
    pulls, pulled = sources([1, 3], [2, 4])

    async def go():
        merge = Merge(pulls)
        await merge.prime()
        merge.drop(1)
        return [item async for _, item in merge.items()]
    assert asyncio.run(go()) == ["0:1", "0:3"]
    assert pulled == [2, 1]
