"""The index's share of --storage-limit (worker/store/grant.py): the segment writer grants room
before the index grows into it, so segments + index + WAL never pass the limit together."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import pytest

from support.processes import wait_for
from support.procstat import dir_apparent_bytes
from test_store_index import make_row
from test_store_segments import ETHERNET, make_packets
from worker.store.grant import IndexBudget, IndexGrant
from worker.store.index import INDEX_FILES, INDEX_NAME, IndexFull, open_index
from worker.store.segments import MIN_SEGMENT_SIZE, SegmentWriter

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
