"""The entry index: one sqlite3 row per entry, pointing at the packets it came from.

The dissection thread writes (rows and its cursor in one transaction, so a crash never leaves
them disagreeing); API threads read at the same time. Each thread gets its own connection;
WAL lets readers run beside the writer and busy_timeout covers the short write locks.

A corrupt, foreign or missing index is not repaired: open_index() moves it aside and starts an
empty one, whose cursor() is None, so the caller re-dissects the PCAP segments from the oldest.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgspec

from worker.packet import PacketRef
from worker.store.private import create_file, make_dir
from worker.store.segments import StoreError

SCHEMA_VERSION = "1"
BUSY_TIMEOUT_MS = 10_000
# The WAL is checkpointed every 64 pages (256 KiB at 4 KiB pages, sqlite's default is 1000)
# and cut back to 256 KiB after: it counts in --storage-limit, whose minimum is 2 MiB.
WAL_CHECKPOINT_PAGES = 64
WAL_SIZE_LIMIT = 256 * 1024
# Rows deleted per transaction when pruning (their pages go through the WAL).
PRUNE_CHUNK = 256
# Free pages given back per prune (1 MiB at 4 KiB pages): the moves go through the WAL.
VACUUM_PAGES = 256

_COLUMNS = ("seq", "ts", "protocol", "entry_json", "first_seg", "first_off", "last_seg",
            "last_off", "transport", "client_ip", "client_port", "server_ip", "server_port",
            "client_offset", "server_offset", "client_seq", "server_seq")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM entries"
_INSERT = (f"INSERT OR REPLACE INTO entries ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_COLUMNS))})")
_SCHEMA = """
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
CREATE INDEX IF NOT EXISTS entries_by_time ON entries (ts, seq);
CREATE INDEX IF NOT EXISTS entries_by_segment ON entries (first_seg);
"""


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


class EntryIndex:
    """The index file at `path`; use open_index() to get one with corruption handled."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._closed = False
        connection = self._connection()
        with connection:
            connection.executescript(_SCHEMA)
            connection.execute("INSERT OR IGNORE INTO meta (key, value) VALUES "
                               "('schema_version', ?)", (SCHEMA_VERSION,))
            # Names this index's seq numbering: a reset or rebuilt index numbers from 1 again
            # under another id, so a reader resuming after seq N can tell (the /stream hello).
            connection.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)",
                               (secrets.token_hex(4),))
        self.store_id = self.get_meta("store_id") or ""

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self._closed:
            raise StoreError(f"index {self.path} is closed")
        try:
            # Autocommit mode: transactions are explicit (BEGIN in add) so reads never hold
            # a snapshot open between calls.
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                         isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # Pages freed by pruning go back to the disk (incremental_vacuum after each
            # prune), so the file shrinks with the store. It takes effect only in a new file
            # and before journal_mode=WAL writes the file's header.
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
            connection.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash (kill -9); only an OS crash may
            # drop the last transactions, and then rows and cursor go back together.
            connection.execute("PRAGMA synchronous=NORMAL")
            # The WAL counts in --storage-limit: checkpoint it often and cut it back after.
            connection.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open index {self.path}: {exc}") from None
        self._local.connection = connection
        with self._guard:
            self._connections.append(connection)
        return connection

    # -- writing -------------------------------------------------------------------------

    def add(self, rows: Iterable[IndexRow], cursor: PacketRef | None) -> None:
        """Store rows and the dissection cursor (last packet processed) in one transaction,
        then keep the files small (keep_small)."""
        self.add_values([msgspec.structs.astuple(row) for row in rows], cursor)
        self.keep_small()

    def add_values(self, values: Sequence[IndexValues], cursor: PacketRef | None) -> None:
        """add() for rows given as IndexRow's values in field order (what the dissection
        shards send), without keep_small(): a busy writer calls that now and then."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            if values:
                connection.executemany(_INSERT, values)
                connection.execute(
                    "INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT(key) DO "
                    "UPDATE SET value = "
                    "max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                    (max(map(_SEQ, values)),))
            if cursor is not None:
                connection.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('cursor', ?)",
                    (f"{cursor[0]}:{cursor[1]}",))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def update_tags(self, changes: Iterable[tuple[int, list[str], list[str]]]) -> dict[int, list[str]]:
        """Add and remove tags on stored entries (scripts' test.pass/test.fail): per change
        (seq, add, remove), in one transaction; returns each found seq's tags after the change.
        Tags keep their order; an added tag that is there already is not added twice."""
        connection = self._connection()
        found: dict[int, list[str]] = {}
        with _transaction(connection):
            for seq, add, remove in changes:
                row = connection.execute("SELECT entry_json FROM entries WHERE seq = ?", (seq,)).fetchone()
                if row is None:
                    continue
                entry = msgspec.json.decode(row[0])
                tags = [tag for tag in entry.get("tags") or [] if tag not in remove]
                tags += [tag for tag in dict.fromkeys(add) if tag not in tags]
                entry["tags"] = tags
                connection.execute("UPDATE entries SET entry_json = ? WHERE seq = ?",
                                   (msgspec.json.encode(entry), seq))
                found[seq] = tags
        return found

    def prune_segments_before(self, segment_id: int) -> int:
        """Delete the rows whose first packet is in a segment older than segment_id."""
        connection = self._connection()
        deleted = 0
        while True:   # in chunks: every page a delete changes goes through the WAL
            with _transaction(connection):
                count = connection.execute(
                    "DELETE FROM entries WHERE seq IN (SELECT seq FROM entries WHERE "
                    "first_seg < ? LIMIT ?)", (segment_id, PRUNE_CHUNK)).rowcount
            deleted += count
            if count:
                self.keep_small()
            if count < PRUNE_CHUNK:
                return deleted

    def keep_small(self) -> None:
        """Give free pages back to the disk (up to VACUUM_PAGES at a time: each page moved is
        written to the WAL) and cut a WAL grown past WAL_SIZE_LIMIT: both count in the
        storage limit, and the segment writer evicts for them."""
        connection = self._connection()
        if connection.execute("PRAGMA freelist_count").fetchone()[0] > 0:
            # executescript steps the pragma to its end; execute() frees one page per call
            connection.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
        try:
            wal = os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return
        if wal > WAL_SIZE_LIMIT:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def set_meta(self, key: str, value: str) -> None:
        connection = self._connection()
        with _transaction(connection):
            connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                               (key, value))

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
        return self._connection().execute("SELECT count(*) FROM entries").fetchone()[0]

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
        if row is None or row[0] != SCHEMA_VERSION:
            found = None if row is None else row[0]
            return f"has schema version {found}, expected {SCHEMA_VERSION}"
        return None
    except sqlite3.DatabaseError as exc:
        return f"is corrupt ({exc})"
    finally:
        connection.close()


def open_index(path: Path) -> tuple[EntryIndex, str | None]:
    """Open the index; a missing or unusable one is replaced by an empty one. The note (one
    line, or None) says what happened: the index then gets rebuilt from the PCAP segments."""
    path = Path(path)
    try:
        make_dir(path.parent)
    except OSError as exc:
        raise StoreError(f"index directory {path.parent}: {exc.strerror}") from None
    problem = _check(path)
    if problem is None:
        return EntryIndex(path), None
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
    return EntryIndex(path), note
