"""Dissection sharded by flow over N processes, merged into the one index (--dissect-shards).

Each shard (worker.shard) follows all the packets of the store and dissects the flows that the
flow table (worker.flow_table) gives it: a balanced assignment that every shard makes alike
because every shard reads the same packets. Every entry carries the OrderKey one in-thread
dissection would have made it with, and every shard reports a watermark below which it makes no
more; this thread merges the shards' rows by key up to the lowest watermark, numbers them (seq,
hence ids, in the order one dissection numbers them) and hands them to the index's write thread
(worker/write_thread.py), which indexes and broadcasts them as Pipeline does. The API sees
one index: ids, /entries order, details and pcap exports are those of one shard.

The shards' tables agree only while every shard has read the same packets. A shard that dies
(a crash, the OOM killer) starts with an empty table, and one that shed segments (evicted
before it read them) missed flows the others saw: either way every shard is started again
after the last packet merged for the index (a resync), with empty tables alike. The entries
merged are kept (those queued for the write thread are written); the rows not merged yet are
dropped and made again from the same packets; the exchanges then in progress on every flow are
lost (flows are picked up mid-stream, as after a discontinuity). /status says so:
dissection.resyncs, dissection.shards[i].restarts, last_failure.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from operator import itemgetter
from pathlib import Path
from typing import Any

from worker.broadcast import Broadcaster
from worker.dissection import (DONE, IDLE, MemoryBudget, id_prefix_for, numbered_values,
                               packed_watermark, tune_gc_for_dissection)
from worker.names import Name, Network, NameTable
from worker.pipeline import READ_BATCH, DissectionStats, IndexWriter
from worker.redact import Redactor
from worker.shard import (ReportReader, ShardConfig, ShardReport, ShardState, ShardStats,
                          Watermark, shard_main)
from worker.shard_server import shard_context
from worker.packet import PacketRef
from worker.store.index import EntryIndex
from worker.store.segments import list_segments
from worker.write_thread import WriteThread

log = logging.getLogger("shark.worker.sharded")

WAIT_S = 0.05
FINISHED_EVERY_S = 0.25
# Rows a shard may get ahead of the slowest one (~30 MB) before the merge stops reading it (its
# sends then block: the pipe is the back-pressure).
MAX_AHEAD_ROWS = 20_000
# A restarted shard that dies this soon after is crash-looping: it is started again only
# after RESTART_BACKOFF_S (its flows are not dissected meanwhile, and the others go on).
CRASH_LOOP_S = 5.0
RESTART_BACKOFF_S = 5.0
STOP_WAIT_S = 3.0


@dataclass
class _Shard:
    state: ShardState
    process: Any = None                     # multiprocessing.Process
    conn: Connection | None = None
    watermark: Watermark = (0, 0, IDLE, 0)
    started: float = 0.0
    restart_at: float | None = None         # when a crash-looping shard is started again
    # WireRows as decode_report gives them (lists, their flows resolved), sorted by their
    # packed OrderKeys
    rows: list[list[Any]] = field(default_factory=list)
    stats: ShardStats = field(default_factory=ShardStats)


class SharedNames(NameTable):
    """The names table of the API process; a replacement goes to every shard too."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._send = send
        self.nets_text: list[str] | None = None
        self.names: dict[str, Name] = {}

    def replace(self, names: dict[str, Name], nets: list[Network] | None = None) -> None:
        super().replace(names, nets)
        self.names, self.nets_text = names, self.cluster_nets
        self._send(("names", names, self.nets_text))


class ShardedPipeline:
    """Pipeline's interface (start, stop, stats, names, read_batch, assembler_stats) over
    `shards` processes."""

    def __init__(self, storage_dir: Path, index: EntryIndex, node: str, broadcaster: Broadcaster,
                 capture_finished: Callable[[], bool], redactor: Redactor | None = None,
                 shards: int = 2, memory_limit: int | None = None, replay: bool = False,
                 replay_ended: int | None = None) -> None:
        if shards < 2:
            raise ValueError(f"shards {shards}: a sharded pipeline has at least 2 (1 is Pipeline)")
        self._storage_dir = storage_dir
        self._node = node
        self._id_prefix = id_prefix_for(node)
        self._capture_finished = capture_finished
        self._replay = replay
        # A pipe readable once the replayed file is read (CaptureProcess.replay_ended): the merge
        # waits on it with the shards' pipes, so the shards hear "finished" at once.
        self._replay_ended = replay_ended
        self._replay_ended_seen = False
        self._redactor = redactor
        self._count = shards
        # Sessions' memory is budgeted per shard: each keeps to its share of --dissect-memory.
        self._memory_share = None if memory_limit is None else max(1, memory_limit // shards)
        self._next_seq = index.max_seq() + 1
        cursor = index.cursor()
        self._released: Watermark = (*(cursor or (0, 0)), IDLE, 0)
        self._shards = [_Shard(ShardState(shard=i), watermark=self._released) for i in range(shards)]
        self._guard = threading.Lock()      # commands to the shards come from API threads too
        # Shards fork from a server process that imported the dissection once (worker.shard_server).
        self._context = shard_context()
        self._finished = False
        self._read_batch = READ_BATCH
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shark-merge", daemon=True)
        self._merge_errors = 0
        # What shard processes stopped by a resync had counted (their successors count anew).
        self._carried = ShardStats()
        self._resync_why = ""      # set when a shard's report shows it shed segments
        self.names = SharedNames(self._send_all)
        self.stats = DissectionStats()
        # The released rows are indexed by a thread of their own: sqlite's work overlaps the
        # merge's (worker/write_thread.py).
        self._writes = WriteThread(IndexWriter(storage_dir, index, broadcaster, self.stats,
                                               self._stop), self.stats, self._stop)
        self._reader = ReportReader()   # the merge thread's, for every shard's reports

    # -- Pipeline's interface ---------------------------------------------------------------
    @property
    def read_batch(self) -> int:
        return self._read_batch

    @read_batch.setter
    def read_batch(self, value: int) -> None:
        self._read_batch = value
        self._send_all(("read_batch", value))

    @property
    def ended(self) -> bool:
        """A replayed file is dissected to its end and indexed."""
        return self._writes.ended

    def start(self) -> None:
        self._writes.start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        self._thread.join(timeout)
        # the merge closes the writes as it ends (what it released is written): their end
        self._writes.close(max(0.0, deadline - time.monotonic()))

    def assembler_stats(self) -> dict:
        return _summed(shard.stats.assembler for shard in self._shards)

    # -- the shards ---------------------------------------------------------------------------
    def _send_all(self, command: tuple[Any, ...]) -> None:
        with self._guard:
            for shard in self._shards:
                if shard.conn is not None and shard.state.running:
                    try:
                        shard.conn.send(command)
                    except OSError:
                        pass   # it is dying: the merge thread sees it and starts it again

    def _start_all(self) -> None:
        """Start every shard (but those waiting out a crash loop) from one place: after the
        last packet indexed, or at the first record of the oldest segment after it if its
        segment is gone (the ones between are shed here, once, not by each shard)."""
        for shard in self._shards:
            self._halt(shard)
        # What the stopped processes counted goes on in /status (their successors count anew;
        # the shed counts are the same in every shard, hence the most of them).
        old, carried = [shard.stats for shard in self._shards], self._carried
        carried.errors += sum(s.errors for s in old)
        carried.shed_segments += max(s.shed_segments for s in old)
        carried.shed_bytes += max(s.shed_bytes for s in old)
        carried.discontinuities += max(s.discontinuities for s in old)
        for shard in self._shards:
            shard.rows.clear()
            shard.stats = ShardStats()
        self._resync_why = ""
        start = self._start_point()
        watermark: Watermark = (*start, IDLE, 0) if start is not None else self._released
        for shard in self._shards:
            shard.watermark = max(watermark, self._released)
            if shard.restart_at is None:
                self._spawn(shard, start)

    def _start_point(self) -> PacketRef | None:
        segment, offset = self._released[:2]
        if (segment, offset) == (0, 0):
            return None
        present = [info.id for info in list_segments(self._storage_dir)]
        newer = [i for i in present if i > segment]
        if segment in present or not newer:
            return segment, offset
        self._carried.shed_segments += newer[0] - segment
        self._carried.discontinuities += 1
        return newer[0], 0

    def _halt(self, shard: _Shard) -> None:
        """Kill a running shard: it holds nothing that is not made again."""
        if shard.process is not None and shard.state.running:
            shard.process.kill()
            shard.process.join(STOP_WAIT_S)
        with self._guard:
            if shard.conn is not None:
                shard.conn.close()
            shard.conn = None
            shard.state.running = False

    def _spawn(self, shard: _Shard, start: PacketRef | None) -> None:
        """Start the shard's process after packet `start` (None: at the oldest segment)."""
        # Under the guard: names or a read batch changed meanwhile must not miss this shard.
        with self._guard:
            config = ShardConfig(
                index=shard.state.shard, count=self._count, storage_dir=self._storage_dir,
                node=self._node, start=start, read_batch=self._read_batch,
                redactor=self._redactor, names=self.names.names, nets=self.names.nets_text,
                finished=self._finished, memory_limit=self._memory_share, replay=self._replay)
            ours, theirs = self._context.Pipe()
            process = self._context.Process(target=shard_main, args=(config, theirs),
                                            name=f"shark-shard-{shard.state.shard}", daemon=True)
            process.start()
            theirs.close()
            shard.process, shard.conn = process, ours
            shard.started = time.monotonic()
            shard.restart_at = None
            shard.state.pid, shard.state.running = process.pid, True

    def _failed(self, shard: _Shard) -> None:
        """Its process is gone: say so, start every shard again (resync)."""
        self._drain(shard)
        code = shard.process.exitcode
        self._halt(shard)
        why = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 \
            else f"exited with code {code}"
        at = f"{self._released[0]}:{self._released[1]}"
        state = shard.state
        # The first failure starts it again at once; one that follows a restart quickly waits.
        quick = state.restarts > 0 and time.monotonic() - shard.started < CRASH_LOOP_S
        state.restarts += 1
        state.last_failure_ts = time.time()
        again = (f"started again in {RESTART_BACKOFF_S:.0f}s, after the last packet indexed"
                 if quick else f"started again after packet {at}, the last indexed")
        state.last_failure = (f"shard {state.shard} {why}; {again}, with every shard (their flow "
                              "tables must agree): the exchanges in progress were lost")
        log.warning("dissection %s", state.last_failure)
        if quick:
            shard.restart_at = time.monotonic() + RESTART_BACKOFF_S
        else:
            self._resync()

    def _resync(self) -> None:
        self.stats.resyncs += 1
        self._start_all()

    # -- the merge ----------------------------------------------------------------------------
    def _run(self) -> None:
        # The merge makes a container per row (the decoded list the index binds), ~40,000 held
        # at a time: at CPython's default thresholds young collections ran every few hundred
        # rows and the older generations walked the held ones again and again (~6% of the API
        # process on mqtt.pcap). Process-wide, as Pipeline does in-thread.
        tune_gc_for_dissection()
        self._start_all()
        last_finished = 0.0
        try:
            while not self._stop.is_set():
                try:
                    self._turn()
                    now = time.monotonic()
                    if not self._finished and (self._replay_ended_seen
                                               or now - last_finished > FINISHED_EVERY_S):
                        last_finished = now
                        if self._capture_finished():
                            self._finished = True
                            self._send_all(("finished",))
                        elif self._replay_ended_seen:   # the capture child is not done (cannot
                            self._replay_ended = None   # happen): back to asking, not spinning
                        self._replay_ended_seen = False
                    self._writes.reading(self._released[0])   # pruned there, between writes
                except Exception as error:   # the merge must go on
                    self._merge_errors += 1
                    self.stats.last_error = f"{type(error).__name__}: {error}"
                    log.exception("merge error")
                    self._stop.wait(0.1)
        finally:
            self._stop_shards()
            self._writes.close(0.0)     # what is queued is written, then the thread ends

    def _turn(self) -> None:
        now = time.monotonic()
        for shard in self._shards:
            if not shard.state.running and shard.restart_at is not None and now >= shard.restart_at:
                shard.restart_at = None
                self._resync()
        floor = self._floor()
        readable = [shard.conn for shard in self._shards
                    if shard.conn is not None and (len(shard.rows) < MAX_AHEAD_ROWS
                                                   or shard.watermark <= floor)]
        sentinels = [shard.process.sentinel for shard in self._shards if shard.state.running]
        ended = [self._replay_ended] if self._replay_ended is not None and not self._finished else []
        if readable or sentinels:
            self._replay_ended_seen = bool(set(wait([*readable, *sentinels, *ended], WAIT_S))
                                           & set(ended))
        else:   # every shard waits to be started again
            self._stop.wait(WAIT_S)
        for shard in self._shards:
            if shard.conn is not None and shard.conn in readable:
                self._drain(shard)
            if shard.state.running and shard.process.exitcode is not None:
                self._failed(shard)
        if self._resync_why:
            log.warning("dissection: %s; every shard starts again after the last packet indexed",
                        self._resync_why)
            self._resync()
        self._release()
        self._sum_stats()

    def _drain(self, shard: _Shard) -> None:
        conn = shard.conn
        if conn is None:
            return
        try:
            while conn.poll():
                self._take(shard, self._reader.read(conn))
        except (EOFError, OSError):
            pass

    def _take(self, shard: _Shard, report: ShardReport) -> None:
        if report.rows:
            rows = shard.rows
            if rows and report.rows[0][0] < rows[-1][0]:
                rows.extend(report.rows)
                rows.sort(key=_key)
            else:
                rows.extend(report.rows)
        shard.watermark = max(shard.watermark, report.watermark)
        if report.stats.discontinuities > shard.stats.discontinuities:
            # It skipped packets the others may have read: their tables no longer agree.
            self._resync_why = f"shard {shard.state.shard} shed segments"
        shard.stats = report.stats
        state = shard.state
        state.position = [shard.watermark[0], shard.watermark[1]]
        state.packets, state.entries = report.stats.packets, report.stats.entries
        state.lag_bytes, state.errors = report.stats.lag_bytes, report.stats.errors
        state.last_error = report.stats.last_error

    def _floor(self) -> Watermark:
        """The lowest watermark of the running shards: every row below it is here."""
        running = [shard.watermark for shard in self._shards if shard.state.running]
        return min(running) if running else max(shard.watermark for shard in self._shards)

    def _release(self) -> None:
        floor = self._floor()
        mark = packed_watermark(floor)
        runs = []
        for shard in self._shards:
            cut = bisect_left(shard.rows, mark, key=_key)
            if cut:
                runs.append(shard.rows[:cut])
                del shard.rows[:cut]
        released = max(self._released, floor)
        if not runs and released == self._released:
            return
        self._released = released
        # Each run is sorted: sort() finds and merges them in C (heapq.merge steps in Python).
        merged = [item for run in runs for item in run]
        if len(runs) > 1:
            merged.sort(key=_key)
        values = numbered_values(merged, self._next_seq, self._id_prefix)
        self._next_seq += len(values)
        cursor = (released[0], released[1]) if released[:2] != (0, 0) else None
        self._writes.put(values, cursor, released[0], released[2] == DONE)

    def _sum_stats(self) -> None:
        stats, shards = self.stats, [shard.stats for shard in self._shards]
        carried = self._carried
        stats.packets = min(s.packets for s in shards)
        stats.not_tcp_udp = sum(s.not_tcp_udp for s in shards)
        stats.lag_bytes = max(s.lag_bytes for s in shards)
        stats.lag_seconds = max(s.lag_seconds for s in shards)
        stats.shed_segments = carried.shed_segments + max(s.shed_segments for s in shards)
        stats.shed_bytes = carried.shed_bytes + max(s.shed_bytes for s in shards)
        stats.discontinuities = carried.discontinuities + max(s.discontinuities for s in shards)
        stats.cut = _summed(s.cut for s in shards)
        stats.skipped = _summed(s.skipped for s in shards)
        stats.caught_up = all(s.caught_up for s in shards) and all(
            shard.state.running and not shard.rows for shard in self._shards) \
            and self._writes.idle()
        stats.shards = [shard.state for shard in self._shards]
        budgets = [s.memory for s in shards if s.memory is not None]
        if budgets:   # the shards' shares summed: the worker's --dissect-memory
            stats.memory = MemoryBudget(**{name: sum(getattr(b, name) for b in budgets)
                                           for name in MemoryBudget.__struct_fields__})
        stats.errors = (self._merge_errors + self._writes.errors + carried.errors
                        + sum(s.errors for s in shards))
        stats.last_error = stats.last_error or next((s.last_error for s in shards if s.last_error), "")

    def _stop_shards(self) -> None:
        self._send_all(("stop",))
        deadline = time.monotonic() + STOP_WAIT_S
        for shard in self._shards:
            if shard.process is None:
                continue
            shard.process.join(max(0.0, deadline - time.monotonic()))
            if shard.process.exitcode is None:
                shard.process.kill()     # it ignores SIGTERM (worker/shard.py)
                shard.process.join(1.0)
            shard.state.running = False
            if shard.conn is not None:
                shard.conn.close()
                shard.conn = None


# A row's packed OrderKey (worker.dissection.packed_key).
_key: Callable[[list[Any]], bytes] = itemgetter(0)


def _summed(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for each in counts:
        for name, value in each.items():
            total[name] = total.get(name, 0) + value
    return total
