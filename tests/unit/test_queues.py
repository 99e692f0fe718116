"""shark/queues.py: the drop-oldest queue a slow reader gets (worker live subscribers, script logs)."""

from __future__ import annotations

import asyncio

from shark.queues import DropOldest


def test_a_full_queue_drops_the_oldest_and_the_next_get_says_how_many():
    async def go():
        queue: DropOldest[int] = DropOldest(3)
        for number in range(5):
            queue.put(number)
        return [await queue.get() for _ in range(3)]
    assert asyncio.run(go()) == [(2, 2), (3, 0), (4, 0)]


def test_get_waits_for_a_put():
    async def go():
        queue: DropOldest[str] = DropOldest(2)
        waiting = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        queue.put("line")
        return await asyncio.wait_for(waiting, 1)
    assert asyncio.run(go()) == ("line", 0)


def test_batches_drop_the_oldest_beyond_the_size_and_come_out_at_most_limit_at_a_time():
    async def go():
        queue: DropOldest[int] = DropOldest(5)
        queue.put_many(range(3))
        queue.put_many(range(3, 8))          # 8 items in a queue of 5: 0, 1, 2 dropped
        first = await queue.get_batch(2)
        rest = await queue.get_batch(100)
        queue.put_many([])                   # nothing put: a get still waits
        waiting = asyncio.create_task(queue.get_batch(10))
        await asyncio.sleep(0)
        assert not waiting.done()
        queue.put_many([9])
        return first, rest, await asyncio.wait_for(waiting, 1)
    assert asyncio.run(go()) == (([3, 4], 3), ([5, 6, 7], 0), ([9], 0))
