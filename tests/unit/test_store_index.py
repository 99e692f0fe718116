"""The entry index: rows with the dissection cursor, queries, pruning, corruption recovery."""

from __future__ import annotations

import sqlite3
import threading
import time

import msgspec
import pytest

from shark.model import Endpoint, Entry, encode
from worker.store.index import PAGE_SIZE, EntryIndex, IndexRow, open_index


def make_row(seq: int, ts: float | None = None, segment: int = 1, **changes) -> IndexRow:
    ts = 1_700_000_000.0 + seq if ts is None else ts
    entry = Entry(id=f"node-a:{seq}", node="node-a", protocol="http", ts=ts,
                  src=Endpoint(ip="10.0.0.1", port=40000 + seq),
                  dst=Endpoint(ip="10.0.0.2", port=80), summary=f"GET /{seq}")
    fields = dict(seq=seq, ts=ts, protocol="http", entry_json=encode(entry),
                  first_seg=segment, first_off=24 + seq, last_seg=segment, last_off=500 + seq,
                  transport="tcp", client_ip="10.0.0.1", client_port=40000 + seq,
                  server_ip="10.0.0.2", server_port=80, client_offset=0, server_offset=0,
                  client_seq=1000, server_seq=None)
    fields.update(changes)
    return IndexRow(**fields)


@pytest.fixture
def index(tmp_path):
    opened, _note = open_index(tmp_path / "index.sqlite")
    yield opened
    opened.close()


def test_new_index_is_empty_and_has_no_cursor(index):
    assert index.cursor() is None
    assert index.max_seq() == 0
    assert index.count() == 0
    assert list(index.query(None, None)) == []
    assert index.get(1) is None


def test_rows_and_cursor_are_stored_together(index):
    rows = [make_row(1), make_row(2, server_offset=None, client_seq=None)]
    index.add(rows, (3, 4096))
    assert index.cursor() == (3, 4096)
    assert index.get(1) == rows[0] and index.get(2) == rows[1]
    assert index.count() == 2 and index.max_seq() == 2
    index.add([], (3, 5000))                     # the cursor moves on without new rows
    assert index.cursor() == (3, 5000)
    index.add([make_row(3)], None)               # None leaves the cursor where it was
    assert index.cursor() == (3, 5000)


def test_a_failed_add_changes_neither_rows_nor_cursor(index):
    index.add([make_row(1)], (1, 100))
    broken = make_row(2, protocol=None)          # violates NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        index.add([make_row(3), broken], (1, 900))
    assert index.cursor() == (1, 100)
    assert [row.seq for row in index.query(None, None)] == [1]
    index.add([make_row(4)], (1, 1000))          # the connection is usable afterwards
    assert index.cursor() == (1, 1000)


def test_query_is_newest_first_by_time_then_seq_and_filters_by_time(index):
    # seq order differs from time order: entries are indexed when their response ends.
    rows = [make_row(1, ts=10.0), make_row(2, ts=30.0), make_row(3, ts=20.0),
            make_row(4, ts=30.0), make_row(5, ts=40.0)]
    index.add(rows, None)
    assert [r.seq for r in index.query(None, None)] == [5, 4, 2, 3, 1]
    assert [r.seq for r in index.query(since=20.0, until=40.0)] == [4, 2, 3]
    assert [r.seq for r in index.query(since=30.0, until=None)] == [5, 4, 2]
    assert [r.seq for r in index.query(None, None, before_seq=4)] == [2, 3, 1]
    assert [r.seq for r in index.query(None, None, before_seq=2)] == [3, 1]


def test_query_pages_lazily_and_completely(index):
    index.add([make_row(seq, ts=float(seq // 3)) for seq in range(1, 101)], None)
    expected = sorted(range(1, 101), key=lambda s: (s // 3, s), reverse=True)
    for batch in (1, 3, 7, 100, 500):
        assert [r.seq for r in index.query(None, None, batch=batch)] == expected
    pages = index.query(None, None, batch=10)
    first = [next(pages).seq for _ in range(10)]
    index.add([make_row(1000, ts=-1.0)], None)   # rows added mid-iteration do not disturb
    assert first + [r.seq for r in pages] == expected + [1000]
    # Paging by before_seq from where a caller stopped gives the rest.
    assert [r.seq for r in index.query(None, None, before_seq=first[-1])] == \
        expected[10:] + [1000]


def test_query_before_a_pruned_entry_falls_back_to_seq(index):
    index.add([make_row(seq, segment=seq) for seq in range(1, 6)], None)
    index.prune_segments_before(4)
    index.add([make_row(6, ts=0.0)], None)
    assert [r.seq for r in index.query(None, None, before_seq=3)] == []
    assert [r.seq for r in index.query(None, None, before_seq=5)] == [4, 6]   # 6 is older


def test_newer_than_is_oldest_first(index):
    index.add([make_row(seq) for seq in (3, 1, 2, 5)], None)
    assert [r.seq for r in index.newer_than(1)] == [2, 3, 5]
    assert [r.seq for r in index.newer_than(1, limit=2)] == [2, 3]
    assert index.newer_than(5) == []


def test_prune_removes_rows_of_evicted_segments_and_seq_keeps_counting(index):
    index.add([make_row(seq, segment=1 + seq // 4) for seq in range(1, 13)], (4, 24))
    assert index.prune_segments_before(3) == 7          # seqs 1..7 live in segments 1 and 2
    assert [r.seq for r in index.newer_than(0)] == [8, 9, 10, 11, 12]
    assert index.prune_segments_before(100) == 5
    assert index.count() == 0
    assert index.max_seq() == 12                        # ids are never handed out twice


def test_meta_and_size(index):
    assert index.get_meta("node") is None
    index.set_meta("node", "node-a")
    index.set_meta("node", "node-b")
    assert index.get_meta("node") == "node-b"
    assert index.size_bytes() > 0


def test_reopening_keeps_rows_and_cursor(tmp_path):
    path = tmp_path / "index.sqlite"
    first, note = open_index(path)
    assert "is missing" in note and "rebuilt from the PCAP segments" in note
    first.add([make_row(1), make_row(2)], (2, 48))
    first.close()
    again, note = open_index(path)
    assert note is None
    assert again.cursor() == (2, 48) and again.count() == 2
    again.close()


def _filled_index(path, rows: int = 2000) -> None:
    index = EntryIndex(path)
    index.add([make_row(seq) for seq in range(1, rows + 1)], (9, 9))
    index.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed-page", "empty", "foreign",
                                    "old-schema"])
def test_corrupt_index_is_moved_aside_and_replaced(tmp_path, damage):
    path = tmp_path / "index.sqlite"
    _filled_index(path)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not a database at all\n" * 100)
    elif damage == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "zeroed-page":
        path.write_bytes(data[:4096 * 3] + b"\x00" * 4096 + data[4096 * 4:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":
        path.unlink()
        with sqlite3.connect(path) as other:
            other.execute("CREATE TABLE something (x)")
        other.close()
    else:
        with sqlite3.connect(path) as old:
            old.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
        old.close()
    index, note = open_index(path)
    try:
        assert note is not None and note.startswith(f"index {path} ")
        assert "rebuilt from the PCAP segments" in note and "\n" not in note
        assert index.cursor() is None and index.count() == 0
        index.add([make_row(1)], (1, 24))
        assert index.count() == 1
        aside = list(tmp_path.glob("index.sqlite.corrupt-*"))
        assert len(aside) == 1 and aside[0].name in note
    finally:
        index.close()


def test_only_the_latest_corrupt_file_is_kept(tmp_path):
    path = tmp_path / "index.sqlite"
    (tmp_path / "index.sqlite.corrupt-1").write_bytes(b"old")
    path.write_bytes(b"garbage" * 1000)
    index, note = open_index(path)
    index.close()
    aside = list(tmp_path.glob("index.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"garbage" * 1000


def test_readers_in_other_threads_see_consistent_data_while_writing(tmp_path):
    index, _ = open_index(tmp_path / "index.sqlite")
    done = threading.Event()
    problems: list[str] = []
    # the most rows each reader has seen (a list of every observation grew by millions while the
    # main thread counted it over and over, holding the GIL: the test took up to 85 s in CI)
    most_seen = [0, 0]

    def reader(number: int) -> None:
        try:
            while not done.is_set():
                cursor = index.cursor()
                seqs = [row.seq for row in index.query(None, None, batch=50)]
                # Rows are added 10 at a time with the cursor: they must agree.
                if cursor is not None and len(seqs) < cursor[1]:
                    problems.append(f"cursor {cursor} but only {len(seqs)} rows")
                if len(seqs) % 10:
                    problems.append(f"saw a partial transaction: {len(seqs)} rows")
                if seqs != sorted(seqs, reverse=True):
                    problems.append("rows out of order")
                most_seen[number] = max(most_seen[number], len(seqs))
        except Exception as error:  # reported below, the thread must not die silently
            problems.append(repr(error))

    threads = [threading.Thread(target=reader, args=(number,)) for number in range(len(most_seen))]
    for thread in threads:
        thread.start()
    try:
        for batch in range(100):
            rows = [make_row(batch * 10 + i) for i in range(1, 11)]
            index.add(rows, (1, (batch + 1) * 10))
        while min(most_seen) < 1000 and not problems:
            threading.Event().wait(0.01)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    index.close()
    assert problems == []
    assert most_seen == [1000, 1000]


def test_prune_finds_rows_of_interleaved_and_late_segments(index):
    """A segment's rows are found by seq ranges: rows of two segments interleaved at their
    boundary, and a straggler of an old segment long after (the first exchange of a connection
    opened in it), go with their segment and no other row does."""
    segments = {seq: 1 + seq // 100 for seq in range(1, 400)}   # segments 1..4 in order ...
    for seq in range(95, 105, 2):
        segments[seq] = 2                                          # ... interleaved at 1|2
    segments[350] = 1                                              # a straggler of segment 1
    segments[351] = 2
    seqs = sorted(segments)
    for at in range(0, len(seqs), 37):                              # batches of 37 rows
        index.add([make_row(seq, segment=segments[seq]) for seq in seqs[at:at + 37]], None)
    # the index keeps few ranges: per segment one, plus the stragglers'
    ranges = index._connection().execute("SELECT count(*) FROM segment_seqs").fetchone()[0]
    assert ranges <= 6, ranges
    assert index.prune_segments_before(2) == sum(1 for s in segments.values() if s < 2)
    left = {row.seq for row in index.newer_than(0)}
    assert left == {seq for seq, s in segments.items() if s >= 2}
    assert index.prune_segments_before(3) == sum(1 for s in segments.values() if s == 2)
    assert {row.seq for row in index.newer_than(0)} == {seq for seq, s in segments.items() if s >= 3}
    index.prune_segments_before(100)
    assert index.count() == 0
    assert index._connection().execute("SELECT count(*) FROM segment_seqs").fetchone()[0] == 0


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, protocol TEXT NOT NULL,
    entry_json BLOB NOT NULL, first_seg INTEGER NOT NULL, first_off INTEGER NOT NULL,
    last_seg INTEGER NOT NULL, last_off INTEGER NOT NULL, transport TEXT NOT NULL,
    client_ip TEXT NOT NULL, client_port INTEGER NOT NULL, server_ip TEXT NOT NULL,
    server_port INTEGER NOT NULL, client_offset INTEGER NOT NULL, server_offset INTEGER,
    client_seq INTEGER, server_seq INTEGER);
CREATE INDEX entries_by_time ON entries (ts, seq);
CREATE INDEX entries_by_segment ON entries (first_seg);
"""


def test_a_version_1_index_is_migrated_with_its_rows_ids_and_cursor(tmp_path):
    path = tmp_path / "index.sqlite"
    rows = [make_row(seq, segment=1 + seq // 5) for seq in range(1, 16)]
    old = sqlite3.connect(path)
    old.executescript(V1_SCHEMA)
    old.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [msgspec.structs.astuple(row) for row in rows])
    old.executemany("INSERT INTO meta VALUES (?, ?)", [("schema_version", "1"), ("store_id", "cafe0001"),
                                                      ("cursor", "3:77"), ("last_seq", "15")])
    old.commit()
    old.close()
    index, note = open_index(path)
    try:
        assert note is None                                  # migrated, not rebuilt
        assert index.get_meta("schema_version") == "3"
        assert index.store_id == "cafe0001" and index.cursor() == (3, 77)
        assert index.newer_than(0) == rows
        names = {r[0] for r in index._connection().execute("SELECT name FROM sqlite_master")}
        assert "entries_by_segment" not in names and "segment_seqs" in names
        assert "entries_by_time" not in names and "entries_by_ts" in names
        assert index.prune_segments_before(3) == 9           # seqs 1..9: segments 1 and 2
        assert [r.seq for r in index.newer_than(0)] == list(range(10, 16))
    finally:
        index.close()


V2_SCHEMA = V1_SCHEMA.replace("CREATE INDEX entries_by_segment ON entries (first_seg);", """
CREATE TABLE segment_seqs (first_seg INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    PRIMARY KEY (first_seg, lo)) WITHOUT ROWID;""")


def test_a_version_2_index_is_migrated_and_answers_as_before(tmp_path):
    path = tmp_path / "index.sqlite"
    # two rows share a ts: the order by (ts, seq) must hold without seq in the time index
    rows = [make_row(seq, ts=1_700_000_000.0 + seq // 2, segment=1 + seq // 10,
                     server_offset=None if seq % 3 else seq, client_seq=None if seq % 4 else seq)
            for seq in range(1, 31)]
    old = sqlite3.connect(path)
    old.executescript(V2_SCHEMA)
    # version 2 stored NULL for the optional values
    old.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [msgspec.structs.astuple(row) for row in rows])
    old.executemany("INSERT INTO segment_seqs VALUES (?, ?, ?)", [(1, 1, 9), (2, 10, 19), (3, 20, 29),
                                                                 (4, 30, 30)])
    old.executemany("INSERT INTO meta VALUES (?, ?)", [("schema_version", "2"), ("store_id", "cafe0002"),
                                                      ("cursor", "4:10"), ("last_seq", "30")])
    old.commit()
    newest_first = sorted(rows, key=lambda row: (row.ts, row.seq), reverse=True)
    index, note = open_index(path, wal_limit=4096)
    try:
        assert note is None
        assert index.get_meta("schema_version") == "3"
        wal = tmp_path / "index.sqlite-wal"
        assert not wal.exists() or wal.stat().st_size <= 4096   # the migration's writes checkpointed
        assert index.store_id == "cafe0002" and index.cursor() == (4, 10)
        names = {r[0] for r in index._connection().execute("SELECT name FROM sqlite_master")}
        assert "entries_by_time" not in names and "entries_by_ts" in names
        assert index.newer_than(0) == rows
        assert list(index.query(None, None, batch=4)) == newest_first
        assert list(index.query(None, None, before_seq=17, batch=3)) == newest_first[newest_first.index(rows[16]) + 1:]
        assert list(index.query(1_700_000_003.0, 1_700_000_009.0)) == [
            row for row in newest_first if 1_700_000_003.0 <= row.ts < 1_700_000_009.0]
        # new rows come after the migrated ones, their optional values stored as sent
        index.add_values([msgspec.structs.astuple(make_row(31, segment=4, server_offset=-1, client_seq=-1))], (4, 20))
        assert index.get(31) == make_row(31, segment=4, server_offset=None, client_seq=None)
        assert index.prune_segments_before(3) == 19
        assert [row.seq for row in index.newer_than(0)] == list(range(20, 32))
    finally:
        index.close()
    old.close()


def test_newest_first_needs_no_sort_and_new_rows_are_appended(index):
    connection = index._connection()
    # a new file gets the large pages, and still gives freed pages back (auto_vacuum=2)
    assert connection.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 16384
    assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    plan = connection.execute("EXPLAIN QUERY PLAN SELECT seq FROM entries WHERE ts >= 1 AND (ts, seq) < (2, 3) "
                              "ORDER BY ts DESC, seq DESC LIMIT 10").fetchall()
    details = " ".join(str(step[-1]) for step in plan)
    assert "entries_by_ts" in details and "TEMP B-TREE" not in details, details
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    try:
        index.add([make_row(1), make_row(2)], None)          # new seqs: appended
        index.add([make_row(2), make_row(3)], None)       # 2 again: replaced
    finally:
        connection.set_trace_callback(None)
    inserts = [text.split(" INTO")[0] for text in statements if text.startswith("INSERT") and "entries (" in text]
    # new rows go several to a statement (APPEND_ROWS), OR FAIL (no statement journal: a failed
    # append rolls back its whole transaction), replaced ones one by one
    assert inserts == ["INSERT OR FAIL"] + ["INSERT OR REPLACE"] * 2, inserts
    assert [text.count("), (") for text in statements
            if text.startswith("INSERT OR FAIL INTO entries")] == [1]
    assert [row.seq for row in index.newer_than(0)] == [1, 2, 3]


def test_the_wal_stays_within_its_limit_and_is_checkpointed_beside_the_writer(tmp_path):
    limit = 256 * 1024
    index, _note = open_index(tmp_path / "index.sqlite", wal_limit=limit)
    try:
        wal = tmp_path / "index.sqlite-wal"
        largest = 0
        for batch in range(60):   # ~40 rows of ~1.3 KB a transaction: 4-5 of them per limit
            index.add_values([msgspec.structs.astuple(make_row(seq, entry_json=b"x" * 1300))
                              for seq in range(batch * 40 + 1, batch * 40 + 41)], (1, batch))
            largest = max(largest, wal.stat().st_size)
        assert largest <= limit, largest
        assert index.count() == 2400
        # the thread was woken past a quarter of the limit and made checkpoints
        deadline = time.monotonic() + 10
        while index.background_checkpoints == 0:
            assert time.monotonic() < deadline, "no checkpoint from the checkpoint thread"
            time.sleep(0.05)
        index.wal_limit = 64 * 1024                          # the storage limit went down
        index.add([make_row(9999)], (2, 0))
        assert wal.stat().st_size <= 64 * 1024
    finally:
        index.close()
    assert index._checkpointer is None or not index._checkpointer.is_alive()


def test_count_follows_writes_replacements_and_prunes(index):
    def stored() -> int:
        return index._connection().execute("SELECT count(*) FROM entries").fetchone()[0]

    assert index.count() == 0
    index.add([make_row(seq) for seq in range(1, 11)], None)
    assert index.count() == stored() == 10
    index.add([make_row(5), make_row(11)], None)                # replaces 5, adds 11
    assert index.count() == stored() == 11
    index.add([make_row(seq, segment=2) for seq in range(12, 16)], None)
    assert index.count() == stored() == 15
    index.prune_segments_before(2)
    assert index.count() == stored() == 4


def test_count_asked_while_writing_ends_true(tmp_path):
    index, _note = open_index(tmp_path / "index.sqlite")
    done = threading.Event()
    seen: list[int] = []

    def ask() -> None:
        while not done.is_set():
            seen.append(index.count())
            time.sleep(0.0005)

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        deadline = time.monotonic() + 10
        while not seen:   # the asker has its connection and a cached count before writes start
            assert time.monotonic() < deadline, "count() never answered"
            time.sleep(0.001)
        for batch in range(200):
            index.add_values([msgspec.structs.astuple(make_row(seq, segment=1 + batch // 50))
                              for seq in range(batch * 5 + 1, batch * 5 + 6)], None)
            if batch % 50 == 49:
                index.prune_segments_before(1 + batch // 50)
            time.sleep(0)   # let the asker in between writes
    finally:
        done.set()
        asker.join()
    try:
        assert len(set(seen)) > 1        # it saw the count change while writes went on
        assert index.count() == index._connection().execute(
            "SELECT count(*) FROM entries").fetchone()[0] == 250
    finally:
        index.close()


@pytest.mark.parametrize("most", [128, 5])
def test_appended_rows_of_any_number_are_stored_as_given(tmp_path, monkeypatch, most):
    """New rows go several to an INSERT (APPEND_ROWS, fewer where sqlite takes fewer
    parameters): every count, around the statement sizes too, stores exactly the rows given."""
    from worker.store import index as index_module
    monkeypatch.setattr(index_module, "APPEND_ROWS", most)
    index = EntryIndex(tmp_path / "index.sqlite")
    try:
        seq = 0
        for count in (1, 2, 3, 4, 5, 7, 64, 127, 128, 129, 255, 300):
            rows = [make_row(seq + n + 1, server_offset=None if n % 3 else 7, client_seq=None)
                    for n in range(count)]
            index.add(rows, (1, seq))
            seq += count
            assert index.newer_than(seq - count) == rows
        assert index.count() == seq and index.max_seq() == seq
        assert [row.seq for row in index.query(None, None)] == list(range(seq, 0, -1))
    finally:
        index.close()


def test_a_row_of_the_wrong_width_is_refused_and_nothing_is_stored(index):
    good = msgspec.structs.astuple(make_row(1))
    with pytest.raises(sqlite3.ProgrammingError, match="17 values"):
        index.add_values([good, msgspec.structs.astuple(make_row(2))[:-1]], (1, 5))
    assert index.count() == 0 and index.cursor() is None


def test_rows_going_back_are_charged_as_the_running_maximum_and_reach_say(tmp_path):
    """_behind counts the rows going back only up to the leaves they can reach: the same
    charge as counting every row below the running maximum and taking the smaller."""
    import random
    from itertools import accumulate
    from operator import lt

    from worker.store.index import REACH_EDGE_LEAVES
    index = EntryIndex(tmp_path / "index.sqlite")
    try:
        index.add([make_row(seq, ts=1000.0 + seq * 0.01) for seq in range(1, 401)], None)
        connection = index._connection()
        stored = [1000.0 + seq * 0.01 for seq in range(1, 401)]
        chance = random.Random(17)
        for trial in range(300):
            count = chance.randint(1, 60)
            top = chance.choice([float("-inf"), 1004.0, 1003.5])
            spread = chance.choice([0.0, 0.02, 0.5, 5.0])
            times = [1003.0 + chance.uniform(-spread, spread) for _ in range(count)]
            if trial % 5 == 0:
                times.sort()
            before = [1003.0 + chance.uniform(-1, 1) for _ in range(chance.randint(0, 5))]
            behind = sum(map(lt, times, accumulate(times, max, initial=top)))
            expected = 0
            if behind:
                lowest = min(times)
                reach = min(behind, sum(ts >= lowest for ts in stored)) + sum(ts >= lowest for ts in before)
                expected = min(behind, reach + 1 + REACH_EDGE_LEAVES)
            assert index._behind(connection, times, top, sorted(before)) == expected, (times, top, before)
    finally:
        index.close()


def test_a_large_write_is_cut_into_the_pieces_and_bounds_of_the_per_piece_reckoning(tmp_path):
    """_pieces reads the rows' times and sizes once per write (running sums, the earlier
    pieces' times sorted): the same pieces and bounds as reckoning each piece from its rows."""
    import random
    from itertools import accumulate
    from operator import lt

    from worker.store import index as index_module

    def reference(index, connection, files, values, step):
        page = index._page_size

        def bound(piece, top, before):
            lengths = [len(value[3]) for value in piece]
            payload = sum(lengths) + index_module.ROW_OVERHEAD * len(piece)
            local = page - 35 - index_module.ROW_OVERHEAD
            big = sum(length > local for length in lengths)
            times = [value[1] for value in piece]
            behind = sum(map(lt, times, accumulate(times, max, initial=top)))
            if behind:
                lowest = min(times)
                stored = connection.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM entries WHERE ts >= ? LIMIT ?)",
                    (lowest, behind)).fetchone()[0] + sum(ts >= lowest for ts in before)
                behind = min(behind, stored + 1 + index_module.REACH_EDGE_LEAVES)
            return (-(-2 * payload // page) + big + -(-index_module.INDEX_CELL * len(piece) // page)
                    + index_module.OUT_OF_ORDER_PAGES * behind + index_module.TRANSACTION_PAGES)

        pieces, top, start, size = [], index._max_ts, 0, len(values)
        while start < len(values):
            size = min(size * 2, len(values) - start)
            before = [value[1] for value in values[:start]]
            while True:
                piece = values[start:start + size]
                pages = bound(piece, top, before)
                if size == 1 or index._growth(pages, pages, files) <= step:
                    break
                size //= 2
            pieces.append((len(piece), pages))
            top = max(top, max(value[1] for value in piece))
            start += size
        return pieces

    class Budget:
        step = 3 * 1024 * 1024

    index = EntryIndex(tmp_path / "index.sqlite")
    try:
        index.add([make_row(seq, ts=1000.0 + seq * 0.01) for seq in range(1, 301)], None)
        connection = index._connection()
        index._max_ts = connection.execute("SELECT max(ts) FROM entries").fetchone()[0]
        index.budget = Budget()           # only its step is read by _pieces
        files = index._files(connection)
        chance = random.Random(3)
        for spread in (0.0, 0.05, 2.0, "halves"):
            def ts(seq):
                if spread == "halves":   # the later rows go back below the earlier ones only
                    return (1010.0 if seq < 800 else 1005.0) + seq * 0.001
                return 1003.0 + seq * 0.001 + chance.uniform(-spread, spread)
            values = [msgspec.structs.astuple(make_row(
                          seq, ts=ts(seq), entry_json=b"x" * chance.choice([300, 900, 20000])))
                      for seq in range(301, 1301)]
            got = [(len(piece), pages) for piece, pages in index._pieces(connection, files, values, False)]
            assert got == reference(index, connection, files, values, Budget.step), spread
            assert len(got) > 5 and sum(size for size, _pages in got) == 1000
    finally:
        index.budget = None
        index.close()


def test_rows_given_with_their_flat_chunks_are_stored_as_without(tmp_path):
    """The merge makes the append statements' parameters (flat_chunks) for the write thread:
    the whole chunks a piece holds go as made, the rows before and after them as before, and
    chunks that are not of these rows are not used."""
    from worker.store.index import APPEND_ROWS, _statement, flat_chunks

    values = [msgspec.structs.astuple(make_row(seq, segment=1 + seq // 300))
              for seq in range(1, 1001)]
    chunks = flat_chunks(values)
    assert len(chunks) == 1000 // APPEND_ROWS
    assert chunks[1] == (APPEND_ROWS + 1, 2 * APPEND_ROWS,
                         *_statement(values[APPEND_ROWS:2 * APPEND_ROWS]))
    expected = [make_row(seq, segment=1 + seq // 300) for seq in range(1, 1001)]
    others = flat_chunks([msgspec.structs.astuple(make_row(seq + 5000)) for seq in range(1, 1001)])
    # pieces of a write: from its start, from inside a chunk to inside another, a tail
    for name, cuts, made in (("whole", [0, 1000], chunks), ("cut", [0, 200, 700, 1000], chunks),
                             ("foreign", [0, 300, 1000], others)):
        index = EntryIndex(tmp_path / f"{name}.sqlite")
        try:
            connection = index._connection()
            statements: list[str] = []
            connection.set_trace_callback(statements.append)
            for start, end in zip(cuts, cuts[1:]):
                index._add_piece(connection, values[start:end], (1, end), (made, start))
            connection.set_trace_callback(None)
            assert index.newer_than(0) == expected
            assert index.cursor() == (1, 1000) and index.count() == 1000
            whole = sum(text.count("), (") + 1 for text in statements
                        if text.startswith("INSERT OR FAIL INTO entries") and
                        text.count("), (") == APPEND_ROWS - 1)
            # rows 200-255 and 640-699 (parts of chunks) go in runs of their own, whole chunks
            # apart: 5 of 128 rows where one piece would make 7 (and the foreign ones, 6)
            assert whole == {"whole": 7, "cut": 5, "foreign": 6}[name] * APPEND_ROWS, (name, whole)
        finally:
            index.close()


def test_appended_rows_bind_the_values_their_statement_shares_once(tmp_path):
    """An append statement binds a column's value once when all its rows have it (protocol,
    the connection's columns): the rows are stored as they were given, and a statement whose
    rows differ in a column binds that column per row."""
    from worker.store.index import APPEND_ROWS, NO_VALUE, _statement

    def value(seq: int, port: int, protocol: str = "redis") -> tuple:
        return msgspec.structs.astuple(make_row(seq, protocol=protocol, client_port=port,
                                                server_seq=NO_VALUE if seq % 2 else 7))

    # the first statement's rows share the client port, the second's do not, the third's
    # protocol changes on its last row; then runs of 64, 32, ... rows
    values = ([value(seq, 5000) for seq in range(1, APPEND_ROWS + 1)]
              + [value(seq, 5000 + seq % 3) for seq in range(APPEND_ROWS + 1, 2 * APPEND_ROWS + 1)]
              + [value(seq, 5000, "redis" if seq < 3 * APPEND_ROWS else "http")
                 for seq in range(2 * APPEND_ROWS + 1, 3 * APPEND_ROWS + 1)]
              + [value(seq, 6000) for seq in range(3 * APPEND_ROWS + 1, 3 * APPEND_ROWS + 100)])
    index = EntryIndex(tmp_path / "index.sqlite")
    try:
        connection = index._connection()
        statements: list[str] = []
        connection.set_trace_callback(statements.append)
        index.add_values(values, (1, 1))
        connection.set_trace_callback(None)
        stored = index.newer_than(0)
        assert [msgspec.structs.astuple(row) for row in stored] == [
            tuple(None if (column >= 14 and item == NO_VALUE) else item
                  for column, item in enumerate(row)) for row in values]
        assert [row.protocol for row in stored].count("http") == 1
        assert {type(row.client_port) for row in stored} == {int}
        appends = [text for text in statements if text.startswith("INSERT OR FAIL INTO entries")]
        assert [text.count("), (") + 1 for text in appends] == [128, 128, 128, 64, 32, 2, 1]
    finally:
        index.close()
    # the parameters bound: the first seq once (the seqs are consecutive), then the first of
    # the statement shapes whose columns the rows share once: server_seq alternates, so not the
    # connection's (segments, addresses, ports, TCP sequence numbers) but the client host's and
    # server's (protocol, segments, transport, addresses, server port), the other 9 per row; the
    # second statement's client ports vary too (the same shape); the third's protocol changes,
    # so none is shared
    chunks = [values[at:at + APPEND_ROWS] for at in range(0, 3 * APPEND_ROWS, APPEND_ROWS)]
    assert [len(_statement(chunk)[1]) for chunk in chunks] == [
        1 + 7 + 9 * APPEND_ROWS, 1 + 7 + 9 * APPEND_ROWS, 1 + 16 * APPEND_ROWS]
    sql, params = _statement(chunks[0])
    assert sql.count("?1,") == APPEND_ROWS and params[:8] == (
        "redis", 1, 1, "tcp", "10.0.0.1", "10.0.0.2", 80, 1)
    whole = [value(seq, 5000, "redis") for seq in range(1, APPEND_ROWS + 1)]
    whole = [(*row[:-1], 7) for row in whole]          # the same connection throughout
    assert len(_statement(whole)[1]) == 10 + 1 + 6 * APPEND_ROWS
    assert "?8 + 127," in sql


def test_appended_rows_whose_seqs_are_not_consecutive_bind_each_seq(tmp_path):
    """Rows with new seqs that skip some, or come out of order, are appended with each row's
    seq bound (not counted from the first), and stored as given."""
    from worker.store.index import APPEND_ROWS, _statement

    gapped = [*range(1, 51), *range(60, 60 + APPEND_ROWS - 50), *range(500, 500 + APPEND_ROWS)]
    shuffled = list(range(1000 + APPEND_ROWS, 1000, -1))
    for name, seqs in (("gapped", gapped), ("shuffled", shuffled)):
        values = [msgspec.structs.astuple(make_row(seq)) for seq in seqs]
        sql, params = _statement(values[:APPEND_ROWS])
        # each value per row: one statement shape per length for these rarer appends
        assert "+" not in sql and len(params) == 17 * APPEND_ROWS, name
        index = EntryIndex(tmp_path / f"{name}.sqlite")
        try:
            index.add_values(values, (1, 1))
            assert index.newer_than(0) == sorted((make_row(seq) for seq in seqs),
                                                 key=lambda row: row.seq), name
        finally:
            index.close()


def test_rows_from_one_above_the_highest_seq_are_numbered_by_sqlite(tmp_path):
    """Appended rows whose seqs go on from the table's highest (the usual write) go in
    statements that name no seq: sqlite numbers them one above the highest, the same seqs.
    Rows that start past a gap (seqs of rows filtered out, or pruned: an empty table that
    remembers a higher last_seq) or not in order name each seq."""
    from worker.store.index import APPEND_ROWS

    def values(seqs) -> list[tuple]:
        return [msgspec.structs.astuple(make_row(seq, server_seq=7)) for seq in seqs]

    index = EntryIndex(tmp_path / "index.sqlite")
    try:
        connection = index._connection()
        statements: list[str] = []
        connection.set_trace_callback(statements.append)
        writes = [range(1, 2 * APPEND_ROWS + 40),              # from an empty table: seq 1
                  range(2 * APPEND_ROWS + 40, 3 * APPEND_ROWS),  # one above the highest
                  range(3 * APPEND_ROWS + 50, 4 * APPEND_ROWS),  # past a gap
                  [*range(5 * APPEND_ROWS, 4 * APPEND_ROWS, -1)]]  # new, out of order
        named = []
        for seqs in writes:
            statements.clear()
            index.add_values(values(seqs), (1, 1))
            appends = [text for text in statements
                       if text.startswith("INSERT OR FAIL INTO entries") and "), (" in text]
            assert appends
            named.append({text.startswith("INSERT OR FAIL INTO entries (seq,")
                          for text in appends})
        connection.set_trace_callback(None)
        assert named == [{False}, {False}, {True}, {True}]
        expected = sorted((make_row(seq, server_seq=7) for seqs in writes for seq in seqs),
                          key=lambda row: row.seq)
        assert index.newer_than(0) == expected
        # every row pruned: the table is empty, its last seq remembered
        assert index.prune_segments_before(2) == len(expected)
        statements.clear()
        connection.set_trace_callback(statements.append)
        later = range(5 * APPEND_ROWS + 1, 6 * APPEND_ROWS + 1)
        index.add_values(values(later), (1, 2))
        connection.set_trace_callback(None)
        assert all(text.startswith("INSERT OR FAIL INTO entries (seq,") for text in statements
                   if text.startswith("INSERT OR FAIL INTO entries") and "), (" in text)
        assert index.newer_than(0) == [make_row(seq, server_seq=7) for seq in later]
        assert index.max_seq() == 6 * APPEND_ROWS
    finally:
        index.close()
