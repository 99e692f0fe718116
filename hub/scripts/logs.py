"""The scripts' console: console.log/error lines and what the hub says about each script
(loaded, failed, stopped, disabled), kept in a bounded ring and fanned out to followers.

Used on the event loop only. Each follower has a bounded queue that drops its oldest lines
and counts them, so a slow `kubectl shark scripts logs -f` never holds the hub back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

import msgspec

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
    def __init__(self, script: str | None, size: int) -> None:
        self.script = script
        self.lines: deque[LogLine] = deque()
        self.size = size
        self.lost = 0
        self.ready = asyncio.Event()

    def put(self, line: LogLine) -> None:
        if self.script is not None and line.script != self.script:
            return
        if len(self.lines) >= self.size:
            self.lines.popleft()
            self.lost += 1
        self.lines.append(line)
        self.ready.set()


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
                while not follower.lines:
                    follower.ready.clear()
                    await follower.ready.wait()
                lost, follower.lost = follower.lost, 0
                yield follower.lines.popleft(), lost
        finally:
            self.followers.discard(follower)
