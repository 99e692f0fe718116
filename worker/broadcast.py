"""Fan-out of new entries from the dissection thread to live subscribers (SSE clients).

Each subscriber has its own bounded queue; a slow one loses its oldest events, never blocks
the dissection thread, and is told how many it lost.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from worker.store.index import IndexRow

Predicate = Callable[[IndexRow], bool]


class Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop, predicate: Predicate, maxsize: int) -> None:
        self.loop = loop
        self.predicate = predicate
        self.queue: asyncio.Queue[IndexRow] = asyncio.Queue(maxsize)
        self.lost = 0

    def _put(self, rows: list[IndexRow]) -> None:
        for row in rows:
            if self.queue.full():
                self.queue.get_nowait()
                self.lost += 1
            self.queue.put_nowait(row)

    def take_lost(self) -> int:
        lost, self.lost = self.lost, 0
        return lost


class Broadcaster:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self._lock = threading.Lock()
        self.lost_total = 0

    def subscribe(self, predicate: Predicate, maxsize: int = 1000) -> Subscriber:
        subscriber = Subscriber(asyncio.get_running_loop(), predicate, maxsize)
        with self._lock:
            self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)
        self.lost_total += subscriber.lost

    @property
    def count(self) -> int:
        return len(self._subscribers)

    def publish(self, rows: list[IndexRow]) -> None:
        """Called from the dissection thread with each batch of new rows."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                matching = [row for row in rows if subscriber.predicate(row)]
            except Exception:  # a filter must never stop the feed for others
                continue
            if matching:
                try:
                    subscriber.loop.call_soon_threadsafe(subscriber._put, matching)
                except RuntimeError:  # its event loop is closed: the client is gone
                    self.unsubscribe(subscriber)
