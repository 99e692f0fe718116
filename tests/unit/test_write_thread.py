"""The sharded merge's writes in their own thread (worker/write_thread.py): in order, bounded,
failures counted, drained at close, releases joined while the writer is busy. The rows and index of a real sharded run are
test_dissect_shards.py's (sharded equals one dissection)."""

from __future__ import annotations

import threading
from typing import Any

from support.processes import wait_for
from worker.pipeline import DissectionStats
from worker.store.index import APPEND_ROWS, _statement, flat_chunks
from worker.write_thread import WriteThread


class FakeWriter:
    """IndexWriter's two calls the thread makes, recorded; a write of `fail_on` raises, and
    each write waits for `go` (set: at once)."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.writes: list[tuple[Any, ...]] = []
        self.pruned: list[int] = []
        self.fail_on = fail_on
        self.go = threading.Event()
        self.go.set()
        self.started = threading.Event()

    def write_values(self, values: list[tuple[int]], cursor: Any, segment: int,
                     chunks: list[tuple[Any, ...]] | None = None) -> None:
        self.started.set()
        self.go.wait()
        if values and values[0][0] == self.fail_on:
            raise RuntimeError("refused")
        self.writes.append((values, cursor, segment, chunks))

    def prune(self, segment: int) -> int:
        self.pruned.append(segment)
        return 0


def _thread(writer: FakeWriter, max_rows: int = 100, max_write_rows: int = 1
            ) -> tuple[WriteThread, DissectionStats, threading.Event]:
    """The thread over `writer`; by default no release joins another (max_write_rows=1)."""
    stats, stop = DissectionStats(), threading.Event()
    thread = WriteThread(writer, stats, stop, max_rows=max_rows,   # type: ignore[arg-type]
                         max_write_rows=max_write_rows)
    thread.start()
    return thread, stats, stop


def test_writes_are_made_in_order_and_ended_comes_after_the_last() -> None:
    writer = FakeWriter()
    thread, _stats, _stop = _thread(writer)
    batches = [[(seq,) for seq in range(start, start + 10)] for start in range(1, 101, 10)]
    for number, batch in enumerate(batches):
        thread.put(batch, (1, number), 1, number == len(batches) - 1)
    wait_for(thread.idle, what="the writes")
    assert [write[0] for write in writer.writes] == batches
    assert [write[1] for write in writer.writes] == [(1, n) for n in range(len(batches))]
    assert thread.ended
    thread.close(5.0)


def test_releases_put_while_the_writer_is_busy_are_written_as_one() -> None:
    """Joined in order, with the last cursor given and the last end, their chunks running
    APPEND_ROWS at a time from the first row; not past max_write_rows."""
    writer = FakeWriter()
    writer.go.clear()                   # the writer is busy with the first write
    thread, _stats, _stop = _thread(writer, max_rows=10_000, max_write_rows=3 * APPEND_ROWS)
    first = [(seq,) for seq in range(1, 11)]
    thread.put(first, (1, 1), 1, False)
    writer.started.wait(5.0)
    a = [(seq,) for seq in range(11, 11 + APPEND_ROWS + 5)]     # ends within a chunk
    b = [(seq,) for seq in range(a[-1][0] + 1, a[-1][0] + 1 + APPEND_ROWS)]
    c = [(b[-1][0] + 1,)]
    d = [(seq,) for seq in range(c[-1][0] + 1, c[-1][0] + 1 + APPEND_ROWS)]   # past the most
    thread.put(a, (2, 1), 2, False)
    thread.put(b, None, 2, False)       # nothing new to say of the cursor
    thread.put(c, (3, 1), 3, False)
    thread.put(d, (3, 2), 3, True)
    writer.go.set()
    wait_for(thread.idle, what="the writes")
    assert [(values, cursor, segment) for values, cursor, segment, _ in writer.writes] == [
        (first, (1, 1), 1), (a + b + c, (3, 1), 3), (d, (3, 2), 3)]
    assert [chunks for *_, chunks in writer.writes] == [
        flat_chunks(first), flat_chunks(a + b + c), flat_chunks(d)]
    assert thread.ended
    thread.close(5.0)


def test_a_join_keeps_the_earlier_cursor_when_the_later_has_none() -> None:
    writer = FakeWriter()
    writer.go.clear()
    thread, _stats, _stop = _thread(writer, max_rows=1000, max_write_rows=1000)
    thread.put([(1,)], (1, 1), 1, False)
    writer.started.wait(5.0)
    thread.put([(2,)], (1, 2), 1, False)
    thread.put([(3,)], None, 1, False)
    writer.go.set()
    wait_for(thread.idle, what="the writes")
    assert [(values, cursor) for values, cursor, *_ in writer.writes] == [
        ([(1,)], (1, 1)), ([(2,), (3,)], (1, 2))]
    thread.close(5.0)


def test_the_append_parameters_are_made_before_the_write() -> None:
    """put() (the merge thread) flattens the rows' whole chunks for the writer."""
    writer = FakeWriter()
    thread, _stats, _stop = _thread(writer, max_rows=1000)
    batch = [(seq, 1.0 * seq, "redis", b"{}", 1, seq, 1, seq, "tcp", "10.0.0.1", 5000,
              "10.0.0.2", 6379, seq, seq, 7, 8) for seq in range(1, APPEND_ROWS * 2 + 31)]
    thread.put(batch, (1, 0), 1, True)
    wait_for(thread.idle, what="the write")
    [(values, _cursor, _segment, chunks)] = writer.writes
    assert values == batch and chunks == flat_chunks(batch)
    assert [chunk[:2] for chunk in chunks] == [(1, APPEND_ROWS), (APPEND_ROWS + 1, 2 * APPEND_ROWS)]
    assert chunks[1][2:] == _statement(batch[APPEND_ROWS:2 * APPEND_ROWS])
    thread.close(5.0)


def test_a_failed_write_is_counted_and_the_next_ones_are_made() -> None:
    writer = FakeWriter(fail_on=11)
    thread, stats, _stop = _thread(writer)
    for start in (1, 11, 21):
        thread.put([(seq,) for seq in range(start, start + 10)], (1, start), 1, start == 21)
    wait_for(thread.idle, what="the writes")
    assert [write[1] for write in writer.writes] == [(1, 1), (1, 21)]
    assert thread.errors == 1 and stats.last_error == "RuntimeError: refused"
    assert thread.ended
    thread.close(5.0)


def test_the_merge_waits_while_the_queue_holds_max_rows() -> None:
    writer = FakeWriter()
    writer.go.clear()                   # the writer is busy with the first write
    thread, _stats, stop = _thread(writer, max_rows=100)
    thread.put([(seq,) for seq in range(1, 101)], (1, 1), 1, False)
    writer.started.wait(5.0)
    thread.put([(101,)], (1, 2), 1, False)   # one release may wait beside the write
    put = threading.Thread(target=thread.put, args=([(102,)], (1, 3), 1, False))
    put.start()
    put.join(0.3)
    assert put.is_alive()               # 101 rows are not written yet: the merge waits
    assert not thread.idle()
    writer.go.set()
    put.join(5.0)
    assert not put.is_alive()
    wait_for(thread.idle, what="the writes")
    assert [write[1] for write in writer.writes] == [(1, 1), (1, 2), (1, 3)]
    thread.close(5.0)


def test_a_waiting_merge_goes_on_at_stop_and_close_writes_what_is_queued() -> None:
    writer = FakeWriter()
    writer.go.clear()
    thread, _stats, stop = _thread(writer, max_rows=10)
    thread.put([(seq,) for seq in range(1, 11)], (1, 1), 1, False)
    writer.started.wait(5.0)
    thread.put([(11,)], (1, 2), 1, False)
    put = threading.Thread(target=thread.put, args=([(12,)], (1, 3), 1, True))
    put.start()
    put.join(0.3)
    assert put.is_alive()
    stop.set()
    put.join(5.0)
    assert not put.is_alive()           # stopping: the merge does not wait for room
    writer.go.set()
    thread.close(5.0)
    assert [write[1] for write in writer.writes] == [(1, 1), (1, 2), (1, 3)]
    assert thread.ended and thread.idle()


def test_the_store_is_pruned_between_writes_at_the_merge_s_segment() -> None:
    writer = FakeWriter()
    thread, _stats, _stop = _thread(writer)
    thread.reading(7)
    wait_for(lambda: 7 in writer.pruned, what="a prune while no write comes")
    thread.close(5.0)


class _Rows(list):
    """Rows that note the thread which freed them."""

    freed_by: list[str] = []

    def __del__(self) -> None:
        _Rows.freed_by.append(threading.current_thread().name)


class _CountingWriter(FakeWriter):
    """Keeps no reference to the rows it writes."""

    def write_values(self, values: list[tuple[int]], cursor: Any, segment: int,
                     chunks: list[tuple[Any, ...]] | None = None) -> None:
        self.writes.append((len(values), cursor, segment, chunks is not None))


def test_the_rows_written_are_freed_by_the_merge_thread_not_the_writer() -> None:
    writer = _CountingWriter()
    thread, _stats, _stop = _thread(writer, max_rows=1000)
    _Rows.freed_by = []
    thread.put(_Rows([(seq,) for seq in range(1, 11)]), (1, 0), 1, False)
    wait_for(thread.idle, what="the first write")
    assert _Rows.freed_by == []                  # written, kept for the merge to free
    thread.reading(1)                            # the merge's next turn
    assert _Rows.freed_by == [threading.current_thread().name]
    thread.put(_Rows([(seq,) for seq in range(11, 21)]), (1, 1), 1, True)
    wait_for(thread.idle, what="the second write")
    thread.close(5.0)                            # frees the last write's rows
    assert _Rows.freed_by == [threading.current_thread().name] * 2
    assert writer.writes == [(10, (1, 0), 1, True), (10, (1, 1), 1, True)]
