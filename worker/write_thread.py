"""The sharded merge's index writes in a thread of their own (worker/sharded.py).

The merge thread decodes the shards' reports, merges and numbers their rows (Python, under the
GIL); IndexWriter then binds them and sqlite steps its statements and commits, which it does
without the GIL. With the writes in this thread, sqlite's part of one release runs on the second
core while the merge decodes the next reports (with one busy flow, mqtt, the other shards idle
and that core is partly free).

Every write is IndexWriter's as before, in the order released: the same seqs, rows and cursor
in one transaction, room waits and a full disk handled there, rows streamed live after they
are indexed. A release put while the writer is busy joins the write still queued (up to
MAX_WRITE_ROWS): one transaction instead of several, which writes fewer WAL frames (each
commit writes the tables' and indexes' last leaves again) and pays its per-write Python once.
The queue is bounded in rows (MAX_QUEUED_ROWS): past it the merge waits, so it stops reading
the shards, whose pipes then hold them back. Prune runs here too, every PRUNE_EVERY_S, as
IndexWriter's state is this thread's alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from worker.packet import PacketRef
from worker.pipeline import PRUNE_EVERY_S, DissectionStats, IndexWriter
from worker.store.index import APPEND_ROWS, IndexValues, flat_chunks

log = logging.getLogger("shark.worker.sharded")

# Rows released and not yet written past which the merge waits for the writer (~30 MB, as
# sharded.MAX_AHEAD_ROWS); one release more than that may wait in the queue.
MAX_QUEUED_ROWS = 20_000
# The most rows queued releases are joined into (one transaction, well within a budget step:
# IndexWriter cuts a write into steps anyway). A write's rows are published to the live
# streams at once, and a subscriber's queue holds two of the largest publishes
# (worker/api/app.py SUBSCRIBER_QUEUE, 4096 rows): a larger write would overflow the queue of
# a client that keeps up. (bench_live.py replaying redis.pcap at ~39k entries/s: 0 lost.)
MAX_WRITE_ROWS = 2048
# How often a waiting merge looks at the stop event.
PUT_WAIT_S = 0.1

# values, cursor, the segment read, whether the replayed file is then indexed to its end, and
# the values' flat_chunks
_Write = tuple[list[IndexValues], "PacketRef | None", int, bool, list[tuple[Any, ...]]]


class WriteThread:
    """IndexWriter.write_values() of each put(), in order, in thread `shark-index-write`."""

    def __init__(self, writer: IndexWriter, stats: DissectionStats, stop: threading.Event,
                 max_rows: int = MAX_QUEUED_ROWS, max_write_rows: int = MAX_WRITE_ROWS) -> None:
        self._writer = writer
        self._stats = stats
        self._stop = stop
        self._max_rows = max_rows
        self._max_write_rows = max_write_rows
        self._queue: deque[_Write | None] = deque()     # None: no more puts
        self._queued_rows = 0
        self._busy = False            # a write taken off the queue is being made
        self._closed = False
        self._ready = threading.Condition(threading.Lock())
        self._reading_segment = 0     # prune's, between writes: the merge's latest
        # Writes made, whose rows the merge thread frees at its next put: ~5,000 rows of
        # tuples, bytearrays and numbers a write, ~7% of this thread's CPU when it freed them.
        self._spent: list[_Write] = []
        self.errors = 0               # writes that failed otherwise than for room (counted)
        self.ended = False            # the rows released at the end of a replay are indexed
        self._thread = threading.Thread(target=self._run, name="shark-index-write", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, values: list[IndexValues], cursor: PacketRef | None, reading_segment: int,
            ended: bool) -> None:
        """Queue a write (after waiting while MAX_QUEUED_ROWS are queued, unless stopping:
        what is released is written, as before, and the writer drains the queue at stop), or
        join it to the write queued last, not taken yet. The rows' append statements'
        parameters are made here, in the merge thread: it waits for the writer, the longer
        path."""
        with self._ready:
            while (self._queued_rows >= self._max_rows and self._queue
                   and not self._stop.is_set()):
                self._ready.wait(PUT_WAIT_S)
            last = self._joinable(len(values))
        # flattened outside the lock (the writer takes it to end a write): as joined to the
        # last write if that is still queued then, which only the writer can change
        chunks = flat_chunks(values if last is None else _tail(last) + values)
        with self._ready:
            if last is not None and self._joinable(len(values)) is last:
                self._queue[-1] = _joined(last, values, cursor, reading_segment, ended, chunks)
            else:
                if last is not None:    # taken meanwhile: these rows' own chunks
                    chunks = flat_chunks(values)
                self._queue.append((values, cursor, reading_segment, ended, chunks))
            self._queued_rows += len(values)
            self._reading_segment = reading_segment
            self._ready.notify_all()
        self._free_spent()

    def _joinable(self, rows: int) -> _Write | None:
        """The write queued last, if `rows` more may join it (under the lock)."""
        last = self._queue[-1] if self._queue else None
        if last is None or len(last[0]) + rows > self._max_write_rows:
            return None
        return last

    def _free_spent(self) -> None:
        """Free the rows of the writes made (in the calling thread, the merge's)."""
        if self._spent:
            with self._ready:
                spent, self._spent = self._spent, []
            spent.clear()    # outside the lock

    def reading(self, segment: int) -> None:
        """The segment the merge has released up to: pruned against while no write comes.
        (The rows written since the last put are freed here too.)"""
        self._reading_segment = segment
        self._free_spent()

    def idle(self) -> bool:
        """Every write put is made (or given up)."""
        with self._ready:
            return not self._queue and not self._busy

    def close(self, timeout: float) -> None:
        """Write what is queued (each write gives up waiting for room, as the pipeline stops),
        then end the thread."""
        with self._ready:
            if not self._closed:
                self._closed = True
                self._queue.append(None)
                self._ready.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._free_spent()

    def _run(self) -> None:
        last_prune = time.monotonic()
        while True:
            with self._ready:
                if not self._queue:
                    self._ready.wait(PRUNE_EVERY_S)
                if self._queue and self._queue[0] is None:
                    self._queue.popleft()
                    return
                write = self._queue.popleft() if self._queue else None
                self._busy = write is not None
            if write is not None:
                try:
                    self._write(write)
                finally:
                    with self._ready:
                        self._queued_rows -= len(write[0])
                        # the last reference is _spent's (before idle() holds): the merge
                        # thread frees the rows
                        self._spent.append(write)
                        write = None
                        self._busy = False
                        self._ready.notify_all()
            now = time.monotonic()
            if now - last_prune > PRUNE_EVERY_S:
                last_prune = now
                self._guarded(self._writer.prune, self._reading_segment)

    def _write(self, write: _Write) -> None:
        values, cursor, reading_segment, ended, chunks = write
        if self._guarded(self._writer.write_values, values, cursor, reading_segment, chunks):
            self.ended = ended

    def _guarded(self, call: Callable[..., object], *args: object) -> bool:
        """A failed write is counted (dissection.errors), not fatal: the next one goes on."""
        try:
            call(*args)
        except Exception as error:
            self.errors += 1
            self._stats.last_error = f"{type(error).__name__}: {error}"
            log.exception("index write error")
            return False
        return True


def _tail(write: _Write) -> list[IndexValues]:
    """The write's rows after its last whole chunk (flat_chunks leaves them out)."""
    return write[0][len(write[4]) * APPEND_ROWS:]


def _joined(first: _Write, values: list[IndexValues], cursor: PacketRef | None,
            reading_segment: int, ended: bool, chunks: list[tuple[Any, ...]]) -> _Write:
    """One write of `first`'s rows then these, with the later cursor (None: none new since),
    segment and end. `chunks`: flat_chunks of _tail(first) + values, so that the joined rows'
    chunks run APPEND_ROWS at a time from the first row."""
    rows, last_cursor, _segment, _ended, made = first
    return (rows + values, cursor if cursor is not None else last_cursor, reading_segment,
            ended, made + chunks)
