"""The entry index: one sqlite3 row per entry, pointing at the packets it came from.

The dissection thread writes (rows and its cursor in one transaction, so a crash never leaves
them disagreeing); API threads read at the same time. Each thread gets its own connection;
WAL lets readers run beside the writer and busy_timeout covers the short write locks. A thread
of its own checkpoints the WAL (its fsyncs stay out of the writer's commits), within a bound
the writer keeps (the WAL counts in --storage-limit).

A corrupt, foreign or missing index is not repaired: open_index() moves it aside and starts an
empty one, whose cursor() is None, so the caller re-dissects the PCAP segments from the oldest.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import sqlite3
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from functools import reduce
from itertools import accumulate, chain, compress
from operator import iconcat, itemgetter, lt
from pathlib import Path
from typing import Any

import msgspec

from worker.packet import PacketRef
from worker.store.grant import IndexBudget
from worker.store.private import create_file, make_dir
from worker.store.segments import StoreError

log = logging.getLogger("shark.worker.index")

SCHEMA_VERSION = "3"
# Older versions this one migrates on open (_migrate), keeping rows, ids and cursor. Version 1
# found a segment's rows through an index on first_seg, 20% of an insert's CPU; versions 1 and
# 2 ordered by time through an index on (ts, seq), which held each seq twice (an index on ts
# alone ends with the rowid, which is seq).
MIGRATES_FROM = ("1", "2")
BUSY_TIMEOUT_MS = 10_000
# The WAL counts in --storage-limit, so its size is bounded: its hard limit is 1/32 of the
# storage limit, kept between 256 KiB (the minimum limit of 2 MiB holds 8) and 32 MiB. Past a
# quarter of it a checkpoint thread copies it into the database beside the writer (sqlite's
# own checkpoint would run inside the writer's COMMIT, with two fsyncs, while the dissection
# shards wait on the merge); a writer that still finds it past the hard limit checkpoints it
# itself and starts it over, cut back to the limit (its blocks reused: not to a quarter, nor
# to nothing). wal_limit_for() gives the limit; open_index() takes it.
WAL_LIMIT_MIN = 256 * 1024
WAL_LIMIT_MAX = 32 * 1024 * 1024
WAL_LIMIT_SHARE = 32
# The checkpoint thread also looks every this often, so that a WAL left by a last write is
# copied into the database while the writer is idle.
CHECKPOINT_EVERY_S = 0.25
# Rows deleted per transaction when pruning (their pages go through the WAL).
PRUNE_CHUNK = 256
# Bytes of free pages given back per prune: the moves go through the WAL.
VACUUM_BYTES = 1024 * 1024
# The page size of a new index file (an existing one keeps its own). Rows are ~0.5-1.5 KB: at
# 4 KiB a page held 4 rows of ~900 bytes and ~600 bytes of nothing; larger pages waste less of
# each and take fewer WAL frames per row (docs/BENCHMARKS.md, "The index's row").
PAGE_SIZE = 16384
# A segment's rows are found by seq ranges (segment_seqs): a batch's rows of one segment
# extend that segment's last range when they start at most this many seqs after its end, else
# they open a range of their own. Rows of other segments inside a range are skipped at prune
# (each range is scanned once): a larger gap means fewer ranges, a longer scan.
SEQ_GAP = 1024

_COLUMNS = ("seq", "ts", "protocol", "entry_json", "first_seg", "first_off", "last_seg",
            "last_off", "transport", "client_ip", "client_port", "server_ip", "server_port",
            "client_offset", "server_offset", "client_seq", "server_seq")
# The optional columns (server_offset, client_seq, server_seq: never negative) may come as
# NO_VALUE instead of None: sqlite3 binds an int without looking for an adapter, a None with
# (~0.5 us per value). Either is stored as it comes (a NULLIF per value in the insert cost
# the writer ~0.1-0.5 us per row); reads give None for both.
OPTIONAL_FROM = _COLUMNS.index("server_offset")
NO_VALUE = -1
_SELECT = ("SELECT " + ", ".join([*_COLUMNS[:OPTIONAL_FROM],
                                  *(f"NULLIF({name}, {NO_VALUE})" for name in _COLUMNS[OPTIONAL_FROM:])])
           + " FROM entries")
# Rows whose seqs are all new (the writer's usual batch) are appended: INSERT OR REPLACE looks
# for a row to delete first, ~1 us per row with the time index. OR FAIL: a statement of several
# rows that may abort (ABORT, the default, undoes the statement's own rows) keeps a statement
# journal, a copy of every page it changes that was there before it (the table's and the time
# index's last leaves and their parents: ~5 pages of 16 KiB per 128 rows), written for nothing:
# a failed append rolls its whole transaction back (_add_piece; sqlite does so itself on a
# full disk when the statement has no journal), so FAIL, which keeps the statement's earlier
# rows, ends the same (docs/BENCHMARKS.md, "The index write's CPU per row").
_APPEND = (f"INSERT OR FAIL INTO entries ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_COLUMNS))})")
_INSERT = _APPEND.replace("INSERT OR FAIL", "INSERT OR REPLACE", 1)
# Appended rows go APPEND_ROWS to a statement (`VALUES (...), (...), ...`), the rest in
# statements of 64, 32, ... 1 rows: each statement's execution costs sqlite a statement
# transaction and Python a reset and a step beside the binding, ~0.5 us per row at one row a
# statement (docs/BENCHMARKS.md, "The merge's inserts"). The same rows go in in the same order:
# the same table, the same index.
APPEND_ROWS = 128


# The columns that the rows of one append statement often all share (one protocol; the rows of
# one segment; the same connection, or the same server): each bound once for the statement when
# they do. A text bind costs sqlite a mutex, a free and a malloc and a copy of the string (~0.1
# us); an int's the mutex, and Python a type check and a conversion. Equal values bind as the
# same value (the columns' affinity stores 443 and 443.0 alike; texts are equal only when the
# same), so the rows are stored as they would be.
_SHARED_COLUMNS = ("protocol", "first_seg", "last_seg", "transport", "client_ip", "client_port",
                   "server_ip", "server_port", "client_seq", "server_seq")
# A statement binds once the first of these sets whose columns its rows all share: a few
# shapes, not one per combination (each is a statement of its own, prepared in ~3 ms at 128
# rows and kept in the connection's statement cache of 128: every combination of 10 columns
# would thrash it). One connection in one segment; across a segment's end; one client host's
# datagrams (a socket per DNS query); several connections of one client host to one server;
# the same across a segment's end; one protocol.
_SHARED_SETS = tuple(tuple(_COLUMNS.index(name) for name in _SHARED_COLUMNS if name not in left)
                     for left in (
    (),
    ("first_seg", "last_seg"),
    ("client_port",),
    ("client_port", "client_seq", "server_seq"),
    ("client_port", "client_seq", "server_seq", "first_seg", "last_seg"),
    ("client_ip", "client_port", "client_seq", "server_seq", "first_seg", "last_seg",
     "server_ip", "server_port")))
_SHARED_CHECKED = tuple(_COLUMNS.index(name) for name in _SHARED_COLUMNS)


@functools.lru_cache(maxsize=128)
def _shared_sql(rows: int, shared: tuple[int, ...], counted: bool, numbered: bool = False
                ) -> tuple[str, list[int]]:
    """An append statement of `rows` rows whose `shared` columns take the statement's first
    parameters (?1, ?2, ... in that order) in every row; with `counted` (the rows' seqs are
    consecutive) the next one is the first row's seq, each row's seq being it plus the row's
    place (an addition in sqlite's VDBE, not a bind); then the other columns' values column
    by column (every row's value of one column, then of the next: the rows' transpose,
    zip(*rows), made in C). And those other columns, in that order.

    `numbered` (with `counted`, when the first row's seq is one above the table's highest):
    the statement names no seq, so sqlite numbers each row one above the table's highest
    (OP_NewRowid: the rows get the same seqs) and need not look for a row of that seq first
    (OP_NotExists, a search of the table from its root per row: ~1.2k instructions, ~6% of a
    row's write). The first seq's parameter stays, unused, so the parameters are the same."""
    numbered = numbered and counted
    width = len(_COLUMNS)
    counted_seq = len(shared) + 1
    rest = [column for column in range(width)
            if column not in shared and not (counted and column == 0)]
    base = len(shared) + counted
    groups = []
    for row in range(rows):
        numbers = {column: f"?{base + place * rows + row + 1}" for place, column in enumerate(rest)}
        numbers.update({column: f"?{place + 1}" for place, column in enumerate(shared)})
        if counted:
            numbers[0] = f"?{counted_seq} + {row}" if row else f"?{counted_seq}"
        groups.append("(" + ", ".join(numbers[column] for column in range(numbered, width))
                      + ")")
    head = _APPEND.partition(" VALUES ")[0]
    if numbered:
        head = head.replace("(seq, ", "(", 1)
    return head + " VALUES " + ", ".join(groups), rest


def _check_width(values: Sequence[IndexValues]) -> None:
    """ProgrammingError when a row is not of the index's width (flattened, a short row would
    shift the next rows' columns: refused as executemany refuses it)."""
    width = len(_COLUMNS)
    if set(map(len, values)) != {width}:
        raise sqlite3.ProgrammingError(f"index rows: expected {width} values each")


def _consecutive(seqs: Sequence[Any]) -> bool:
    """Whether the seqs (a list or a tuple) are ints numbered in order, each one more than
    the one before."""
    low, count = seqs[0], len(seqs)
    if type(low) is not int or seqs[-1] - low != count - 1:
        return False
    numbered = range(low, low + count)
    return seqs == (tuple(numbered) if type(seqs) is tuple else list(numbered))


def _statement(rows: Sequence[IndexValues]) -> tuple[str, tuple[Any, ...]]:
    """An append statement of these rows (at least 2, of IndexRow's width) and its parameters
    (_column_statement of their columns)."""
    return _column_statement(list(zip(*rows)))


def _column_statement(columns: Sequence[tuple[Any, ...]], counted: bool | None = None,
                      numbered: bool = False) -> tuple[str, tuple[Any, ...]]:
    """An append statement of rows given as their columns (at least 2 rows) and its
    parameters: consecutive seqs as the first one, and then the first of _SHARED_SETS whose
    values every row has the same bound once (_shared_sql). `counted`: whether the seqs are
    consecutive, when the caller checked (None: checked here); `numbered`: the first seq is
    one above the table's highest when the statement runs (_shared_sql)."""
    seqs = columns[0]
    count = len(seqs)
    low = seqs[0]
    if counted is None:
        counted = _consecutive(seqs)
    shared: tuple[int, ...] = ()
    if counted:      # (the usual append; others, rarer, take one shape per length)
        # a column whose first and last values differ is not shared: no count (each of its
        # values compared, unequal ones at ~0.1 us a row)
        same = set()
        for column in _SHARED_CHECKED:
            values = columns[column]
            first = values[0]
            if first == values[-1] and values.count(first) == count:
                same.add(column)
        shared = next((shape for shape in _SHARED_SETS if same.issuperset(shape)), ())
    sql, rest = _shared_sql(count, shared, counted, numbered)
    params = [columns[column][0] for column in shared]
    if counted:
        params.append(low)
    return sql, tuple(reduce(iconcat, [columns[column] for column in rest], params))


def flat_chunks(values: Sequence[IndexValues]) -> list[tuple[Any, ...]]:
    """The rows' append statements, APPEND_ROWS rows each: rows 0 to APPEND_ROWS - 1, then the
    next APPEND_ROWS, ... (the rows after the last whole chunk are left out), each as (its
    first row's seq, its last row's, the statement, its parameters: _statement). The
    sharded merge makes them for the index write thread (add_values' `chunks`): ~0.2 us per row
    that the writer, the longer path, then does not spend."""
    chunks: list[tuple[Any, ...]] = []
    if set(map(len, values)) != {len(_COLUMNS)}:
        return chunks          # not rows of the index: the writer refuses them (_check_width)
    for at in range(0, len(values) - APPEND_ROWS + 1, APPEND_ROWS):
        rows = values[at:at + APPEND_ROWS]
        chunks.append((rows[0][0], rows[-1][0], *_statement(rows)))
    return chunks


_ENTRIES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    protocol TEXT NOT NULL,
    entry_json BLOB NOT NULL,
    first_seg INTEGER NOT NULL,
    first_off INTEGER NOT NULL,
    last_seg INTEGER NOT NULL,
    last_off INTEGER NOT NULL,
    transport TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    client_port INTEGER NOT NULL,
    server_ip TEXT NOT NULL,
    server_port INTEGER NOT NULL,
    client_offset INTEGER NOT NULL,
    server_offset INTEGER,
    client_seq INTEGER,
    server_seq INTEGER
);
CREATE INDEX IF NOT EXISTS entries_by_ts ON entries (ts);
"""
# Where each segment's rows are: every row with first_seg S has a seq in a range (lo..hi) of
# S. A segment's entries are numbered as dissection reaches it, so its rows are nearly
# consecutive: a few ranges per segment (one more per late straggler, such as the first
# exchange of a connection opened in it long before), instead of an index entry per row.
_SEGMENT_SEQS = """
CREATE TABLE IF NOT EXISTS segment_seqs (
    first_seg INTEGER NOT NULL,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    PRIMARY KEY (first_seg, lo)
) WITHOUT ROWID;
"""
_SCHEMA = _ENTRIES + _SEGMENT_SEQS
# A segment's rows extend its last range when they start within SEQ_GAP of its end ...
_EXTEND_RANGE = (
    "UPDATE segment_seqs SET hi = max(hi, :hi) WHERE first_seg = :seg AND lo = "
    "(SELECT max(lo) FROM segment_seqs WHERE first_seg = :seg) AND lo <= :lo "
    f"AND hi >= :lo - {SEQ_GAP}")
# ... else they open one.
_ADD_RANGE = ("INSERT INTO segment_seqs (first_seg, lo, hi) VALUES (:seg, :lo, :hi) "
              "ON CONFLICT (first_seg, lo) DO UPDATE SET hi = max(hi, excluded.hi)")


# The index's files, at the top of the storage directory: what the segment writer counts as the
# room it granted them (worker/store/grant.py) rather than as measured.
INDEX_NAME = "index.sqlite"
INDEX_FILES = (INDEX_NAME, f"{INDEX_NAME}-wal", f"{INDEX_NAME}-shm")

# What a write can add to the index's files, bounded before it is made (with a budget): every
# page a transaction changes is one WAL frame (page + 24 bytes; sqlite rewrites a frame of the
# same transaction in place), every page it adds also grows the database once checkpointed, and
# the shared-memory file grows by 32 KiB per 4062 frames. Rows append at the right edge of the
# table (leaves at least half full, one extra overflow page per row past the local limit), their
# (ts, seq) index entries too while ts does not go back; a row whose ts goes back (or that
# replaces one) may change a leaf and split it on its own (5 pages): but rows that go back only
# a little all land on the same few leaves, which are charged once each (REACH_EDGE_LEAVES).
WAL_HEADER = 32
SHM_BLOCK = 32 * 1024
SHM_FRAMES = 4062
ROW_OVERHEAD = 128           # a row's columns besides entry_json, and its cell header
INDEX_CELL = 100             # an entry of entries_by_time with its share of a half-full page, x4
OUT_OF_ORDER_PAGES = 5
# Rows whose ts goes back: what they cost, and why per leaf they reach rather than per row.
# entries_by_ts is an index b-tree on (ts, rowid), rowid = seq; an entry takes at most ~22 bytes
# (~700 on a 16 KiB leaf). A new row's seq is above every stored one, so its key comes after
# every entry of its ts. sqlite inserts an index key on the leaf its search ends on, which holds
# the key's predecessor among the stored keys or only keys above it (an interior key between the
# two would have sent the search to one side of it). So every key of a piece whose lowest ts is
# `lo` lands on a leaf holding one of the K stored entries with ts >= lo, or holding P, the last
# entry below them: on K + 1 leaves at most, whatever the pages' fill (none is assumed). Rows
# going back a little (shards merged: most <= 1 ms behind) find K ~ the rows of that last
# millisecond; rows going far back find K large and keep the per-row charge (the smaller of the
# two is taken; K is counted up to it).
# Each leaf reached is charged what a row going back was, OUT_OF_ORDER_PAGES: the leaf and a
# split of it (balance_nonroot: it, up to 2 siblings under the same parent, up to 2 pages added;
# the parent is in TRANSACTION_PAGES). More rows on a leaf add no frame for it (a page changed
# again in a transaction is the same frame). Their splits add pages, each at least half full
# less two cells (balance_nonroot packs the cells to the left, then evens neighbours out), so a
# transaction adds at most about as many pages as the leaves it changed, plus 2x its entries'
# bytes over a page (INDEX_CELL charges 4.5x). Right siblings of a leaf reached hold keys above
# P: they are among the K + 1. Left siblings of the first are the only others a split pulls in:
# REACH_EDGE_LEAVES. A split pulls in further ones only after one moved keys above P into a page
# left of the first (balance evens a group out: only into pages that held less than the group's
# mean) and rows landing there overflowed a page again; the charge's margin covers a few such
# steps (about 3 of the 5 pages per leaf reached are used; K + 1 leaves are charged where the K
# entries fill one per ~700), not an unbounded walk left (not proven: measured, below). Rows
# that replace others (seqs not new) keep the per-row charge. tests/unit/test_store_grant.py
# reads each transaction's pages from the WAL against its bound (rows far back, a little back,
# into thinned leaves); a fuzz of such writes (docs/BENCHMARKS.md) used at most 45% of it.
REACH_EDGE_LEAVES = 2
# meta, segment_seqs, page 1, a pointer-map and a freelist page, the parents of new leaves and
# a split of them; a write of the cursor alone: meta, page 1 and two more.
TRANSACTION_PAGES = 10
CURSOR_PAGES = 4
STEP_PAGES = 32              # a budget step is at least this many pages
# How long a write waits for the segment writer to grant more room before it gives up (it is
# tried again; meanwhile dissection lags, capture never waits).
ROOM_WAIT_S = 0.25


class _WriteFacts:
    """What a write's bound reads of its rows, read once: their times, and running sums of
    their entries' sizes and of those past a page's local payload (overflow pages)."""

    def __init__(self, values: Sequence[IndexValues], page: int,
                 times: list[float] | None = None) -> None:
        self.page = page
        self.times: list[float] = list(map(_TS, values)) if times is None else times
        lengths = list(map(len, map(_ENTRY_JSON, values)))     # in C, not per row in Python
        self.sums = list(accumulate(lengths, initial=0))
        local = page - 35 - ROW_OVERHEAD     # a longer entry spills to overflow pages
        self.bigs = (list(accumulate(map(local.__lt__, lengths), initial=0))
                     if max(lengths) > local else None)


class IndexFull(StoreError):
    """A write found no room within the index's share of --storage-limit. `written`: rows of
    the call that were stored before (in transactions of their own) and need not be again."""

    def __init__(self, message: str, written: int = 0) -> None:
        super().__init__(message)
        self.written = written


def wal_limit_for(storage_limit: int) -> int:
    """The WAL's hard size limit for a storage limit (WAL_LIMIT_SHARE of it, bounded)."""
    return min(WAL_LIMIT_MAX, max(WAL_LIMIT_MIN, storage_limit // WAL_LIMIT_SHARE))


class IndexRow(msgspec.Struct):
    seq: int                    # per-node sequence; the entry id is "<node>:<seq>"
    ts: float                   # request start, epoch seconds
    protocol: str
    entry_json: bytes           # the encoded shark.model.Entry, summary form
    first_seg: int              # PacketRef of the request's first byte ...
    first_off: int
    last_seg: int               # ... and of the response's last byte
    last_off: int
    transport: str              # "tcp" | "udp"
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    client_offset: int          # stream offsets of the request's / response's first byte
    server_offset: int | None
    client_seq: int | None      # TCP initial sequence numbers, when the handshake was seen
    server_seq: int | None


# IndexRow's values in field order (msgspec.structs.astuple(row)).
IndexValues = tuple[Any, ...]
_SEQ = itemgetter(0)
_TS = itemgetter(1)
_ENTRY_JSON = itemgetter(3)
_FIRST_SEG = itemgetter(4)


def row_from_values(value: IndexValues) -> IndexRow:
    """The IndexRow of values whose optional columns may be NO_VALUE."""
    if NO_VALUE in value[OPTIONAL_FROM:]:
        return IndexRow(*value[:OPTIONAL_FROM],
                        *[None if v == NO_VALUE else v for v in value[OPTIONAL_FROM:]])
    return IndexRow(*value)


def seq_ranges(values: Sequence[IndexValues], span: tuple[int, int] | None = None
               ) -> list[dict[str, int]]:
    """Per segment of the rows' first packets: the lowest and highest seq of its rows (`span`:
    the lowest and highest of all the rows, when the caller knows them)."""
    return _seq_ranges(list(map(_SEQ, values)), list(map(_FIRST_SEG, values)), span)


def _seq_ranges(seqs: Sequence[int], segments: Sequence[int],
                span: tuple[int, int] | None = None) -> list[dict[str, int]]:
    """seq_ranges() of the rows' seqs and first segments (their columns)."""
    first = segments[0]
    if segments.count(first) == len(segments):   # the usual batch: one segment (in C)
        if span is not None:
            return [{"seg": first, "lo": span[0], "hi": span[1]}]
        return [{"seg": first, "lo": min(seqs), "hi": max(seqs)}]
    ranges: dict[int, list[int]] = {}
    for segment, seq in zip(segments, seqs):
        found = ranges.get(segment)
        if found is None:
            ranges[segment] = [seq, seq]
        elif seq < found[0]:
            found[0] = seq
        elif seq > found[1]:
            found[1] = seq
    return [{"seg": segment, "lo": lo, "hi": hi} for segment, (lo, hi) in ranges.items()]


class EntryIndex:
    """The index file at `path`; use open_index() to get one with corruption handled.

    `wal_limit` bounds its WAL file (wal_limit_for(--storage-limit)); it can be changed while
    open (the storage limit can)."""

    def __init__(self, path: Path, wal_limit: int = WAL_LIMIT_MIN):
        self.path = Path(path)
        self._wal_path = f"{self.path}-wal"
        self._shm_path = f"{self.path}-shm"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._closed = False
        self.wal_limit = wal_limit
        self._checkpoint_wanted = threading.Event()
        # Held by whoever checkpoints: sqlite answers a checkpoint begun while another runs
        # with "busy" at once (no busy handler), so the writer's waits for the thread's.
        self._checkpointing = threading.Lock()
        # count()'s cache, kept by the writes made through this object (only the worker's
        # one EntryIndex writes), and what orders it with them (_counted).
        self._counting = threading.Lock()
        self._count: int | None = None
        self._generation = 0
        self._checkpointer: threading.Thread | None = None
        # With a budget (set by the worker), every write that can grow the files first makes
        # sure its bound fits the index's grant; _writing orders the writes with their checks.
        self.budget: IndexBudget | None = None
        self._writing = threading.RLock()
        self._page_size = 0
        self._max_ts: float | None = None   # the highest ts indexed: rows below it cost more
        self.over_estimate = 0              # writes that grew the files past their bound
        self.transactions = 0               # transactions that wrote rows or the cursor
        # Checkpoints made by the checkpoint thread, and by a writer that found the WAL past
        # its limit (the writer then waited for it).
        self.background_checkpoints = 0
        self.writer_checkpoints = 0
        connection = self._connection()
        with connection:
            connection.executescript(_SCHEMA)
            connection.execute("INSERT OR IGNORE INTO meta (key, value) VALUES "
                               "('schema_version', ?)", (SCHEMA_VERSION,))
            # Names this index's seq numbering: a reset or rebuilt index numbers from 1 again
            # under another id, so a reader resuming after seq N can tell (the /stream hello).
            connection.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)",
                               (secrets.token_hex(4),))
        if self.get_meta("schema_version") in MIGRATES_FROM:
            self._migrate(connection)
        self.store_id = self.get_meta("store_id") or ""

    @property
    def wal_limit(self) -> int:
        return self._wal_limit

    @wal_limit.setter
    def wal_limit(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"wal_limit {value}: expected at least 1 byte")
        self._wal_limit = value
        # The checkpoint thread is woken past a quarter of the limit.
        self._wal_wake = max(1, value // 4)

    def _migrate(self, connection: sqlite3.Connection) -> None:
        """Version 1 -> 2: each segment's rows get one seq range (from its lowest seq to its
        highest: wide where a straggler came late, which costs only a longer scan at its
        prune), and the index on first_seg goes. 2 -> 3: the index on (ts, seq) gives way to
        one on ts (the executescript in __init__ made it). Rows, ids and cursor stay."""
        with _transaction(connection):
            if self.get_meta("schema_version") == "1":
                connection.execute("DELETE FROM segment_seqs")   # a migration cut short before
                connection.execute("INSERT INTO segment_seqs (first_seg, lo, hi) "
                                   "SELECT first_seg, min(seq), max(seq) FROM entries "
                                   "GROUP BY first_seg")
                connection.execute("DROP INDEX IF EXISTS entries_by_segment")
            connection.execute("DROP INDEX IF EXISTS entries_by_time")
            connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                               (SCHEMA_VERSION,))
        # Building the new index went through the WAL (8 MB for 200k rows): within its bound
        # again before the first write.
        self._committed(connection)

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self._closed:
            raise StoreError(f"index {self.path} is closed")
        connection = None
        try:
            # Autocommit mode: transactions are explicit (BEGIN in add) so reads never hold
            # a snapshot open between calls.
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                         isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # Both take effect only in a new file, before journal_mode=WAL writes its header,
            # and the page size only before auto_vacuum (which fixes it). Pages freed by
            # pruning go back to the disk (incremental_vacuum after each prune), so the file
            # shrinks with the store.
            connection.execute(f"PRAGMA page_size={PAGE_SIZE}")
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
            connection.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash (kill -9); only an OS crash may
            # drop the last transactions, and then rows and cursor go back together. Commits
            # do not sync; checkpoints do.
            connection.execute("PRAGMA synchronous=NORMAL")
            # No checkpoint inside a COMMIT: the checkpoint thread makes them (_committed).
            connection.execute("PRAGMA wal_autocheckpoint=0")
        except sqlite3.Error as exc:
            if connection is not None:
                connection.close()
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                # A thread's first connection on a full disk (another program filled it): the
                # writers wait for room on this error as on any write's (pipeline.disk_full),
                # and open it again then.
                raise
            raise StoreError(f"cannot open index {self.path}: {exc}") from None
        self._local.connection = connection
        with self._guard:
            self._connections.append(connection)
        return connection

    # -- the WAL ---------------------------------------------------------------------------

    def _wal_size(self) -> int:
        try:
            return os.stat(self._wal_path).st_size
        except FileNotFoundError:
            return 0

    def _wal_used(self) -> int:
        """The bytes of the WAL's frames since it last started over (its file, kept at up to
        the limit, says nothing of that): mxFrame of the wal-index header, the shared-memory
        file's first bytes (https://sqlite.org/walformat.html, native byte order). A hint
        for waking the checkpoint thread only: the file's size if it cannot be read."""
        try:
            with open(self._shm_path, "rb", buffering=0) as shm:
                header = shm.read(20)
        except OSError:
            return self._wal_size()
        if len(header) < 20:
            return self._wal_size()
        page = int.from_bytes(header[14:16], sys.byteorder) or 1
        page = 65536 if page == 1 else page
        return WAL_HEADER + int.from_bytes(header[16:20], sys.byteorder) * (page + 24)

    def _committed(self, connection: sqlite3.Connection) -> None:
        """After a write: past a quarter of the WAL's limit wake the checkpoint thread; past
        the limit checkpoint it here and start it over (the thread fell behind a busy writer,
        or readers kept it from restarting the WAL)."""
        limit = self._wal_limit
        if getattr(self._local, "journal_limit", None) != limit:
            # A WAL that a write starts over is cut back to the limit, not below: its blocks
            # are written over in place (set per connection, by its own thread: the limit can
            # change while open).
            self._local.journal_limit = limit
            connection.execute(f"PRAGMA journal_size_limit={limit}").fetchall()
        size = self._wal_size()
        if size > limit:
            self.writer_checkpoints += 1
            with self._checkpointing:
                # RESTART, not TRUNCATE: a WAL cut to nothing grew again from nothing, and a
                # busy writer's WAL never restarts otherwise (the thread's checkpoints never
                # catch up with it), so every frame went to a block the file system had to
                # allocate anew (~25% of the writer's CPU: docs/BENCHMARKS.md, "The index
                # writer's WAL"). A write after it starts the WAL over and cuts it to the limit.
                connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                # (a write that changes nothing writes no page: this one counts them)
                with _transaction(connection):
                    connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES "
                                       "('wal_restarts', ?)", (str(self.writer_checkpoints),))
                if self._wal_size() > limit:     # readers kept it from starting over
                    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        elif size > self._wal_wake and self._wal_used() > self._wal_wake:
            if self._checkpointer is None:
                self._start_checkpointer()
            self._checkpoint_wanted.set()

    def _start_checkpointer(self) -> None:
        with self._guard:
            if self._checkpointer is not None or self._closed:
                return
            self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                                  name="shark-index-checkpoint", daemon=True)
            self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database beside the writer (PASSIVE: it never blocks a
        writer or a reader). Once all of it is copied, the next write starts the WAL over
        from its beginning, so its file stops growing."""
        while not self._closed:
            self._checkpoint_wanted.wait(CHECKPOINT_EVERY_S)
            self._checkpoint_wanted.clear()
            if self._closed:
                return
            try:
                with self._checkpointing:
                    self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.background_checkpoints += 1
            except (sqlite3.Error, StoreError) as exc:
                if self._closed:
                    return
                # The writer still checkpoints past the limit: the WAL stays bounded.
                log.warning("index %s: checkpoint failed: %s", self.path, exc)
                time.sleep(CHECKPOINT_EVERY_S)

    # -- room within the budget -----------------------------------------------------------

    def files_bytes(self, connection: sqlite3.Connection | None = None) -> tuple[int, int]:
        """(the bytes the index's files may take as they are, free pages): the database at
        its committed size when that is above its file's (a checkpoint grows the file to it),
        the WAL and the shared memory as they are."""
        total, free, _wal, _shm = self._files(connection or self._connection())
        return total, free

    def _files(self, connection: sqlite3.Connection) -> tuple[int, int, int, int]:
        """files_bytes(), and the WAL's and shared memory's bytes within it."""
        if not self._page_size:
            self._page_size = connection.execute("PRAGMA page_size").fetchone()[0]
            if self.budget is not None:      # a step holds a write of a few rows
                self.budget.floor = STEP_PAGES * self._page_size
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        free = connection.execute("PRAGMA freelist_count").fetchone()[0]
        sizes = []
        for suffix in ("", "-wal", "-shm"):
            try:
                sizes.append(os.stat(f"{self.path}{suffix}").st_size)
            except FileNotFoundError:
                sizes.append(0)
        database, wal, shm = sizes
        return max(database, pages * self._page_size) + wal + shm, free, wal, shm

    def _growth(self, frames: int, new_pages: int, files: tuple[int, int, int, int]) -> int:
        """The most a transaction changing `frames` pages, `new_pages` of them added (free
        pages are used first), adds to the files (as _files() measured them)."""
        page = self._page_size
        _total, free, wal, shm = files
        wal_frames = max(0, wal - WAL_HEADER) // (page + 24) + frames
        shm_after = SHM_BLOCK * -(-wal_frames // SHM_FRAMES)
        return (frames * (page + 24) + WAL_HEADER + max(0, new_pages - free) * page
                + max(0, shm_after - shm))

    def _room(self, connection: sqlite3.Connection, frames: int, new_pages: int,
              shrinking: bool, files: tuple[int, int, int, int] | None = None) -> int | None:
        """Make sure a write of that bound fits the budget; the files' bytes it may reach,
        None without a budget. A write that grows the index keeps budget.step spare for the
        ones that shrink it (pruning, vacuum), which may use it. IndexFull when the segment
        writer did not grant the room in time. A shrinking write that does not fit first
        has the WAL checkpointed and cut; it goes on anyway when the index is above its grant
        already (a lowered limit, an older and larger index): only shrinking brings it back."""
        budget = self.budget
        if budget is None:
            return None
        files = files or self._files(connection)
        now, growth = files[0], self._growth(frames, new_pages, files)
        keep = 0 if shrinking else budget.step
        if budget.fits(now, growth, keep, ROOM_WAIT_S):
            return now + growth
        if self._wal_size() > 0:
            with self._checkpointing:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self.writer_checkpoints += 1
            files = self._files(connection)
            now, growth = files[0], self._growth(frames, new_pages, files)
            if budget.fits(now, growth, keep, ROOM_WAIT_S):
                return now + growth
        if shrinking and budget.over(now):
            return None
        raise IndexFull(f"index {self.path}: no room for {growth} more bytes beside its "
                        f"{now} within the {budget.granted()} bytes of --storage-limit granted "
                        "to it (the segment writer evicts for it; tried again later)")

    def _check_bound(self, bound: int | None) -> None:
        """After a write made within a bound: count (and log) one whose files (as `du` sees
        them) grew past it."""
        if bound is None:
            return
        now = self.size_bytes()
        if now > bound:
            self.over_estimate += 1
            if self.over_estimate <= 10 or self.over_estimate % 1000 == 0:
                log.warning("index %s: a write grew its files to %d bytes, past its bound of %d "
                            "(%d times)", self.path, now, bound, self.over_estimate)

    def _insert_bound(self, connection: sqlite3.Connection, values: Sequence[IndexValues],
                      replaces: bool, top: float | None = None,
                      before: Sequence[float] = ()) -> int:
        """The pages inserting these rows changes at most, all of them maybe added (see
        TRANSACTION_PAGES); `top`: the highest ts indexed before them (else the index's);
        `before`: the ts of rows written before them and not yet in the index."""
        if not values:
            return CURSOR_PAGES
        if top is None:
            top = self._max_ts if self._max_ts is not None else float("-inf")
        facts = _WriteFacts(values, self._page_size or PAGE_SIZE)
        return self._bound(connection, facts, 0, len(values), replaces, top, sorted(before))

    def _bound(self, connection: sqlite3.Connection, facts: _WriteFacts, start: int, end: int,
               replaces: bool, top: float, before: list[float]) -> int:
        """_insert_bound() of the rows start:end of a write (`before`: sorted)."""
        page = facts.page
        count = end - start
        payload = facts.sums[end] - facts.sums[start] + ROW_OVERHEAD * count
        big = facts.bigs[end] - facts.bigs[start] if facts.bigs else 0
        if replaces:
            behind = count
        else:
            behind = self._behind(connection, facts.times[start:end], top, before)
        return (-(-2 * payload // page) + big + -(-INDEX_CELL * count // page)
                + OUT_OF_ORDER_PAGES * behind + TRANSACTION_PAGES)

    def _behind(self, connection: sqlite3.Connection, times: Sequence[float], top: float,
                before: list[float]) -> int:
        """The rows charged as going back: those whose ts is below `top` or an earlier row's,
        but no more than the leaves they can reach (_reach; `before` sorted). Counted only up
        to that: with shards merged most rows go back a little and the reach is a handful (a
        running maximum over every row cost ~0.15 us per row)."""
        # The first row below the one before it (below `top` for the first), found in C: up
        # to it the rows rise, so it is the first below the running maximum (a Python loop
        # over every row of a write in order was ~5% of the write thread's CPU).
        first = next(compress(range(len(times)), map(lt, times, chain((top,), times))), None)
        if first is None:
            return 0                     # in order: none goes back
        highest = times[first - 1] if first else top
        reach = self._reach(connection, min(times), len(times) - first, before)
        behind = 0
        for ts in times[first:]:
            if ts < highest:
                behind += 1
                if behind >= reach:
                    return reach
            else:
                highest = ts
        return behind

    def _reach(self, connection: sqlite3.Connection, lowest: float, most: int,
               before: list[float]) -> int:
        """The leaves of entries_by_ts that new keys with ts >= `lowest` can land on (see
        REACH_EDGE_LEAVES), or `most` if fewer: the stored entries with ts >= lowest (counted
        up to `most`, a walk of the index's last entries) and those about to be (`before`,
        sorted: counted by bisection), plus one. (`most`: at least the rows going back; the
        charge is the smaller of the two.)"""
        stored = connection.execute(
            "SELECT count(*) FROM (SELECT 1 FROM entries WHERE ts >= ? LIMIT ?)",
            (lowest, most)).fetchone()[0]
        stored += len(before) - bisect_left(before, lowest)
        return min(most, stored + 1 + REACH_EDGE_LEAVES)

    def _pieces(self, connection: sqlite3.Connection, files: tuple[int, int, int, int] | None,
                values: Sequence[IndexValues], replaces: bool, times: list[float] | None = None
                ) -> list[tuple[Sequence[IndexValues], int]]:
        """The rows in runs whose writes each fit one budget step as the files are now (all of
        them without a budget), with the bound of each (pages changed, maybe all added).
        `times`: the rows' ts, when the caller has them.

        The rows' times and sizes are read once per write (a merge may hand over 40,000 rows
        at once: cut into ~70 pieces, each rebuilt the list of all the times before it, twice)."""
        if not values:
            return [(values, CURSOR_PAGES)]
        if self.budget is None or files is None:
            return [(values, 0)]
        facts = _WriteFacts(values, self._page_size or PAGE_SIZE, times)
        pieces: list[tuple[Sequence[IndexValues], int]] = []
        top = self._max_ts if self._max_ts is not None else float("-inf")
        before: list[float] = []      # the times of the pieces before, sorted
        start, size, count = 0, len(values), len(values)
        while start < count:
            size = min(size * 2, count - start)
            while True:
                pages = self._bound(connection, facts, start, start + size, replaces, top, before)
                if size == 1 or self._growth(pages, pages, files) <= self.budget.step:
                    break
                size //= 2
            end = start + size
            pieces.append((values[start:end], pages))
            if end < count:
                placed = facts.times[start:end]
                top = max(top, max(placed))
                before.extend(placed)
                before.sort()         # two sorted runs (and a nearly sorted one): merged in C
            start = end
        return pieces

    # -- writing -------------------------------------------------------------------------

    def add(self, rows: Iterable[IndexRow], cursor: PacketRef | None) -> None:
        """Store rows and the dissection cursor (last packet processed) in one transaction,
        then keep the files small (keep_small)."""
        self.add_values([msgspec.structs.astuple(row) for row in rows], cursor)
        self.keep_small()

    def add_values(self, values: Sequence[IndexValues], cursor: PacketRef | None,
                   chunks: Sequence[tuple[Any, ...]] | None = None) -> None:
        """add() for rows given as IndexRow's values in field order (what the dissection
        shards send), without keep_small(): a busy writer calls that now and then. `chunks`:
        flat_chunks(values), made by another thread (the same rows, flattened).

        With a budget, rows that together could pass one budget step go in several
        transactions, the cursor with the last; IndexFull (with the rows written before) when
        the room for the next one was not granted in time."""
        connection = self._connection()
        with self._writing:
            if self._max_ts is None:
                self._max_ts = connection.execute("SELECT max(ts) FROM entries").fetchone()[0] \
                    or float("-inf")
            # the rows' seqs and times, read once for the whole write (a row of another width
            # is refused before anything is written)
            seqs: list[int] = []
            times: list[float] | None = None
            consecutive = False
            if values:
                _check_width(values)
                seqs = list(map(_SEQ, values))
                times = list(map(_TS, values))
                consecutive = _consecutive(seqs)
            above = connection.execute("SELECT max(seq) FROM entries").fetchone()[0] or 0
            replaces = bool(values) and (seqs[0] if consecutive else min(seqs)) <= above
            files = self._files(connection) if self.budget is not None else None
            pieces = self._pieces(connection, files, values, replaces, times)
            written = 0
            for number, (piece, pages) in enumerate(pieces):
                last = number == len(pieces) - 1
                try:
                    # A cursor alone is tiny, and it must always be written: it may use the
                    # room kept for shrinking writes.
                    bound = self._room(connection, pages, pages if piece else 0,
                                       shrinking=not piece, files=files)
                    files = None     # measured again for the next piece: this one grows them
                except IndexFull as full:
                    full.written = written
                    raise
                end = written + len(piece)
                self._add_piece(connection, piece, cursor if last else None,
                                None if chunks is None else (chunks, written),
                                (seqs[written:end], times[written:end], consecutive)
                                if piece and times is not None else None)
                self._check_bound(bound)
                written = end

    def _add_piece(self, connection: sqlite3.Connection, values: Sequence[IndexValues],
                   cursor: PacketRef | None,
                   chunks: tuple[Sequence[tuple[Any, ...]], int] | None = None,
                   known: tuple[list[int], list[float], bool] | None = None) -> None:
        """One transaction: the rows (`chunks`: the write's flat_chunks and where in the
        write these rows start; `known`: the rows' seqs, their times and whether the seqs are
        consecutive, when the caller has them) and the cursor."""
        added: int | None = 0        # rows the table gains (None: unknown, count them again)
        connection.execute("BEGIN IMMEDIATE")
        try:
            if values:
                if known is None:
                    _check_width(values)
                    seqs = list(map(_SEQ, values))
                    times = list(map(_TS, values))
                    consecutive = _consecutive(seqs)
                else:
                    seqs, times, consecutive = known
                above = connection.execute("SELECT max(seq) FROM entries").fetchone()[0] or 0
                if consecutive:
                    # numbered in order (the merge's, a dissection's): distinct, lowest first
                    lowest, highest, distinct = seqs[0], seqs[-1], True
                else:
                    lowest, highest = min(seqs), max(seqs)
                    distinct = len(set(seqs)) == len(seqs)
                # New seqs above every stored one add a row each; else some may replace one.
                added = len(seqs) if lowest > above and distinct else None
                if added is None:
                    connection.executemany(_INSERT, values)
                else:
                    self._append(connection, values, seqs, consecutive, chunks,
                                 numbered=consecutive and lowest == above + 1)
                for found in _seq_ranges(seqs, list(map(_FIRST_SEG, values)), (lowest, highest)):
                    if not connection.execute(_EXTEND_RANGE, found).rowcount:
                        connection.execute(_ADD_RANGE, found)
                connection.execute(
                    "INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT(key) DO "
                    "UPDATE SET value = "
                    "max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                    (highest,))
            if cursor is not None:
                connection.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('cursor', ?)",
                    (f"{cursor[0]}:{cursor[1]}",))
            with self._counting:
                connection.execute("COMMIT")
                self._counted(added)
            self.transactions += 1
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        if values:
            self._max_ts = max(self._max_ts or float("-inf"), max(times))
        self._committed(connection)

    def _append(self, connection: sqlite3.Connection, values: Sequence[IndexValues],
                seqs: list[int], consecutive: bool,
                chunks: tuple[Sequence[tuple[Any, ...]], int] | None = None,
                numbered: bool = False) -> None:
        """INSERT rows whose seqs are all new (`seqs`: theirs; `consecutive`: whether they
        are), APPEND_ROWS to a statement (fewer if the build of sqlite takes fewer
        parameters), the rest in runs of powers of two. With `chunks` (the write's
        flat_chunks, the offset of these rows in it) the whole chunks within these rows go as
        they were made, the rows before and after them (a piece of a write cut by the budget)
        in statements made here. `numbered`: the seqs are consecutive from one above the
        table's highest (_shared_sql's: the statements made here let sqlite number the rows;
        statements run in the rows' order, so each starts one above the table's highest)."""
        width = len(_COLUMNS)
        most = getattr(self._local, "append_rows", None)
        if most is None:
            limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            most = self._local.append_rows = max(1, min(APPEND_ROWS, limit // width))
            # A statement that keeps a statement journal (the pages it changes, to undo it alone)
            # keeps it in memory, not in a temporary file from 64 KiB on (an open, writes and an
            # unlink per statement). Appends keep none since they are OR FAIL (_APPEND). Only
            # this connection's: readers' sorts stay as they are.
            connection.execute("PRAGMA temp_store=MEMORY")
        # (slices of consecutive seqs are consecutive: the statements need not check again)
        counted = True if consecutive else None
        if chunks is None or most != APPEND_ROWS:
            self._append_runs(connection, values, counted, 0, len(values), most, numbered)
            return
        made, offset = chunks
        count = len(values)
        head = min(count, -offset % most)         # rows before the first whole chunk
        first = (offset + head) // most
        whole = (count - head) // most
        end = head + whole * most
        self._append_runs(connection, values, counted, 0, head, most, numbered)
        # the chunks are of these very rows (their first and last seqs)
        if (whole and first + whole <= len(made) and made[first][0] == seqs[head]
                and made[first + whole - 1][1] == seqs[end - 1]):
            for _first, _last, sql, params in made[first:first + whole]:
                connection.execute(sql, params)
        else:
            self._append_runs(connection, values, counted, head, end, most, numbered)
        self._append_runs(connection, values, counted, end, count, most, numbered)

    @staticmethod
    def _append_runs(connection: sqlite3.Connection, values: Sequence[IndexValues],
                     counted: bool | None, start: int, stop: int, most: int,
                     numbered: bool = False) -> None:
        """The rows start:stop in statements of `most` rows, the rest in runs of powers of two,
        each binding the values its rows share once (_column_statement of the rows' columns,
        transposed per statement: its rows stay in the cache; `counted`: True when their seqs
        are known to be consecutive; `numbered`: they are from one above the table's highest)."""
        at = start
        while at < stop:
            rows = min(most, 1 << ((stop - at).bit_length() - 1))
            end = at + (stop - at) // rows * rows
            if rows == 1:
                connection.executemany(_APPEND, values[at:end])
            else:
                for row in range(at, end, rows):
                    connection.execute(*_column_statement(
                        list(zip(*values[row:row + rows])), counted, numbered))
            at = end

    def update_tags(self, changes: Iterable[tuple[int, list[str], list[str]]]) -> dict[int, list[str]]:
        """Add and remove tags on stored entries (scripts' test.pass/test.fail): per change
        (seq, add, remove), in one transaction; returns each found seq's tags after the change.
        Tags keep their order; an added tag that is there already is not added twice."""
        connection = self._connection()
        found: dict[int, list[str]] = {}
        with self._writing:
            updates: list[tuple[bytes, int]] = []
            for seq, add, remove in changes:
                row = connection.execute("SELECT entry_json FROM entries WHERE seq = ?", (seq,)).fetchone()
                if row is None:
                    continue
                entry = msgspec.json.decode(row[0])
                tags = [tag for tag in entry.get("tags") or [] if tag not in remove]
                tags += [tag for tag in dict.fromkeys(add) if tag not in tags]
                entry["tags"] = tags
                updates.append((msgspec.json.encode(entry), seq))
                found[seq] = tags
            page = self._page_size or PAGE_SIZE
            # each row: its leaf, its old and new overflow pages, a split
            frames = sum(4 + 2 * -(-len(blob) // page) for blob, _seq in updates) + TRANSACTION_PAGES
            bound = self._room(connection, frames, frames, shrinking=False)
            with _transaction(connection):
                connection.executemany("UPDATE entries SET entry_json = ? WHERE seq = ?", updates)
            self._committed(connection)
            self._check_bound(bound)
        return found

    def prune_segments_before(self, segment_id: int) -> int:
        """Delete the rows whose first packet is in a segment older than segment_id: those
        in the seq ranges of these segments (segment_seqs), in chunks (every page a delete
        changes goes through the WAL)."""
        connection = self._connection()
        ranges = connection.execute(
            "SELECT first_seg, lo, hi FROM segment_seqs WHERE first_seg < ? ORDER BY lo",
            (segment_id,)).fetchall()
        deleted = 0
        for segment, lo, hi in ranges:
            start = lo
            while True:
                with self._writing:
                    # The rows to go next: their sizes and times bound the pages it changes.
                    found = connection.execute(
                        "SELECT seq, ts, length(entry_json) FROM entries WHERE seq BETWEEN ? "
                        "AND ? AND first_seg < ? ORDER BY seq LIMIT ?",
                        (start, hi, segment_id, PRUNE_CHUNK)).fetchall()
                    chunk, pages = self._prune_bound(connection, found)
                    bound = self._room(connection, pages, 0, shrinking=True)
                    last = len(found) < PRUNE_CHUNK and len(chunk) == len(found)
                    self._prune_step(connection, (segment, lo), chunk, segment_id, last)
                    self._check_bound(bound)
                deleted += len(chunk)
                self.keep_small()
                if last:
                    break
                start = chunk[-1][0] + 1
        return deleted

    def _prune_bound(self, connection: sqlite3.Connection, found: list[Any]
                     ) -> tuple[list[Any], int]:
        """The first of the rows `found` (seq, ts, entry bytes) whose delete fits the room the
        index has (at least one), and the pages that delete changes at most: their leaves
        (rows were appended: leaves at least half full), their time index entries (one leaf
        each for those whose time goes back), the leaves beside the range and the rest."""
        if not found:
            return found, CURSOR_PAGES
        page = self._page_size or PAGE_SIZE
        spare = self._spare_frames(connection)
        count = len(found)
        while True:
            part = found[:count]
            times = [row[1] for row in part]
            behind = sum(map(lt, times, accumulate(times, max, initial=float("-inf"))))
            payload = sum(row[2] for row in part) + ROW_OVERHEAD * count
            pages = (-(-2 * payload // page) + -(-INDEX_CELL * count // page)
                     + OUT_OF_ORDER_PAGES * behind + 4 + TRANSACTION_PAGES)
            if count == 1 or pages <= spare:
                return part, pages
            count //= 2

    def _spare_frames(self, connection: sqlite3.Connection) -> int:
        """WAL frames a shrinking write may add: those of the room kept for it (a budget
        step) or of what the grant leaves spare, if more; many without a budget."""
        if self.budget is None:
            return 1 << 30
        spare = max(self.budget.step, self.budget.granted() - self._files(connection)[0])
        return spare // (self._page_size + 24) - 8

    def _prune_step(self, connection: sqlite3.Connection, seq_range: tuple[int, int],
                    chunk: list[Any], segment_id: int, last: bool) -> None:
        """Delete the rows `chunk` (seq first, in order: all the rows of segments before
        segment_id between its first and last) in one transaction; with the `last` rows of
        the seq range (first_seg, lo) the range goes too, so that no row is left without one."""
        segment, lo = seq_range
        connection.execute("BEGIN IMMEDIATE")
        try:
            if chunk:
                connection.execute(
                    "DELETE FROM entries WHERE seq BETWEEN ? AND ? AND first_seg < ?",
                    (chunk[0][0], chunk[-1][0], segment_id))
            if last:
                connection.execute("DELETE FROM segment_seqs WHERE first_seg = ? AND lo = ?",
                                   (segment, lo))
            with self._counting:
                connection.execute("COMMIT")
                self._counted(-len(chunk))
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def keep_small(self) -> None:
        """Give free pages back to the disk (up to VACUUM_BYTES at a time: each page moved is
        written to the WAL) and keep the WAL within its limit (_committed): both count in the
        storage limit, and the segment writer evicts for them."""
        connection = self._connection()
        with self._writing:
            if connection.execute("PRAGMA freelist_count").fetchone()[0] > 0:
                pages = self._vacuum_pages(connection)
                # each page moved: itself, its parent, a pointer-map page
                try:
                    bound = self._room(connection, 3 * pages + 8, 0, shrinking=True)
                except IndexFull:
                    bound, pages = None, 0       # the next call tries again
                if pages:
                    # executescript steps the pragma to its end; execute() frees one page per call
                    connection.executescript(f"PRAGMA incremental_vacuum({pages});")
                    self._check_bound(bound)
            self._committed(connection)

    def _vacuum_pages(self, connection: sqlite3.Connection) -> int:
        """Pages freed per vacuum step: VACUUM_BYTES of them, fewer when their bound would
        pass the room the index has."""
        pages = getattr(self._local, "vacuum_pages", None)
        if pages is None:
            pages = self._local.vacuum_pages = max(
                1, VACUUM_BYTES // connection.execute("PRAGMA page_size").fetchone()[0])
        if self.budget is None:
            return pages
        return max(1, min(pages, (self._spare_frames(connection) - 8) // 3))

    def set_meta(self, key: str, value: str) -> None:
        connection = self._connection()
        with self._writing:
            bound = self._room(connection, TRANSACTION_PAGES, 2, shrinking=False)
            with _transaction(connection):
                connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                   (key, value))
            self._committed(connection)
            self._check_bound(bound)

    # -- reading -------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._connection().execute("SELECT value FROM meta WHERE key = ?",
                                         (key,)).fetchone()
        return None if row is None else row[0]

    def cursor(self) -> PacketRef | None:
        """The last packet the dissection processed, or None to start from the oldest."""
        value = self.get_meta("cursor")
        if value is None:
            return None
        segment, _, offset = value.partition(":")
        return int(segment), int(offset)

    def get(self, seq: int) -> IndexRow | None:
        row = self._connection().execute(f"{_SELECT} WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else IndexRow(*row)

    def query(self, since: float | None = None, until: float | None = None,
              before_seq: int | None = None, batch: int = 500) -> Iterator[IndexRow]:
        """Rows with since <= ts < until, newest first (by ts, then seq), fetched `batch`
        at a time so that a caller filtering in Python can stop early.

        before_seq pages on: only rows that come after entry `before_seq` in this order (or,
        once that entry is gone, rows with a smaller seq)."""
        connection = self._connection()
        conditions: list[str] = []
        params: list[object] = []
        if since is not None:
            conditions.append("ts >= ?")
            params.append(since)
        if until is not None:
            conditions.append("ts < ?")
            params.append(until)
        key: tuple[float, int] | None = None
        if before_seq is not None:
            anchor = connection.execute("SELECT ts FROM entries WHERE seq = ?",
                                        (before_seq,)).fetchone()
            if anchor is not None:
                key = (anchor[0], before_seq)
            else:
                conditions.append("seq < ?")
                params.append(before_seq)
        batch = max(1, batch)
        while True:
            where = list(conditions)
            page_params = list(params)
            if key is not None:
                where.append("(ts, seq) < (?, ?)")
                page_params.extend(key)
            sql = _SELECT
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY ts DESC, seq DESC LIMIT ?"
            rows = connection.execute(sql, (*page_params, batch)).fetchall()
            for row in rows:
                yield IndexRow(*row)
            if len(rows) < batch:
                return
            key = (rows[-1][1], rows[-1][0])

    def newer_than(self, seq: int, limit: int | None = None) -> list[IndexRow]:
        """Rows with a seq above `seq`, oldest first (the live stream polls with this)."""
        sql = f"{_SELECT} WHERE seq > ? ORDER BY seq"
        params: tuple[int, ...] = (seq,)
        if limit is not None:
            sql += " LIMIT ?"
            params = (seq, limit)
        return [IndexRow(*row) for row in self._connection().execute(sql, params)]

    def max_seq(self) -> int:
        """The highest seq ever added (pruned rows included), 0 for a new index."""
        connection = self._connection()
        stored = connection.execute("SELECT max(seq) FROM entries").fetchone()[0] or 0
        remembered = connection.execute(
            "SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return max(stored, int(remembered[0]) if remembered else 0)

    def count(self) -> int:
        """The rows stored: counted once (a scan: ~3 ms per 200k rows), then kept by this
        object's writes (/status asks often)."""
        known = self._count
        if known is not None:
            return known
        generation = self._generation
        counted = self._connection().execute("SELECT count(*) FROM entries").fetchone()[0]
        with self._counting:
            # No write committed since the generation was read: the count is still true.
            if generation == self._generation:
                self._count = counted
        return counted

    def _counted(self, change: int | None) -> None:
        """A write that changed the rows by `change` (None: unknown) just committed; called
        under _counting, with the COMMIT, so that count() never caches a count that misses
        a write or counts one twice."""
        self._generation += 1
        if self._count is not None:
            self._count = None if change is None else self._count + change

    def size_bytes(self) -> int:
        """The index's bytes on disk, WAL and shared-memory files included."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                pass
        return total

    def close(self) -> None:
        with self._guard:
            self._closed = True
            checkpointer = self._checkpointer
        if checkpointer is not None and checkpointer is not threading.current_thread():
            self._checkpoint_wanted.set()
            checkpointer.join(BUSY_TIMEOUT_MS / 1000)   # a checkpoint under way ends first
        with self._guard:
            connections, self._connections = self._connections, []
        for connection in connections:
            try:
                connection.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    def __enter__(self) -> EntryIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _transaction:
    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


def _check(path: Path) -> str | None:
    """Why the index file at path cannot be used, or None when it is sound."""
    if not path.exists():
        return "is missing"
    try:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        return f"cannot be opened ({exc})"
    try:
        result = connection.execute("PRAGMA quick_check").fetchall()
        if result != [("ok",)]:
            lines = [line.strip() for r in result for line in str(r[0]).splitlines()]
            detail = "; ".join(line for line in lines
                               if line and line != "*** in database main ***")
            return f"failed its integrity check ({detail[:200]})"
        try:
            row = connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError:
            return "has no schema version (not an index of this program)"
        if row is None or row[0] not in (SCHEMA_VERSION, *MIGRATES_FROM):
            found = None if row is None else row[0]
            return f"has schema version {found}, expected {SCHEMA_VERSION}"
        return None
    except sqlite3.DatabaseError as exc:
        return f"is corrupt ({exc})"
    finally:
        connection.close()


def open_index(path: Path, wal_limit: int = WAL_LIMIT_MIN) -> tuple[EntryIndex, str | None]:
    """Open the index (its WAL kept within wal_limit: wal_limit_for(--storage-limit)); a
    missing or unusable one is replaced by an empty one, an older version is migrated. The
    note (one line, or None) says what happened: the index then gets rebuilt from the PCAP
    segments."""
    path = Path(path)
    try:
        make_dir(path.parent)
    except OSError as exc:
        raise StoreError(f"index directory {path.parent}: {exc.strerror or exc}") from None
    problem = _check(path)
    if problem is None:
        return EntryIndex(path, wal_limit), None
    note = f"index {path} {problem}; it will be rebuilt from the PCAP segments"
    if path.exists():
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        for old in path.parent.glob(f"{path.name}.corrupt-*"):
            old.unlink(missing_ok=True)
        try:
            os.replace(path, aside)
        except OSError as exc:
            raise StoreError(f"cannot move the bad index {path} aside: {exc.strerror}") from None
        note = f"index {path} {problem}; moved to {aside.name}, it will be rebuilt from the " \
               "PCAP segments"
    # A WAL left by the bad file must not be replayed into the new one.
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    # SQLite gives its WAL and shared-memory files the database file's mode.
    create_file(path)
    return EntryIndex(path, wal_limit), note
