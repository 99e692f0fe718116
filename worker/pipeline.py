"""The dissection side: follow the PCAP store, reassemble, dissect, index, publish.

Runs as one thread in the API process. It reads packets from the store's segments as the
capture process writes them, so capture never waits for it; when it falls behind so far that
segments are evicted before it reads them, the store tail reports the shed bytes and flows are
reset at the discontinuity.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgspec

from worker.broadcast import Broadcaster
from worker.dissection import (EXPIRE_EVERY_NS, Dissection, DissectionCounters, MemoryBudget,
                               tune_gc_for_dissection)
from worker.names import NameTable
from worker.packet import PacketRef
from worker.redact import Redactor
from worker.shard import ShardState
from worker.shard_filter import ShardFilter
from worker.store.index import EntryIndex, IndexFull, IndexRow, IndexValues, row_from_values
from worker.store.segments import SegmentTail, segment_ids

log = logging.getLogger("shark.worker.pipeline")

READ_BATCH = 2048
MIN_READ_BATCH = 256


def read_batch_for(storage_limit: int) -> int:
    """Packets per dissection step: their index rows are written in one transaction, whose
    pages pass through the WAL, which counts in the storage limit. A small limit takes smaller
    steps (one packet per 6 KB of limit: the rows of a batch of DNS-sized exchanges then fill
    at most ~1/16 of it); from 12 MB on, READ_BATCH."""
    return max(MIN_READ_BATCH, min(READ_BATCH, storage_limit // 6000))
PRUNE_EVERY_S = 0.25
KEEP_SMALL_EVERY_S = 0.25
# How long a write of rows the disk refused (full) waits before it is tried again.
DISK_FULL_WAIT_S = 0.1
_first_seg = itemgetter(IndexRow.__struct_fields__.index("first_seg"))
DISSECTION_NICE = 10


def disk_full(error: sqlite3.OperationalError) -> bool:
    """The index's disk had no room for a write (SQLITE_FULL), as opposed to any other failure."""
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class DissectionStats(DissectionCounters):
    """/status dissection: one dissection's counters, and what the pipeline adds."""

    unindexed_evicted: int = 0    # entries streamed live but not indexed: their packets were evicted
    index_full: int = 0           # writes that found no room in the index's share of the limit yet
    index_disk_full: int = 0      # ... of them, those the disk itself refused (SQLITE_FULL)
    # --dissect-shards above 1: each shard process (worker.sharded); empty when in-thread
    shards: list[ShardState] = msgspec.field(default_factory=list)
    # times every shard was started again from the last packet indexed, so that their flow
    # tables agree again (a shard failed or shed segments the others read: worker.sharded)
    resyncs: int = 0


class IndexWriter:
    """What a pipeline does with the rows dissection finished (both Pipeline and the sharded
    merge, worker/sharded.py): the index loses the rows of segments evicted since, the rows
    whose packets are still stored are written with the dissection cursor in one transaction,
    and all of them are streamed live."""

    def __init__(self, storage_dir: Path, index: EntryIndex, broadcaster: Broadcaster,
                 stats: DissectionStats, stop: threading.Event | None = None) -> None:
        self._storage_dir = storage_dir
        self._stop = stop or threading.Event()
        self._index = index
        self._broadcaster = broadcaster
        self._stats = stats
        self._written_cursor = index.cursor()
        self._pruned_before = -1
        self._newest_segment = 0
        self._kept_small = 0.0

    def write_values(self, values: list[IndexValues], cursor: PacketRef | None,
                     reading_segment: int, chunks: list[tuple[Any, ...]] | None = None) -> None:
        """Rows just dissected, as their values (IndexRow's fields in order); `cursor` the last
        packet processed (None: none new); `reading_segment` the segment dissection reads
        now; `chunks`: the values' flat_chunks, when another thread made them. IndexRows are
        made of them only when someone streams live."""
        kept = values
        if values:
            # Rows of a segment evicted while dissection read it would be pruned at once: they
            # are not written (the index counts in the storage limit), only streamed live.
            oldest = self.prune(reading_segment)
            if min(map(_first_seg, values)) < oldest:
                kept = [value for value in values if _first_seg(value) >= oldest]
            self._stats.unindexed_evicted += len(values) - len(kept)
        if kept or (cursor is not None and cursor != self._written_cursor):
            self._store(kept, cursor, reading_segment, chunks if kept is values else None)
        if values:
            self._stats.entries += len(values)
            if self._broadcaster.count:
                self._broadcaster.publish([row_from_values(value) for value in values])

    def _store(self, values: list[IndexValues], cursor: PacketRef | None,
               reading_segment: int, chunks: list[tuple[Any, ...]] | None = None) -> None:
        """Index the rows with the cursor. When the index has no room for them within its share
        of the limit yet (the segment writer evicts for it, and the rows of what it evicted are
        pruned here), try again: dissection waits, capture does not, and rows whose packets
        were evicted meanwhile are only streamed. Given up only when the pipeline stops (the
        cursor then stays behind them: they are dissected again at the next start)."""
        while True:
            try:
                self._index.add_values(values, cursor, chunks)
            except IndexFull as full:
                self._stats.index_full += 1
                values = values[full.written:]
                chunks = None        # (a retry: the writer flattens the rows left itself)
                if self._stop.wait(0.01):
                    return
            except sqlite3.OperationalError as error:
                # The disk itself is full (another program filled it, or it is smaller than
                # the limit): the rows wait as for room, or they would be lost until the next
                # start; the segment writer evicts for space meanwhile. Pieces committed before
                # the failure are written again as they were (the same seqs, replaced).
                self._disk_refused(error)
                chunks = None
                if self._stats.index_disk_full <= 10 or self._stats.index_disk_full % 1000 == 0:
                    log.warning("index: the disk is full (%d times): %d rows wait for room",
                                self._stats.index_disk_full, len(values))
                if self._stop.wait(DISK_FULL_WAIT_S):
                    return
            else:
                self._written_cursor = cursor
                self.keep_small()
                return
            oldest = self.prune(reading_segment)
            kept = [value for value in values if _first_seg(value) >= oldest]
            self._stats.unindexed_evicted += len(values) - len(kept)
            values = kept

    def _disk_refused(self, error: sqlite3.OperationalError) -> None:
        """Count a write the index's disk refused (full: the same write is made again later);
        any other failure goes on up."""
        if not disk_full(error):
            raise error
        self._stats.index_full += 1
        self._stats.index_disk_full += 1

    def keep_small(self, now: float | None = None) -> None:
        """The index's keep_small() (free pages back to the disk) at most every
        KEEP_SMALL_EVERY_S: each vacuum step's page moves go through the WAL, too dear after
        every transaction of a busy writer. The WAL's own bound is kept after every write
        (EntryIndex._committed)."""
        now = time.monotonic() if now is None else now
        if now - self._kept_small >= KEEP_SMALL_EVERY_S:
            self._kept_small = now
            try:
                self._index.keep_small()
            except sqlite3.OperationalError as error:   # the disk is full: the next time
                self._disk_refused(error)

    def prune(self, reading_segment: int) -> int:
        """Delete the rows of evicted segments (at once: the index counts in the storage
        limit, and the writer evicts for it); returns the oldest segment id left."""
        segments = segment_ids(self._storage_dir)
        newest = max(segments[-1] if segments else 0, reading_segment)
        self._newest_segment = max(self._newest_segment, newest)
        # none left: every row is of an evicted segment (the next one gets a higher id)
        oldest = segments[0] if segments else self._newest_segment + 1
        if oldest != self._pruned_before:
            try:
                self._index.prune_segments_before(oldest)
            except IndexFull:         # no room for the WAL of the deletes yet: later
                self._stats.index_full += 1
                return oldest
            except sqlite3.OperationalError as error:   # nor on the disk: later too
                self._disk_refused(error)
                return oldest
            self._pruned_before = oldest
        self.keep_small()   # called every PRUNE_EVERY_S: the WAL is cut back when idle too
        return oldest


class Pipeline:
    def __init__(self, storage_dir: Path, index: EntryIndex, node: str, broadcaster: Broadcaster,
                 capture_finished: Callable[[], bool], redactor: Redactor | None = None,
                 memory: MemoryBudget | None = None, replay: bool = False) -> None:
        self._capture_finished = capture_finished
        self._replay = replay   # a file: its flows expire by its packets' time only
        self._tail = SegmentTail(storage_dir, index.cursor())
        # Every record, read by the shards' compiled reader (a shard of one): the store's
        # plain read decodes each record in Python.
        self._every_record = ShardFilter(0, 1)
        self.names = NameTable()   # the hub's names, stamped into entries as they are indexed
        self._dissection = Dissection(node, index.max_seq() + 1, identities=self.names,
                                      redactor=redactor, memory=memory, numbered=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shark-dissect", daemon=True)
        self._closed_at_end = False
        self.ended = False   # a replayed file is dissected to its end and indexed
        self.stats = DissectionStats(memory=memory)   # the same object: its counters are live
        self._writer = IndexWriter(storage_dir, index, broadcaster, self.stats, self._stop)
        self.read_batch = READ_BATCH     # serve() sets it from the storage limit: read_batch_for

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def assembler_stats(self) -> dict:
        return self._dissection.assembler_stats

    def _run(self) -> None:
        # Under CPU contention capture (another process) must win over dissection, which
        # can lag or shed without losing packets: lower this thread's scheduling priority.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DISSECTION_NICE)
        except OSError:
            pass
        tune_gc_for_dissection()      # process-wide: the API's event loop allocates far less
        last_prune = 0.0
        last_expire_ns = 0
        while not self._stop.is_set():
            try:
                worked = self._step()
                now = time.monotonic()
                if now - last_prune > PRUNE_EVERY_S:
                    last_prune = now
                    self._writer.prune(self._reading_segment())
                if not worked:
                    wall_ns = time.time_ns()
                    if (not self._replay and wall_ns - last_expire_ns > EXPIRE_EVERY_NS
                            and not self._capture_finished()):
                        # Live and idle: time still passes for the flows. (Not while a file
                        # is replayed: its packets are long past, the rest is on its way.)
                        last_expire_ns = wall_ns
                        self._dissection.expire(wall_ns)
                        self._flush(self._tail.position)
                    self._stop.wait(0.02)
            except Exception as error:  # one bad batch must not stop dissection
                self.stats.errors += 1
                self.stats.last_error = f"{type(error).__name__}: {error}"
                log.exception("dissection error")
                self._dissection.discard_pending()
                self._stop.wait(0.1)

    def _step(self) -> bool:
        tail = self._tail
        batch = tail.read(self.read_batch, self._every_record)
        stats = self.stats
        if tail.take_discontinuity():
            stats.discontinuities += 1
            self._dissection.close_all()
        stats.shed_segments, stats.shed_bytes = tail.shed_segments, tail.shed_bytes
        stats.lag_bytes = tail.lag_bytes()
        if not batch:
            stats.caught_up = True
            stats.lag_seconds = 0.0
            if self._capture_finished() and not self._closed_at_end:
                # End of a replayed file: flush what is pending as incomplete exchanges.
                self._closed_at_end = True
                self._dissection.close_all()
                self._flush(tail.position)
                self.ended = True
            return False
        stats.caught_up = False
        self._dissection.feed(batch)
        stats.packets = self._dissection.packets
        stats.not_tcp_udp = self._dissection.not_tcp_udp
        last_ts = self._dissection.last_ts
        stats.lag_seconds = max(0.0, time.time() - last_ts / 1e9) if stats.lag_bytes else 0.0
        self._flush(batch[-1][0])
        return True

    def _flush(self, cursor: PacketRef | None) -> None:
        values = self._dissection.take_values()
        if self._dissection.cut:
            self.stats.cut = dict(self._dissection.cut)
        if self._dissection.skipped:
            self.stats.skipped = dict(self._dissection.skipped)
        self._writer.write_values(values, cursor, self._reading_segment())

    def _reading_segment(self) -> int:
        position = self._tail.position
        return position[0] if position else 0
