"""The hub's k-way merge: several sources, each already in order (a worker's /entries newest
first, a worker's /pcap by time), merged into one ordered stream while they are read, holding
one item per source whatever the number of sources and the length of their answers."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# A source's next (key, item), or None once it has no more (ended, or failed: the pull itself
# records why).
Pull = Callable[[], Awaitable[tuple[Any, T] | None]]


class Merge(Generic[T]):
    """Items of every source, smallest key first (ties: the source listed first). prime()
    awaits every source's first item together; items() then yields (source index, item) and
    reads the next item of that source only when asked for the one after."""

    def __init__(self, pulls: Sequence[Pull[T]]) -> None:
        self._pulls = list(pulls)
        self._heap: list[tuple[Any, int, T]] = []
        self._dropped: set[int] = set()
        self._primed = False

    async def prime(self) -> None:
        self._primed = True
        await asyncio.gather(*(self._pull(index) for index in range(len(self._pulls))))

    async def _pull(self, index: int) -> None:
        if index in self._dropped:
            return
        got = await self._pulls[index]()
        if got is not None and index not in self._dropped:
            heapq.heappush(self._heap, (got[0], index, got[1]))

    def first(self) -> tuple[int, T] | None:
        """(source index, item) that comes out next, None when nothing is held."""
        if not self._heap:
            return None
        _, index, item = self._heap[0]
        return index, item

    def drop(self, index: int) -> None:
        """Leave source `index` out from now on (its held item too)."""
        self._dropped.add(index)
        if any(held[1] == index for held in self._heap):
            self._heap = [held for held in self._heap if held[1] != index]
            heapq.heapify(self._heap)

    async def items(self) -> AsyncIterator[tuple[int, T]]:
        if not self._primed:
            await self.prime()
        while self._heap:
            _, index, item = heapq.heappop(self._heap)
            yield index, item
            await self._pull(index)
