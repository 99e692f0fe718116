"""A bounded queue for one slow reader on the event loop: `put` never blocks; when full it
drops the oldest item and counts it, and `get` says how many were dropped before the item it
returns, so the reader can tell its user (`event: lost`, a log line) instead of holding the
writer back (Litestar's channels do the same, "dropleft")."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldest(Generic[T]):
    def __init__(self, size: int) -> None:
        self.items: deque[T] = deque()
        self.size = size
        self.lost = 0
        self.ready = asyncio.Event()

    def put(self, item: T) -> None:
        if len(self.items) >= self.size:
            self.items.popleft()
            self.lost += 1
        self.items.append(item)
        self.ready.set()

    async def get(self) -> tuple[T, int]:
        """The oldest item, and the number of items dropped since the last get."""
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        lost, self.lost = self.lost, 0
        return self.items.popleft(), lost
