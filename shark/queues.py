"""A bounded queue for one slow reader on the event loop: `put` never blocks; when full it
drops the oldest item and counts it, and `get` says how many were dropped before the item it
returns, so the reader can tell its user (`event: lost`, a log line) instead of holding the
writer back (Litestar's channels do the same, "dropleft"). Used by the worker's live
subscribers (worker/broadcast.py), the hub's live clients (hub/stream.py) and its script logs;
`put_many` and `get_batch` let a fast writer and reader move a batch per wake-up instead of an
item."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldest(Generic[T]):
    def __init__(self, size: int) -> None:
        self.items: deque[T] = deque()
        self.size = size
        self.lost = 0           # dropped since the last get
        self.dropped = 0        # dropped in all
        self.ready = asyncio.Event()

    def put(self, item: T) -> None:
        if len(self.items) >= self.size:
            self.items.popleft()
            self.lost += 1
            self.dropped += 1
        self.items.append(item)
        self.ready.set()

    async def get(self) -> tuple[T, int]:
        """The oldest item, and the number of items dropped since the last get."""
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        lost, self.lost = self.lost, 0
        return self.items.popleft(), lost

    def put_many(self, items: Iterable[T]) -> None:
        """Put each of `items` (one wake-up for all of them)."""
        self.items.extend(items)
        over = len(self.items) - self.size
        if over > 0:
            for _ in range(over):
                self.items.popleft()
            self.lost += over
            self.dropped += over
        if self.items:
            self.ready.set()

    async def get_batch(self, limit: int) -> tuple[list[T], int]:
        """The oldest items (at least one, at most `limit`), and the number of items dropped
        since the last get."""
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        lost, self.lost = self.lost, 0
        if len(self.items) <= limit:
            batch = list(self.items)
            self.items.clear()
        else:
            batch = [self.items.popleft() for _ in range(limit)]
        return batch, lost
