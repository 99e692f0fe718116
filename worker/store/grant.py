"""The index's share of --storage-limit, agreed between the two processes that write the store.

The capture process writes the segments (SegmentWriter), the API process writes the index
(EntryIndex): two writers of one directory under one limit. Each measuring the other and
taking what looks free would let both take the same free bytes at the same moment (the index
grew past the limit that way while dissection caught up). So the room is split up front:

- the index side asks for a size (IndexBudget.fits, before any write that can grow the index
  files: rows, pruning, vacuum steps, tags), and writes only within what was granted;
- the writer answers each request once it has room for it beside its segments (it evicts the
  oldest segments for it first) and keeps the segments within the limit minus the grant.

The request and the answer are two 64-bit cells in memory shared across the fork (one aligned
store each: no lock, so capture never waits for the API process), each holding a sequence
number and a size. The index side counts the grant only when its sequence number is that of its
latest request: a lower size asked for takes effect for both sides before the index grows again.

Each cell has a pipe beside it that its writer puts a byte in after the store (non-blocking: a
full pipe already says "look"), so the other side waits in select instead of polling: the
capture loop idles up to 0.1 s between looks and dissection waited that long per request (14
times, ~1 s, while a 40k-entry replay was indexed). The cells stay the truth; a byte only wakes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import select
import time

_SIZE_BITS = 48                      # 256 TiB
_SIZE_MASK = (1 << _SIZE_BITS) - 1
_SEQ_MASK = (1 << (63 - _SIZE_BITS)) - 1
ASKED, GIVEN = 0, 1


class IndexGrant:
    """The two cells and their wake-up pipes; made before the capture process is forked, used
    by both processes."""

    def __init__(self) -> None:
        self._cells = multiprocessing.RawArray(ctypes.c_int64, 2)
        self._asked_r, self._asked_w = _wake_pipe()
        self._given_r, self._given_w = _wake_pipe()

    @property
    def asked_fd(self) -> int:
        """Readable after a request: the writer's loop selects on it, then calls drain_asked."""
        return self._asked_r

    def drain_asked(self) -> None:
        _drain(self._asked_r)

    def wait_given(self, timeout: float) -> None:
        """Sleep until an answer is written (or `timeout`); the caller reads the cell."""
        if select.select([self._given_r], [], [], max(0.0, timeout))[0]:
            _drain(self._given_r)

    def drain_given(self) -> None:
        """Forget wake-ups of earlier answers (before waiting for a new one)."""
        _drain(self._given_r)

    def _read(self, cell: int) -> tuple[int, int]:
        value = self._cells[cell]
        return value >> _SIZE_BITS, value & _SIZE_MASK

    def _write(self, cell: int, seq: int, size: int) -> None:
        self._cells[cell] = ((seq & _SEQ_MASK) << _SIZE_BITS) | min(max(0, size), _SIZE_MASK)

    def asked(self) -> tuple[int, int]:
        """(seq, bytes) of the index side's latest request; seq 0 before any."""
        return self._read(ASKED)

    def ask(self, seq: int, size: int) -> None:
        self._write(ASKED, seq, size)
        _wake(self._asked_w)

    def given(self) -> tuple[int, int]:
        """(seq, bytes): the writer's answer to request seq."""
        return self._read(GIVEN)

    def give(self, seq: int, size: int) -> None:
        self._write(GIVEN, seq, size)
        _wake(self._given_w)


def _wake_pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    return read_end, write_end


def _wake(fd: int) -> None:
    try:
        os.write(fd, b"\0")
    except OSError:
        pass   # full: a wake-up waits already; no reader, or closed at shutdown: none to wake


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:   # empty (BlockingIOError), or closed at shutdown
        pass


class IndexBudget:
    """The index side: keeps the index files within what the writer granted.

    fits(now, growth, keep) says whether a write that can add `growth` bytes to the index's
    files (now `now` bytes) fits, keeping `keep` bytes spare beside it (room the writes that
    shrink the index need: pruning and vacuum go through the WAL too). When it does not fit it
    asks for more (with half a `step` to spare, so that the next writes need not all ask) and
    waits for the answer up to `wait` seconds. A write that fits but leaves less than half a
    step asks for the next step at once, without waiting: the writer keeps to its last answer
    until it gives the next, so the room of that answer may be used meanwhile, and a busy
    writer rarely waits for the capture process to be scheduled (one wait per step before:
    ~30 on mqtt.pcap, ~15% of the index write thread's time). A grant more than 2 steps above
    what the index needs is given back.
    """

    def __init__(self, grant: IndexGrant, limit: int) -> None:
        self._grant = grant
        self._seq = 0
        # The writer's last answer to us, usable while a larger request waits for its answer
        # (the writer keeps the room it gave until it answers the next); 0 after a request for
        # less (that takes effect for both sides before the index grows again).
        self._held = 0
        self._floor = MIN_STEP
        self.limit = limit
        self.waits = 0              # writes that asked for more room and waited for it
        self.refused = 0            # ... and found none in time (they are tried again later)

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = value
        # What one write may add (rows are written in transactions that fit it), and the
        # room kept for the writes that shrink the index.
        self.step = min(max(step_cap(value), self._floor), max(self._floor, value // STEP_SHARE))

    @property
    def floor(self) -> int:
        return self._floor

    @floor.setter
    def floor(self, value: int) -> None:
        """The smallest step (the index sets it from its page size: a step holds a few rows)."""
        self._floor = max(MIN_STEP, value)
        self.limit = self._limit

    def granted(self) -> int:
        """What the index may use now: the latest answer; while a request waits for its
        answer, the answer before if that request was for more, else 0."""
        seq, size = self._grant.given()
        if seq == self._seq and self._seq:
            self._held = size
            return min(size, self._limit)
        return min(self._held, self._limit)

    def over(self, now: int) -> bool:
        """The index's `now` bytes are above the room its latest request was answered with
        (a lowered limit, an older and larger index: only shrinking brings it back)."""
        return self._answered() and now > self.granted()

    def fits(self, now: int, growth: int, keep: int, wait: float) -> bool:
        need = now + growth + keep
        granted = self.granted()
        if need <= granted:
            if granted > need + 2 * self.step:      # the index shrank: give the room back
                self._ask(need + self.step // 2)
            elif granted - need < self.step // 2 and self._answered():
                self._ask(need + self.step)         # the next step, asked ahead
            return True
        self.waits += 1
        self._grant.drain_given()
        if self._seq == 0 or self._grant.asked()[1] < need or self._answered():
            self._ask(need + self.step // 2)
        deadline = time.monotonic() + wait
        while not self._answered() and (left := deadline - time.monotonic()) > 0:
            self._grant.wait_given(left)
        if need <= self.granted():
            return True
        self.refused += 1
        return False

    def _answered(self) -> bool:
        return self._grant.given()[0] == self._seq

    def _ask(self, size: int) -> None:
        size = min(size, self._limit)
        if self._answered():
            self._held = self._grant.given()[1]
        if size < self._held:       # less: the room held now is not ours once asked
            self._held = 0
        self._seq = self._seq % _SEQ_MASK + 1
        self._grant.ask(self._seq, size)


# A step is 1/16 of the limit, kept between its floor (128 KiB, or 32 of the index's pages if
# more: EntryIndex sets it) and its cap: 8 MiB, or above a 1 GiB limit 1/128 of it up to 32 MiB
# (the WAL's largest limit, worker/store/index.py). The index holds one spare, and up to two more
# before it gives room back, so at most ~3 steps are granted and unused at a time: under 3% of a
# limit above 1 GiB. Rows are written in transactions that fit a step, and each transaction
# costs (its Python, the leaves and header pages its COMMIT writes again, their checkpoint): a
# 4 GB limit's 8 MiB steps cut a fast write of mqtt rows into ~4 times as many transactions as
# 32 MiB ones (docs/BENCHMARKS.md, "The grant's step").
MIN_STEP = 128 * 1024
MAX_STEP = 8 * 1024 * 1024
BIG_STEP_SHARE = 128
BIG_STEP_MAX = 32 * 1024 * 1024
STEP_SHARE = 16


def step_cap(limit: int) -> int:
    """The largest step for a storage limit (see MAX_STEP)."""
    return max(MAX_STEP, min(BIG_STEP_MAX, limit // BIG_STEP_SHARE))
