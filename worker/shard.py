"""One dissection shard: a process that follows the store and dissects the flows it owns.

Every shard reads every record of the segments (the disk is shared, the page cache makes the
second read cheap) so that capture time, expiry and the flows' owners are the same in all of
them (one that shed what the others read makes the merge resync them all: worker.sharded),
but decodes and dissects only the packets of the flows that the flow table (worker.flow_table,
the balanced assignment every shard makes alike) gives it: the others are told apart where
they lie in the read buffer and cost it no objects, bar the few stand-ins its clock needs
(worker.shard_filter). It sends what it made to the API process (worker.sharded
merges the shards into the one index) as ShardReports: rows, and a watermark below which it
will make no more. The merge is serial and caps how far shards scale, so a row crosses nearly
ready to insert and is one flat msgpack array (worker.dissection.WireRow): IndexRow's values
with no field names and no Struct to build and take apart again, its OrderKey packed into
bytes in the seq's place (the merge sorts by it and replaces it), its entry JSON without the
empty id that the merge fills in, and what its flow's rows share (protocol, transport, the
addresses, the server's port: worker.dissection.WireFlow) once per report in the report's
`flows`, the row holding its index there. The rows decode as lists, which the reader fills in
with their flows' values (resolve_flows) and the merge numbers in place: they are the rows
the index binds.

The parent talks to it over the same Pipe: ("names", names, nets) | ("read_batch", n) |
("finished",) | ("stop",). Reports go the other way as msgpack bytes.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from shark.process import die_with_parent, name_process
from worker.dissection import (DONE, EXPIRE_EVERY_NS, IDLE, Dissection, DissectionCounters,
                               MemoryBudget, WireFlow, resolve_flows, tune_gc_for_dissection)
from worker.names import Name, NameTable, parse_nets
from worker.packet import PacketRef
from worker.redact import Redactor
from worker.shard_filter import ShardFilter
from worker.store.segments import SegmentTail

log = logging.getLogger("shark.worker.shard")

# (segment, offset, phase, time): a shard makes no more entries whose OrderKey is below it.
Watermark = tuple[int, int, int, int]
# A shard with nothing to read still tells the merge how far it is this often (its idle
# time moves its watermark), so that entries other shards expire by the wall clock go out.
IDLE_REPORT_S = 0.1
IDLE_WAIT_S = 0.02
SHARD_NICE = 10


class ShardStats(DissectionCounters):
    """What a shard reports of its dissection (the merge sums them into /status)."""

    assembler: dict[str, int] = msgspec.field(default_factory=dict)


class ShardState(msgspec.Struct):
    """One shard as /status shows it (dissection.shards)."""
    shard: int
    pid: int | None = None
    running: bool = False
    restarts: int = 0
    last_failure: str = ""          # why it last stopped, and what was lost
    last_failure_ts: float | None = None
    position: list[int] | None = None   # the last packet it had finished: [segment, offset]
    packets: int = 0
    entries: int = 0
    lag_bytes: int = 0
    errors: int = 0
    last_error: str = ""


class ShardReport(msgspec.Struct, array_like=True):
    watermark: Watermark
    flows: list[WireFlow]       # what the rows' flows share: a row holds its index here
    # WireRows as a shard sends them (tuples); decoded (decode_report, ReportReader) lists,
    # their flows' values filled in (resolve_flows)
    rows: list[Any]
    stats: ShardStats


@dataclass(frozen=True)
class ShardConfig:
    index: int
    count: int
    storage_dir: Path
    node: str
    start: PacketRef | None          # resume after this packet (None: the oldest segment)
    read_batch: int
    redactor: Redactor | None
    names: dict[str, Name]
    nets: list[str] | None
    finished: bool                   # the replayed file was read to its end already
    memory_limit: int | None = None  # its share of --dissect-memory (None: no budget)
    replay: bool = False             # a file is replayed: flows expire by its packets' time only


class _Sender:
    """Sends the shard's reports from a thread of their own, one at a time, in order.

    A send blocks while the merge is busy (its index writes) and the pipe is full; from the
    shard's own thread that stopped the dissection for as long (on mqtt.pcap the only busy
    shard waited 0.25-0.68 s in one send). Here the next batch is dissected meanwhile: the
    whole report goes out in one write(), which releases the GIL until the merge has read it.
    The shard hands over a report only once the one before is sent, so it is at most one
    report ahead of the pipe (the pipe is still the back-pressure)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._ready = threading.Condition()
        self._report: bytes | None = None
        self.gone = False            # the parent is gone: the shard ends
        threading.Thread(target=self._run, name="shark-shard-send", daemon=True).start()

    def send(self, report: bytes) -> None:
        with self._ready:
            while self._report is not None and not self.gone:
                self._ready.wait()
            self._report = report
            self._ready.notify_all()

    def _run(self) -> None:
        while True:
            with self._ready:
                while self._report is None:
                    self._ready.wait()
                report = self._report
            try:
                self._conn.send_bytes(report)
            except (BrokenPipeError, EOFError, OSError):
                self.gone = True
            with self._ready:
                self._report = None
                self._ready.notify_all()
            if self.gone:
                return


class _Clock:
    """Strictly increasing nanoseconds: the time field of IDLE keys and watermarks."""

    def __init__(self) -> None:
        self._last = 0

    def tick(self) -> int:
        self._last = max(self._last + 1, time.time_ns())
        return self._last


def shard_main(config: ShardConfig, conn: Connection) -> None:
    """Entry point of a shard process; returns when told to stop or the parent is gone."""
    # Ctrl-C or a SIGTERM to the worker's process group reaches the shards too: the API process
    # stops them in order (("stop",) then a kill), so they must not die first and be taken
    # for failed shards, started again during the shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    name_process(f"shark-shard-{config.index}")   # else it has its fork server's name
    try:   # capture (another process) must win the CPU over dissection, as in-thread
        os.setpriority(os.PRIO_PROCESS, 0, SHARD_NICE)
    except OSError:
        pass
    tune_gc_for_dissection()
    _Shard(config, conn).run()


class _Shard:
    def __init__(self, config: ShardConfig, conn: Connection) -> None:
        self._conn = conn
        self._sender = _Sender(conn)
        self._encoder = msgspec.msgpack.Encoder()
        self._tail = SegmentTail(config.storage_dir, config.start)
        # Made with the dissection: both start their clocks at 0 (worker.shard_filter).
        self._filter = ShardFilter(config.index, config.count)
        self._names = NameTable()
        self._names.replace(config.names, parse_nets(config.nets))
        self._dissection = Dissection(config.node, identities=self._names,
                                      redactor=config.redactor,
                                      memory=(MemoryBudget(config.memory_limit)
                                              if config.memory_limit is not None else None),
                                      position=config.start or (0, 0))
        self._read_batch = config.read_batch
        self._finished = config.finished
        self._replay = config.replay
        self._closed_at_end = False
        self._clock = _Clock()
        self._position: PacketRef = config.start or (0, 0)
        self._watermark: Watermark = (*self._position, IDLE, 0)
        self.stats = ShardStats()

    def run(self) -> None:
        last_report = last_expire = 0.0
        while True:
            if not self._commands():
                return
            try:
                worked = self._step()
            except Exception as error:   # one bad batch must not stop the shard
                self.stats.errors += 1
                self.stats.last_error = f"{type(error).__name__}: {error}"
                log.exception("dissection error in a shard")
                self._dissection.discard_pending()
                worked = False
            if worked:
                self._report()
                continue
            now = time.monotonic()
            if not (self._replay or self._finished) and now - last_expire > EXPIRE_EVERY_NS / 1e9:
                # Live and idle: time still passes for the flows. (Not while a file is
                # replayed: its packets are long past, and the rest of it is on its way.)
                last_expire = now
                self._dissection.expire(time.time_ns(), self._clock.tick())
            if self._dissection.has_pending() or now - last_report > IDLE_REPORT_S:
                last_report = now
                if not self._closed_at_end:
                    self._watermark = (*self._position, IDLE, self._clock.tick())
                self._report()
            self._conn.poll(IDLE_WAIT_S)

    def _commands(self) -> bool:
        """Apply what the parent sent; False once it says stop (or is gone)."""
        try:
            while self._conn.poll():
                command, *args = self._conn.recv()
                if command == "stop":
                    return False
                if command == "names":
                    self._names.replace(args[0], parse_nets(args[1]))
                elif command == "read_batch":
                    self._read_batch = int(args[0])
                elif command == "finished":
                    self._finished = True
        except (EOFError, OSError):
            return False
        return True

    def _step(self) -> bool:
        tail, stats, dissection = self._tail, self.stats, self._dissection
        batch = tail.read(self._read_batch, self._filter)
        if tail.take_discontinuity():
            stats.discontinuities += 1
            dissection.close_all(self._clock.tick())
        stats.shed_segments, stats.shed_bytes = tail.shed_segments, tail.shed_bytes
        stats.lag_bytes = tail.lag_bytes()
        if not batch:
            stats.caught_up = True
            stats.lag_seconds = 0.0
            if self._finished and not self._closed_at_end:
                # End of a replayed file: what is pending comes out as incomplete exchanges.
                self._closed_at_end = True
                dissection.close_all()
                self._watermark = (*self._position, DONE, 0)
                return True
            return False
        stats.caught_up = False
        dissection.feed(batch)
        self._position = batch[-1][0]
        self._watermark = (*self._position, IDLE, 0)
        stats.lag_seconds = max(0.0, time.time() - dissection.last_ts / 1e9) if stats.lag_bytes else 0.0
        return True

    def _report(self) -> None:
        dissection, stats = self._dissection, self.stats
        flows, rows = dissection.take_wire_report()
        stats.entries += len(rows)
        stats.packets, stats.not_tcp_udp = self._tail.packets_read, dissection.not_tcp_udp
        stats.cut, stats.skipped = dissection.cut, dissection.skipped
        stats.assembler = dissection.assembler_stats
        stats.memory = dissection.memory
        if self._sender.gone:
            raise SystemExit(0)   # the parent is gone
        self._sender.send(self._encoder.encode(ShardReport(self._watermark, flows, rows, stats)))


def decode_report(data: bytes | memoryview,
                  decoder: Any = msgspec.msgpack.Decoder(ShardReport)) -> ShardReport:
    """A report as the merge keeps it: its rows lists, their flows' values filled in."""
    report: ShardReport = decoder.decode(data)
    if report.rows:
        resolve_flows(report.rows, report.flows)
    return report


# Connection.send_bytes's framing: a signed 4-byte length, or -1 and an 8-byte one.
_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")


class ReportReader:
    """Reads the shards' reports off their Connections into one buffer used again for every
    report, and decodes them from it (their rows' bytes are copied out, so nothing refers to
    it after). Connection.recv_bytes allocates a buffer the size of what is still missing at
    every read of a message that arrives in pieces (a report of several 100 KB read 64 KB at a
    time while its shard is still writing it) and copies each piece again into a BytesIO."""

    def __init__(self) -> None:
        self._buffer = bytearray(1 << 20)

    def read(self, conn: Connection) -> ShardReport:
        """The next report (blocks until it is whole); EOFError or OSError once the shard is gone."""
        fd = conn.fileno()
        size = _LENGTH.unpack(self._fill(fd, _LENGTH.size))[0]
        if size == -1:
            size = _LONG_LENGTH.unpack(self._fill(fd, _LONG_LENGTH.size))[0]
        return decode_report(self._fill(fd, size))

    def _fill(self, fd: int, size: int) -> memoryview:
        if len(self._buffer) < size:
            self._buffer = bytearray(max(size, 2 * len(self._buffer)))
        view = memoryview(self._buffer)[:size]
        got = 0
        while got < size:
            read = os.readv(fd, [view[got:]])
            if read == 0:
                raise EOFError if got == 0 else OSError("end of file in the middle of a report")
            got += read
        return view
