"""Driving one dissector session by hand in unit tests, as the assembler drives it.

    class Conv(sessions.Conv):
        def __init__(self, body_limit: int = 0) -> None:
            super().__init__(lambda emit: RedisDissector().session(FLOW, emit, body_limit))

    conv = Conv()
    n = conv.c(b"*1\\r\\n$4\\r\\nPING\\r\\n").s(b"+PONG\\r\\n").calls
    exchanges = conv.close()

Every call (a chunk, a gap, the close) is numbered n = 1, 2, ...: by default its ts is
1000 * n and a chunk's packet ref is (segment, n), so a test can tell which chunk a field came
from; each direction's stream offset follows the bytes and gaps sent. `c`, `s` and `gap` return
the driver (chains read as the conversation); `calls` is the number of the last call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import pytest

from shark import compiled

from worker.dissectors.base import Direction, Exchange, Session

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT


class Conv:
    """`open_session(emit)` makes the session (emit collects its exchanges in `out`).
    `timed_gaps=False`: gaps are not numbered calls and come at ts 0; `close_ts`: the close
    at that ts instead of a numbered call; `check_errors`: close() asserts the session counted
    no parse errors."""

    def __init__(self, open_session: Callable[[Callable[[Exchange], None]], Any], *,
                 segment: int = 7, timed_gaps: bool = True, close_ts: int | None = None,
                 check_errors: bool = False) -> None:
        self.out: list[Exchange] = []
        self.session: Session = open_session(self.out.append)
        self.segment = segment
        self.timed_gaps = timed_gaps
        self.close_ts = close_ts
        self.check_errors = check_errors
        self.offsets = [0, 0]
        self.calls = 0

    def send(self, direction: Direction, data: bytes, ts: int | None = None) -> int:
        """One chunk; returns its call number."""
        self.calls += 1
        n = self.calls
        self.session.on_data(direction, data, self.offsets[direction],
                             1000 * n if ts is None else ts, (self.segment, n))
        self.offsets[direction] += len(data)
        return n

    def c(self, data: bytes) -> Conv:
        self.send(C2S, data)
        return self

    def s(self, data: bytes) -> Conv:
        self.send(S2C, data)
        return self

    def feed(self, chunks: Iterable[tuple[Direction, bytes]]) -> Conv:
        for direction, data in chunks:
            self.send(direction, data)
        return self

    def gap(self, direction: Direction, length: int) -> Conv:
        ts = 0
        if self.timed_gaps:
            self.calls += 1
            ts = 1000 * self.calls
        self.session.on_gap(direction, self.offsets[direction], length, ts)
        self.offsets[direction] += length
        return self

    def close(self) -> list[Exchange]:
        if self.close_ts is None:
            self.calls += 1
            self.session.on_close(1000 * self.calls)
        else:
            self.session.on_close(self.close_ts)
        if self.check_errors:
            assert self.session.errors == 0    # type: ignore[attr-defined]
        return self.out


def comparable(exchange: Exchange) -> dict[str, Any]:
    """An exchange without the fields that depend on how bytes were split into chunks."""
    fields = asdict(exchange)
    for key in ("start_ns", "end_ns", "first_ref", "last_ref"):
        fields.pop(key)
    return fields


# -- a reader's fast path for whole messages against its general loop ----------------------------

Step = tuple[str, bytes | int]     # ("c" | "s", chunk) or ("gc" | "gs", gap length)


def play(conv: Conv, steps: list[Step]) -> list[Exchange]:
    for kind, what in steps:
        if kind in ("c", "s"):
            assert isinstance(what, bytes)
            conv.send(C2S if kind == "c" else S2C, what)
        else:
            assert isinstance(what, int)
            conv.gap(C2S if kind == "gc" else S2C, what)
    return conv.close()


@contextmanager
def whole_messages(reader: type, on: bool) -> Iterator[list[int]]:
    """`reader`'s fast path for whole messages in a chunk (its `_whole(buf, pos, ...)`, which
    returns where it stopped) on, counting the bytes it took, or off (it takes nothing).
    A reader compiled by mypyc calls its own _whole directly, past any patch: these tests
    then run in a pure-Python process instead (tests/unit/test_compiled.py)."""
    if compiled.is_compiled(sys.modules[reader.__module__]):
        pytest.skip("compiled reader: run with SHARK_PURE_PYTHON=1 by test_compiled.py")
    original = reader._whole      # type: ignore[attr-defined]
    taken = [0]

    def whole(self: Any, buf: bytes | bytearray, pos: int, *rest: object) -> int:
        if not on:
            return pos
        end = original(self, buf, pos, *rest)
        taken[0] += end - pos
        return end

    reader._whole = whole         # type: ignore[attr-defined]
    try:
        yield taken
    finally:
        reader._whole = original  # type: ignore[attr-defined]


def both_paths(reader: type, make_conv: Callable[[], Conv], steps: list[Step]) -> tuple[list[Exchange], int]:
    """The exchanges of `steps` (equal with `reader`'s fast path off and on) and the bytes the
    fast path took."""
    with whole_messages(reader, False):
        slow = play(make_conv(), steps)
    with whole_messages(reader, True) as taken:
        fast = play(make_conv(), steps)
    assert fast == slow
    return fast, taken[0]
