"""The scripts' console: console.log/error lines and what the hub says about each script
(loaded, failed, stopped, disabled), kept in a bounded ring and fanned out to followers.

Used on the event loop only. Each follower has a bounded queue that drops its oldest lines
and counts them, so a slow `kubectl shark scripts logs -f` never holds the hub back.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

import msgspec

from shark.queues import DropOldest

Level = Literal["info", "warn", "error"]
RING_SIZE = 2000
FOLLOWER_QUEUE = 1000

log = logging.getLogger("shark.hub.scripts")


class LogLine(msgspec.Struct):
    seq: int
    ts: float
    script: str
    level: Level
    source: Literal["console", "hub"]   # the script's console, or the hub about the script
    text: str


class Follower:
    """One `logs -f`: the lines of its script (of every script when None), in its own queue."""

    def __init__(self, script: str | None, size: int) -> None:
        self.script = script
        self.queue: DropOldest[LogLine] = DropOldest(size)

    def put(self, line: LogLine) -> None:
        if self.script is None or line.script == self.script:
            self.queue.put(line)


class ScriptLogs:
    def __init__(self, size: int = RING_SIZE) -> None:
        self.ring: deque[LogLine] = deque(maxlen=size)
        self.next_seq = 1
        self.followers: set[Follower] = set()

    def add(self, script: str, level: Level, text: str, source: Literal["console", "hub"] = "console") -> LogLine:
        line = LogLine(self.next_seq, time.time(), script, level, source, text)
        self.next_seq += 1
        self.ring.append(line)
        if source == "hub":   # the hub's own word on a script also goes to the hub's log
            log.log(logging.WARNING if level == "error" else logging.INFO, "script %s: %s", script, text)
        for follower in self.followers:
            follower.put(line)
        return line

    def recent(self, script: str | None = None, limit: int = 100) -> list[LogLine]:
        lines = [line for line in self.ring if script is None or line.script == script]
        return lines[-limit:]

    async def follow(self, script: str | None, backlog: int) -> AsyncIterator[tuple[LogLine, int]]:
        """The last `backlog` lines, then every new one, as (line, lines lost before it)."""
        follower = Follower(script, FOLLOWER_QUEUE)
        for line in self.recent(script, backlog):
            follower.put(line)
        self.followers.add(follower)
        try:
            while True:
                yield await follower.queue.get()
        finally:
            self.followers.discard(follower)
