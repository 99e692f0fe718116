"""The index's share of --storage-limit (worker/store/grant.py): the segment writer grants room
before the index grows into it, so segments + index + WAL never pass the limit together."""

from __future__ import annotations

import random
import struct
import threading
from pathlib import Path

import msgspec
import pytest

from support.processes import wait_for
from support.procstat import dir_apparent_bytes
from test_store_index import make_row
from test_store_segments import ETHERNET, make_packets
from worker.store.grant import IndexBudget, IndexGrant
from worker.store.index import (INDEX_FILES, INDEX_NAME, OUT_OF_ORDER_PAGES, WAL_LIMIT_MAX, IndexFull,
                                open_index, wal_limit_for)
from worker.store.segments import MIN_SEGMENT_SIZE, SegmentWriter

KiB, MiB = 1024, 1024 * 1024

LIMIT = 4 * MIN_SEGMENT_SIZE


def values(first: int, count: int, segment: int, size: int = 1200) -> list[tuple]:
    """Index rows of `size`-byte entries (DNS-like: they outweigh their packets)."""
    return [msgspec.structs.astuple(make_row(seq, segment=segment, entry_json=b"x" * size))
            for seq in range(first, first + count)]


class CaptureLoop(threading.Thread):
    """What the capture process does between batches: answer the index side's requests."""

    def __init__(self, writer: SegmentWriter) -> None:
        super().__init__(daemon=True)
        self.writer = writer
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.001):
            self.writer.enforce()


@pytest.fixture
def make_store(tmp_path: Path):
    """(writer, index, capture loop) of a store with a limit, as the worker sets them up."""
    made = []

    def make(limit: int = LIMIT):
        grant = IndexGrant()
        writer = SegmentWriter(tmp_path, limit, grant=grant, index_files=INDEX_FILES)
        index, _note = open_index(tmp_path / INDEX_NAME)
        index.budget = IndexBudget(grant, limit)
        loop = CaptureLoop(writer)
        loop.start()
        made.append((writer, index, loop))
        return writer, index, loop
    yield make
    for writer, index, loop in made:
        loop.done.set()
        loop.join()
        index.close()
        writer.close()


@pytest.fixture
def store(make_store):
    return make_store()


def test_the_writer_evicts_for_the_room_asked_and_keeps_it_free(store, tmp_path):
    writer, index, loop = store
    for n in range(16):                       # the segments fill the limit
        writer.append(ETHERNET, make_packets(100, size=1000, start=n * 100))
    assert writer.stats().bytes > LIMIT // 2
    index.add_values(values(1, 50, segment=writer.stats().newest_segment), None)
    stats = writer.stats()
    assert stats.index_granted >= index.files_bytes()[0]
    assert stats.evicted_for_other > 0        # the oldest segments went for the index
    for n in range(16, 40):                   # and the segments stay clear of its room
        writer.append(ETHERNET, make_packets(100, size=1000, start=n * 100))
        assert writer.stats().bytes + stats.index_granted <= LIMIT
        assert dir_apparent_bytes(str(tmp_path)) <= LIMIT


def test_rows_and_packets_together_never_pass_the_limit(store, tmp_path):
    writer, index, loop = store
    seq, largest = 1, 0
    for n in range(60):                       # rows weigh ~10x their packets
        writer.append(ETHERNET, make_packets(20, size=100, start=n * 20))
        largest = max(largest, dir_apparent_bytes(str(tmp_path)))
        segment = writer.stats().newest_segment
        for _ in range(3):
            try:
                index.add_values(values(seq, 40, segment), (segment, 24))
                break
            except IndexFull as full:         # what the pipeline does: prune, try again
                seq += full.written
                index.prune_segments_before(writer.stats().oldest_segment)
        seq += 40
        index.prune_segments_before(writer.stats().oldest_segment)
        index.keep_small()
        largest = max(largest, dir_apparent_bytes(str(tmp_path)))
    assert largest <= LIMIT
    assert index.over_estimate == 0
    assert index.count() > 0
    assert index.budget.waits > 0


def test_a_write_without_room_stores_what_fit_and_says_how_many(tmp_path):
    grant = IndexGrant()                      # nobody answers: no room beyond the first grant
    index, _note = open_index(tmp_path / INDEX_NAME)
    index.budget = IndexBudget(grant, LIMIT)
    size = index.files_bytes()[0]
    grant.ask(1, size + 3 * index.budget.step)
    grant.give(1, size + 3 * index.budget.step)
    index.budget._seq = 1                     # as if it had asked for that
    with pytest.raises(IndexFull) as raised:
        index.add_values(values(1, 2000, segment=1), (1, 24))
    assert 0 < raised.value.written < 2000
    assert index.count() == raised.value.written
    assert index.cursor() is None             # the cursor goes with the last rows only
    assert index.files_bytes()[0] <= size + 3 * index.budget.step
    index.close()


def test_room_well_above_what_the_index_needs_is_given_back(make_store):
    writer, index, loop = make_store(16 * 1024 * 1024)
    index.add_values(values(1, 4000, segment=1), None)
    granted = index.budget.granted()
    index.prune_segments_before(2)
    for _ in range(200):                      # the freed pages go back to the disk
        index.keep_small()

    def given_back() -> bool:                 # once a checkpoint cut the files
        index.set_meta("x", "y")
        return writer.stats().index_granted < granted - 2 * index.budget.step
    wait_for(given_back, timeout=5, what="room given back")



def ts_values(first: int, times: list[float], segment: int = 1, size: int = 40) -> list[tuple]:
    """Rows with new seqs from `first`, at the given times (small entries: the time index's
    share of each write is large)."""
    return [msgspec.structs.astuple(make_row(seq, ts=ts, segment=segment, entry_json=b"x" * size))
            for seq, ts in zip(range(first, first + len(times)), times)]


def last_transaction_frames(wal: Path) -> int:
    """The pages the WAL's last committed transaction wrote: its frames (a frame header is 24
    bytes: page number, the database's size in pages on a commit frame, else 0, and the WAL
    header's two salts while the frame is current)."""
    data = wal.read_bytes()
    page, salts = struct.unpack(">I", data[8:12])[0], data[16:24]
    commits, frames, offset = [0], 0, 32
    while offset + 24 + page <= len(data) and data[offset + 8:offset + 16] == salts:
        frames += 1
        if struct.unpack(">I", data[offset + 4:offset + 8])[0]:
            commits.append(frames)
        offset += 24 + page
    return commits[-1] - commits[-2]


@pytest.fixture
def measured(monkeypatch):
    """measured(index) -> [(pages the transaction wrote, pages its bound allowed)] of every
    transaction of rows the index makes from then on. Its WAL is kept (never cut by the
    writer) so that each transaction's frames can be read after its commit."""
    def measure(index) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        bounds: list[int] = []
        pieces, add_piece = index._pieces, index._add_piece

        def record_pieces(*args):
            made = pieces(*args)
            bounds[:] = [pages for _piece, pages in made]
            return made

        def measure_piece(connection, values, cursor, *rest):
            add_piece(connection, values, cursor, *rest)
            found.append((last_transaction_frames(Path(index._wal_path)), bounds.pop(0)))
        monkeypatch.setattr(index, "_pieces", record_pieces)
        monkeypatch.setattr(index, "_add_piece", measure_piece)
        index.wal_limit = 1 << 40
        return found
    return measure


def test_rows_going_far_back_stay_within_their_bound(make_store, measured, tmp_path):
    """Rows whose times are spread over the whole index (each may land on any leaf of the
    time index and split it) are written in transactions that change no more pages than their
    bound said, under a small limit (a step of 32 pages)."""
    limit = 4 * 1024 * 1024
    writer, index, loop = make_store(limit)
    rng = random.Random(17)
    base = 1_700_000_000.0
    seq = 1
    for start in range(0, 6000, 500):          # ~9 leaves of the time index, in order
        index.add_values(ts_values(seq, [base + (start + i) * 0.01 for i in range(500)]), None)
        seq += 500
    transactions = measured(index)
    for _ in range(12):
        top = index._max_ts
        times = [rng.uniform(base, top) for _ in range(rng.choice((1, 7, 60, 250)))]
        index.add_values(ts_values(seq, times), (1, seq))
        seq += len(times)
        assert dir_apparent_bytes(str(tmp_path)) <= limit
    assert all(wrote <= bound for wrote, bound in transactions), transactions
    assert len(transactions) > 12               # the larger writes were cut into several
    assert index.over_estimate == 0
    assert index.count() == seq - 1


def test_rows_a_little_behind_are_not_cut_into_many_transactions(make_store, measured):
    """Two shards' rows merged in packet order: many are behind the newest indexed by less
    than a millisecond. They land on the time index's last leaf like rows in order, so a write
    of them fits one transaction (it took one per few rows while each was charged a split)."""
    writer, index, loop = make_store(128 * 1024 * 1024)     # a step of 8 MiB, as the worker's
    base = 1_700_000_000.0
    index.add_values(ts_values(1, [base + i * 0.001 for i in range(3000)]), None)
    seq, now = 3001, base + 3.0
    page = index._page_size + 24
    before = index.transactions
    transactions = measured(index)
    for _ in range(10):
        times = []
        for _ in range(500):                    # every other row 0.5 ms behind the one before
            times += [now + 0.001, now + 0.0005]
            now += 0.001
        assert OUT_OF_ORDER_PAGES * 500 * page > index.budget.step   # charged per row: cut
        index.add_values(ts_values(seq, times), (1, seq))
        seq += 1000
    assert index.transactions - before == 10
    assert all(wrote <= bound for wrote, bound in transactions), transactions
    assert index.over_estimate == 0


def test_rows_behind_into_thinned_leaves_stay_within_their_bound(make_store, measured):
    """The time index's leaves after the first quarter thinned by deletes to a few entries
    each, then rows a little behind one of those entries, many at one place: the few leaves
    they reach split over and over and pull their siblings in, still within the bound."""
    writer, index, loop = make_store(128 * 1024 * 1024)
    base = 1_700_000_000.0
    index.add_values(ts_values(1, [base + i * 0.001 for i in range(20000)]), None)
    connection = index._connection()
    connection.execute("DELETE FROM entries WHERE seq > 5000 AND seq % 97 != 0")
    transactions = measured(index)
    rng = random.Random(3)
    seq = 20001
    for _ in range(10):
        lowest = base + rng.uniform(5.0, 19.9)
        times = sorted(lowest + rng.uniform(0, 0.01) for _ in range(rng.choice((300, 3000))))
        index.add_values(ts_values(seq, times), (1, seq))
        seq += len(times)
    assert all(wrote <= bound for wrote, bound in transactions), transactions
    assert index.over_estimate == 0


def test_the_next_step_is_asked_for_ahead_and_the_last_answer_used_until_it_comes():
    grant = IndexGrant()
    budget = IndexBudget(grant, 1 << 30)
    step = budget.step
    assert not budget.fits(0, step, 0, 0.0)          # nothing granted yet: asked, no answer
    seq, size = grant.asked()
    grant.give(seq, size)                            # the segment writer's answer
    assert budget.granted() == size == step + step // 2
    # A write that leaves less than half a step: it goes on, and the next step is asked now.
    need = size - step // 4
    assert budget.fits(need, 0, 0, 0.0)
    assert grant.asked() == (seq + 1, need + step)
    # Until the writer answers, the room it gave last is ours (it keeps to that answer) ...
    assert budget.granted() == size and budget.fits(size, 0, 0, 0.0)
    assert grant.asked()[0] == seq + 1               # (asked once)
    # ... and no more than that.
    assert not budget.fits(size + 1, 0, 0, 0.0)
    grant.give(seq + 1, need + step)
    assert budget.fits(size + 1, 0, 0, 0.0)


def test_room_given_back_is_not_used_while_the_smaller_request_waits():
    grant = IndexGrant()
    budget = IndexBudget(grant, 1 << 30)
    step = budget.step
    budget.fits(0, 10 * step, 0, 0.0)
    grant.give(*grant.asked())
    assert budget.granted() > 10 * step
    assert budget.fits(step, 0, 0, 0.0)              # far below: room given back
    assert grant.asked()[1] == step + step // 2
    assert budget.granted() == 0                     # the larger answer is no longer ours
    assert not budget.fits(step, 0, 0, 0.0)
    grant.give(*grant.asked())
    assert budget.fits(step, 0, 0, 0.0)


@pytest.mark.parametrize(("limit", "step"), [
    (2 * MiB, 512 * KiB),            # 1/16, above the floor of 32 pages of 16 KiB
    (64 * MiB, 4 * MiB),             # 1/16
    (200_000_000, 8 * MiB),          # the 8 MiB cap, as up to 1 GiB
    (1024 * MiB, 8 * MiB),
    (2048 * MiB, 16 * MiB),          # above 1 GiB: 1/128 of the limit
    (64 * 1024 * MiB, 32 * MiB),     # up to 32 MiB
])
def test_the_step_is_a_share_of_the_limit_larger_above_1_gib(limit, step):
    budget = IndexBudget(IndexGrant(), limit)
    budget.floor = 32 * 16 * KiB                         # as EntryIndex sets it for 16 KiB pages
    assert budget.step == step
    # the ~3 steps that may be granted and unused stay a small share of a large limit,
    # and a write that fits a step fits the WAL's limit there
    if limit > 1024 * MiB:
        assert 3 * budget.step < 0.03 * limit
        assert budget.step <= wal_limit_for(limit) <= WAL_LIMIT_MAX
