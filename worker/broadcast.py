"""Fan-out of new entries from the dissection thread to live subscribers (SSE clients).

Each subscriber has its own bounded queue; a slow one loses its oldest events, never blocks
the dissection thread, and is told how many it lost. A batch of rows crosses to the event loop
in one call and leaves the queue in one get (the /stream writes it in one send): per-row
wake-ups cost more than a busy node's entries allow.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from shark.queues import DropOldest
from worker.store.index import IndexRow

Predicate = Callable[[IndexRow], bool]


class Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop, predicate: Predicate, maxsize: int) -> None:
        self.loop = loop
        self.predicate = predicate
        self.queue: DropOldest[IndexRow] = DropOldest(maxsize)


class Broadcaster:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._lost_before = 0     # rows dropped from the queues of subscribers gone since

    def subscribe(self, predicate: Predicate, maxsize: int = 1000) -> Subscriber:
        subscriber = Subscriber(asyncio.get_running_loop(), predicate, maxsize)
        with self._lock:
            self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.discard(subscriber)
                self._lost_before += subscriber.queue.dropped

    @property
    def lost_total(self) -> int:
        """Rows dropped from live subscribers' queues since the start (slow readers)."""
        with self._lock:
            return self._lost_before + sum(s.queue.dropped for s in self._subscribers)

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
                    subscriber.loop.call_soon_threadsafe(subscriber.queue.put_many, matching)
                except RuntimeError:  # its event loop is closed: the client is gone
                    self.unsubscribe(subscriber)
