"""The end of a replayed file wakes the sharded merge through a pipe (CaptureProcess.replay_ended)
instead of the merge asking the capture child every FINISHED_EVERY_S: the shards hear
"finished" as soon as the file is read (docs/BENCHMARKS.md, "Worker start, third round")."""

from __future__ import annotations

import json
import os
import select
from pathlib import Path

import pytest

from support.golden import GOLDEN
from test_dissect_shards import LIMIT, _http_halves, wait_for
from worker import sharded
from worker.broadcast import Broadcaster
from worker.capture import CaptureProcess
from worker.options import WorkerOptions
from worker.sharded import ShardedPipeline
from worker.store.index import EntryIndex
from worker.store.segments import SegmentWriter


def test_the_capture_child_closes_replay_ended_once_the_file_is_read(tmp_path: Path) -> None:
    options = WorkerOptions(pcap_file=GOLDEN / "http1" / "basic.pcap", storage_dir=tmp_path / "s",
                            storage_limit=LIMIT)
    capture = CaptureProcess(options)
    assert capture.replay_ended is not None
    capture.start()
    try:
        readable, _, _ = select.select([capture.replay_ended], [], [], 60)
        assert readable, "replay_ended never became readable"
        assert os.read(capture.replay_ended, 1) == b""    # EOF: the child closed its end
        assert all(source.finished for source in capture.ask("stats").sources)
    finally:
        capture.stop()


def test_live_capture_has_no_replay_ended(tmp_path: Path) -> None:
    assert CaptureProcess(WorkerOptions(ifaces=["lo"], storage_dir=tmp_path)).replay_ended is None


def test_the_merge_hears_the_end_of_a_replay_through_the_pipe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The merge asks capture_finished once at its start, then (with this patch) only when the
    # pipe says the file ended: before the pipe, this waited an hour.
    monkeypatch.setattr(sharded, "FINISHED_EVERY_S", 3600.0)
    store = tmp_path / "store"
    writer = SegmentWriter(store, LIMIT)
    first, second = _http_halves()
    writer.append(1, first)
    finished = False
    ended_read, ended_write = os.pipe()
    index = EntryIndex(tmp_path / "index.sqlite")
    pipeline = ShardedPipeline(store, index, "n1", Broadcaster(), lambda: finished, shards=2,
                               replay=True, replay_ended=ended_read)
    pipeline.start()
    try:
        wait_for(lambda: pipeline.stats.caught_up, "dissection to catch up with the capture")
        writer.append(1, second)
        writer.close()
        finished = True
        os.close(ended_write)
        wait_for(lambda: pipeline.ended, "the replay to end")
        rows = index.newer_than(0)
        assert [json.loads(row.entry_json)["request"]["path"] for row in rows] == ["/slow"]
    finally:
        pipeline.stop()
        index.close()
        os.close(ended_read)
