"""hub/queues.py: the drop-oldest queue a slow reader gets (script logs; the live feed's shape)."""

from __future__ import annotations

import asyncio

from hub.queues import DropOldest


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
