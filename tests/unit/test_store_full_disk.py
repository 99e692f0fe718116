"""The segment writer on a disk smaller than its limit (a real 8 MiB tmpfs): ENOSPC evicts the
oldest segment and writing goes on; what could not be written is counted."""

from __future__ import annotations

import os

import pytest

from support.tmpfs import small_tmpfs
from worker.store.segments import SegmentWriter, StoreWriteError, list_segments

pytestmark = pytest.mark.root

T0 = 1_700_000_000_000_000_000


def batch(start: int, count: int, size: int = 1400) -> list[tuple[int, bytes, int]]:
    return [(T0 + i * 1000, i.to_bytes(4, "big") * (size // 4), size) for i in range(start, start + count)]


def test_full_disk_evicts_the_oldest_segment_and_keeps_writing(tmp_path):
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        # 64 MB limit: segments of 8 MB, so the disk fills up long before the limit is reached
        with SegmentWriter(disk, 64_000_000) as writer:
            written = 0
            failed = 0
            for n in range(60):                           # 60 x 200 x 1.4 KB = 17 MB offered
                try:
                    writer.append(1, batch(n * 200, 200))
                    written += 200
                except StoreWriteError as error:
                    assert error.unwritten > 0
                    failed += error.unwritten
            stats = writer.stats()
            assert stats.write_errors > 0
            assert "No space left on device" in stats.last_write_error
            assert stats.last_write_error_ts is not None
            # the segment size (8 MB) is larger than the disk: a full segment cannot be kept
            # beside another, so the store evicted to make room and still took the last batch
            assert stats.evicted_for_space > 0
            assert stats.packets_written >= written
            assert failed + stats.packets_written == 60 * 200
            writer.append(1, batch(99_000, 10))           # and it still writes
            newest = list_segments(disk)[-1].path
            assert newest.stat().st_size > 10 * 1400
        assert os.statvfs(disk).f_bfree > 0               # closed: nothing is held
