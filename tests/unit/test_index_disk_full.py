"""Rows the disk itself refuses (a real tmpfs another program filled): the index writer waits
and writes them once there is room, instead of dropping them until the next start."""

from __future__ import annotations

import os
import threading

import msgspec
import pytest

from support.processes import wait_for
from support.tmpfs import small_tmpfs
from test_store_index import make_row
from worker.broadcast import Broadcaster
from worker.pipeline import DissectionStats, IndexWriter
from worker.store.index import open_index

pytestmark = pytest.mark.root


def _fill(path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:          # ENOSPC: the disk is full
        pass
    finally:
        os.close(fd)


def test_rows_the_full_disk_refused_are_written_once_it_has_room(tmp_path) -> None:
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        (disk / "pcap").mkdir()
        (disk / "pcap" / "000000000001.pcap").write_bytes(b"")   # the rows' segment is stored
        index, _ = open_index(disk / "index.sqlite")
        stats, stop = DissectionStats(), threading.Event()
        writer = IndexWriter(disk, index, Broadcaster(), stats, stop)
        writer.write_values([msgspec.structs.astuple(make_row(seq)) for seq in range(1, 11)],
                            (1, 10), 1)
        _fill(disk / "filler")
        rows = [msgspec.structs.astuple(make_row(seq, entry_json=b"x" * 3000))
                for seq in range(11, 611)]   # ~1.8 MB, and as much again in the WAL
        done = threading.Event()
        thread = threading.Thread(target=lambda: (writer.write_values(rows, (1, 610), 1),
                                                  done.set()), daemon=True)
        thread.start()
        try:
            wait_for(lambda: stats.index_disk_full >= 2, what="the disk to refuse the rows twice")
            assert not done.is_set()
            assert index.cursor() == (1, 10)
            os.unlink(disk / "filler")      # the other program frees its space
        finally:
            if not done.wait(30):
                stop.set()
                thread.join(5)
        assert done.is_set(), f"the rows were not written once there was room: {stats}"
        assert index.cursor() == (1, 610)
        assert [row.seq for row in index.query(None, None)] == list(range(610, 0, -1))
        index.close()
