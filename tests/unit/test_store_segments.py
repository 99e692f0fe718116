"""The PCAP segment store: writer, recovery, tail and range reads, on real files."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from shark.pcap import encode_header, encode_record
from worker.store import segments as segments_module
from worker.store.segments import (
    HEADER_SIZE,
    MIN_SEGMENT_SIZE,
    MIN_STORAGE_LIMIT,
    RECORD_HEADER_SIZE,
    SegmentEvicted,
    SegmentTail,
    SegmentWriter,
    StoreError,
    iter_segment,
    list_segments,
    read_range,
    segment_path,
    segment_size_for,
)

T0 = 1_700_000_000_123_456_789
ETHERNET, RAW = 1, 101


def make_packets(count: int, size: int = 100, start: int = 0) -> list[tuple[int, bytes, int]]:
    """Distinct packets: packet i has timestamp T0 + i*1001 ns and its number in its bytes."""
    packets = []
    for i in range(start, start + count):
        body = i.to_bytes(4, "big") * (size // 4 + 1)
        packets.append((T0 + i * 1001, body[:size], size + 10))
    return packets


def disk_bytes(directory: Path) -> int:
    return sum(info.path.stat().st_size for info in list_segments(directory))


def read_all(tail: SegmentTail, batch: int = 1000) -> list:
    out = []
    while True:
        got = tail.read(batch)
        if not got:
            return out
        out.extend(got)


def write_segment(directory: Path, segment_id: int, packets, linktype: int = ETHERNET,
                  tail: bytes = b"") -> Path:
    """A segment written by hand (to make partial and torn records the writer never makes)."""
    path = segment_path(directory, segment_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_header(linktype, 65535)
                     + b"".join(encode_record(ts, data, wirelen) for ts, data, wirelen in packets)
                     + tail)
    return path


# -- limits and errors ---------------------------------------------------------------------

def test_segment_size_follows_the_limit_within_bounds():
    assert segment_size_for(MIN_STORAGE_LIMIT) == MIN_SEGMENT_SIZE
    assert segment_size_for(200_000_000) == 25_000_000
    assert segment_size_for(10 * 1024**3) == 64 * 1024**2


def test_limit_below_minimum_is_refused_with_the_sizes(tmp_path):
    with pytest.raises(StoreError) as error:
        SegmentWriter(tmp_path, 1_000_000)
    assert str(error.value) == ("storage limit 1MB is below the minimum of 2MiB "
                                "(4 segments of 512KiB)")


def test_unwritable_directory_names_path_and_reason(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError) as error:
        SegmentWriter(blocker / "store", MIN_STORAGE_LIMIT)
    assert str(blocker) in str(error.value)
    assert "Not a directory" in str(error.value)


def test_second_writer_on_the_same_directory_is_refused(tmp_path):
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT):
        with pytest.raises(StoreError, match="in use"):
            SegmentWriter(tmp_path, MIN_STORAGE_LIMIT)
    SegmentWriter(tmp_path, MIN_STORAGE_LIMIT).close()   # free again once closed


def test_malformed_packet_is_refused_by_position_and_nothing_is_written(tmp_path):
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        writer.append(ETHERNET, make_packets(3))
        before = writer.stats()
        batch = make_packets(3, start=3)
        batch[1] = (-5, b"abc", 3)
        with pytest.raises(StoreError, match=r"packet 1 of the batch .*ts_ns=-5"):
            writer.append(ETHERNET, batch)
        batch[1] = (T0, "text", 4)
        with pytest.raises(StoreError, match=r"packet 1 of the batch .* data is str"):
            writer.append(ETHERNET, batch)
        with pytest.raises(StoreError, match=r"packet 2 .* expected \(ts_ns, data, wirelen\)"):
            writer.append(ETHERNET, make_packets(2) + [b"not a tuple"])
        assert writer.stats() == before
        assert disk_bytes(tmp_path) == before.bytes
        writer.append(ETHERNET, make_packets(1, start=6))   # still usable
    assert len(read_all(SegmentTail(tmp_path))) == 4


# -- writing and reading back --------------------------------------------------------------

def test_round_trip_through_tail_iter_segment_and_read_range(tmp_path):
    packets = make_packets(500, size=333)
    with SegmentWriter(tmp_path, 8 * 1024 * 1024) as writer:
        for start in range(0, 500, 64):
            writer.append(ETHERNET, packets[start:start + 64])
        stats = writer.stats()
    assert stats.packets_written == 500
    assert stats.bytes == disk_bytes(tmp_path) == HEADER_SIZE + 500 * (16 + 333)
    assert stats.oldest_ts == T0 / 1e9

    read = read_all(SegmentTail(tmp_path), batch=77)
    assert [(ts, data, wirelen) for _ref, _lt, ts, data, wirelen in read] == packets
    assert {linktype for _ref, linktype, *_ in read} == {ETHERNET}
    assert read[0][0] == (1, HEADER_SIZE)

    assert list(iter_segment(segment_path(tmp_path, 1))) == read
    assert list(read_range(tmp_path, read[10][0], read[20][0])) == read[10:21]
    assert list(read_range(tmp_path, read[7][0], read[7][0])) == [read[7]]


def test_data_beyond_snaplen_is_cut_and_wire_length_kept(tmp_path):
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT, snaplen=64) as writer:
        writer.append(ETHERNET, [(T0, bytes(range(200)), 200), (T0 + 1, b"short", 1)])
    (_, _, _, data, wirelen), (_, _, _, short, short_wirelen) = read_all(SegmentTail(tmp_path))
    assert data == bytes(range(64)) and wirelen == 200
    assert short == b"short" and short_wirelen == 5   # a wire length below the data is raised


def test_segments_rotate_at_segment_size_with_consecutive_ids(tmp_path):
    limit = 16 * 1024 * 1024                     # segment size 2 MiB
    with SegmentWriter(tmp_path, limit) as writer:
        for batch in range(40):
            writer.append(ETHERNET, make_packets(256, size=1000, start=batch * 256))
        assert writer.stats().evicted_segments == 0
    found = list_segments(tmp_path)
    assert [info.id for info in found] == list(range(1, len(found) + 1))
    assert len(found) >= 5
    for info in found:
        assert info.path.stat().st_size <= segment_size_for(limit)
    assert len(read_all(SegmentTail(tmp_path))) == 40 * 256


def test_total_never_exceeds_the_limit_even_mid_batch(tmp_path, monkeypatch):
    limit = MIN_STORAGE_LIMIT
    directory = tmp_path
    peaks = []
    real_write_all = segments_module._write_all

    def checked_write_all(fd, data):
        real_write_all(fd, data)
        peaks.append(disk_bytes(directory))      # after every write that grows the store

    monkeypatch.setattr(segments_module, "_write_all", checked_write_all)
    sizes = [60, 1500, 9000, 100, 65535]
    written = 0
    with SegmentWriter(directory, limit) as writer:
        batch = 0
        while written < 5 * limit:
            packets = make_packets(200, size=sizes[batch % len(sizes)], start=batch * 200)
            writer.append(ETHERNET, packets)
            written += sum(16 + len(data) for _, data, _ in packets)
            stats = writer.stats()
            assert stats.bytes == disk_bytes(directory) <= limit
            batch += 1
        assert writer.stats().evicted_segments > 0
    assert peaks and max(peaks) <= limit


def test_lowering_the_limit_evicts_at_once_and_holds(tmp_path):
    big, small = 64 * 1024 * 1024, MIN_STORAGE_LIMIT
    with SegmentWriter(tmp_path, big) as writer:
        for batch in range(60):                  # ~15 MB in 8 MiB segments
            writer.append(ETHERNET, make_packets(256, size=1000, start=batch * 256))
        assert disk_bytes(tmp_path) > small
        writer.set_limit(small)
        assert writer.stats().bytes == disk_bytes(tmp_path) <= small
        assert writer.stats().segment_size == MIN_SEGMENT_SIZE
        for batch in range(60, 120):
            writer.append(ETHERNET, make_packets(256, size=1000, start=batch * 256))
            assert disk_bytes(tmp_path) <= small
        with pytest.raises(StoreError, match="below the minimum"):
            writer.set_limit(small - 1)
        assert writer.limit == small
    for info in list_segments(tmp_path):
        assert info.path.stat().st_size <= MIN_SEGMENT_SIZE


def test_linktype_change_starts_a_new_segment(tmp_path):
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        writer.append(ETHERNET, make_packets(2))
        writer.append(RAW, make_packets(3, start=2))
        writer.append(RAW, make_packets(1, start=5))
        writer.append(ETHERNET, make_packets(1, start=6))
    headers = [struct.unpack("<IHHiIII", info.path.read_bytes()[:HEADER_SIZE])
               for info in list_segments(tmp_path)]
    assert [header[6] for header in headers] == [ETHERNET, RAW, ETHERNET]
    assert {header[0] for header in headers} == {0xA1B23C4D}
    assert [linktype for _, linktype, *_ in read_all(SegmentTail(tmp_path))] == \
        [ETHERNET] * 2 + [RAW] * 4 + [ETHERNET]


# -- recovery ------------------------------------------------------------------------------

def test_restart_continues_ids_and_never_appends_to_old_files(tmp_path):
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        writer.append(ETHERNET, make_packets(10))
    first = segment_path(tmp_path, 1).read_bytes()
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        assert writer.stats().repaired == []
        writer.append(ETHERNET, make_packets(5, start=10))
        assert writer.stats().newest_segment == 2
    assert segment_path(tmp_path, 1).read_bytes() == first
    assert len(read_all(SegmentTail(tmp_path))) == 15


def test_torn_last_packet_is_cut_at_every_byte_position(tmp_path):
    source = tmp_path / "source"
    with SegmentWriter(source, MIN_STORAGE_LIMIT) as writer:
        writer.append(ETHERNET, make_packets(5, size=40))
    whole = segment_path(source, 1).read_bytes()
    last_offset = len(whole) - (RECORD_HEADER_SIZE + 40)
    for cut in range(last_offset + 1, len(whole)):
        directory = tmp_path / f"cut{cut}"
        write_to = segment_path(directory, 1)
        write_to.parent.mkdir(parents=True)
        write_to.write_bytes(whole[:cut])
        with SegmentWriter(directory, MIN_STORAGE_LIMIT) as writer:
            stats = writer.stats()
            assert stats.repaired == [f"segment 000000000001.pcap: cut a torn last packet "
                                      f"({cut - last_offset} bytes at offset {last_offset})"]
            assert stats.bytes == last_offset
            writer.append(ETHERNET, make_packets(1, start=99))
        assert write_to.read_bytes() == whole[:last_offset]
        assert [ts for _, _, ts, _, _ in read_all(SegmentTail(directory))] == \
            [T0 + i * 1001 for i in (0, 1, 2, 3, 99)]


def test_damaged_header_segment_is_removed_and_its_id_not_reused(tmp_path):
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        writer.append(ETHERNET, make_packets(3))
        writer.append(RAW, make_packets(3, start=3))
        writer.append(ETHERNET, make_packets(3, start=6))
    segment_path(tmp_path, 2).write_bytes(b"\x00" * 100)
    segment_path(tmp_path, 3).write_bytes(encode_header(ETHERNET, 65535)[:10])
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        stats = writer.stats()
        assert stats.damaged_segments == 2
        assert stats.repaired == [
            "removed segment 000000000002.pcap: not a pcap file (magic 0x00000000, expected "
            "0xa1b2c3d4 or 0xa1b23c4d in either byte order)",
            "removed segment 000000000003.pcap: truncated pcap file header (10 of 24 bytes)"]
        writer.append(ETHERNET, make_packets(1, start=9))
        assert writer.stats().newest_segment == 4
    assert [info.id for info in list_segments(tmp_path)] == [1, 4]


def test_reopening_with_a_lower_limit_evicts_at_open(tmp_path):
    with SegmentWriter(tmp_path, 32 * 1024 * 1024) as writer:
        for batch in range(40):
            writer.append(ETHERNET, make_packets(256, size=1000, start=batch * 256))
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        assert writer.stats().evicted_segments > 0
        assert disk_bytes(tmp_path) <= MIN_STORAGE_LIMIT


def test_segment_left_unrenamed_by_a_crash_is_adopted(tmp_path):
    path = write_segment(tmp_path, 1, make_packets(2))
    path.rename(path.with_name(path.name + ".tmp"))
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        assert writer.stats().segments == 1
    assert len(read_all(SegmentTail(tmp_path))) == 2


# -- the tail ------------------------------------------------------------------------------

def test_tail_follows_a_live_writer(tmp_path):
    tail = SegmentTail(tmp_path)
    assert tail.read(10) == [] and tail.position is None
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        assert tail.read(10) == []
        writer.append(ETHERNET, make_packets(5))
        assert tail.lag_bytes() == HEADER_SIZE + 5 * 116
        first = tail.read(3)
        assert [p[2] for p in first] == [T0, T0 + 1001, T0 + 2002]
        assert tail.position == first[-1][0]
        rest = tail.read(10)
        assert len(rest) == 2 and tail.read(10) == []
        assert tail.lag_bytes() == 0
        total = 5
        for batch in range(30):                  # across several rotations
            writer.append(ETHERNET, make_packets(100, size=500, start=total))
            total += 100
            got = tail.read(1000)
            assert [p[2] for p in got] == [T0 + i * 1001 for i in range(total - 100, total)]
        assert writer.stats().newest_segment > 2
    assert tail.torn_tails == 0 and tail.shed_segments == 0
    assert not tail.take_discontinuity()


def test_tail_waits_on_a_partial_record_then_reads_it_whole(tmp_path):
    packets = make_packets(3, size=200)
    path = write_segment(tmp_path, 1, packets[:2])
    last = encode_record(*packets[2])
    tail = SegmentTail(tmp_path)
    assert len(tail.read(10)) == 2
    position = tail.position
    for cut in (5, RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + 50):
        with open(path, "ab") as file:
            file.write(last[:cut])
        assert tail.read(10) == []               # a partial record means "wait"
        assert tail.position == position
        with open(path, "r+b") as file:
            file.truncate(file.seek(0, os.SEEK_END) - cut)
    with open(path, "ab") as file:
        file.write(last[:50])
        file.flush()
        assert tail.read(10) == []
        file.write(last[50:])
    got = tail.read(10)
    assert [(ts, data, wl) for _, _, ts, data, wl in got] == [packets[2]]


def test_torn_tail_of_a_finished_segment_is_skipped_and_counted(tmp_path):
    packets = make_packets(5)
    torn = encode_record(*packets[3])[:30]
    write_segment(tmp_path, 1, packets[:3], tail=torn)
    tail = SegmentTail(tmp_path)
    assert len(tail.read(10)) == 3
    assert tail.read(10) == []                   # newest: maybe still being written
    write_segment(tmp_path, 2, packets[4:])
    got = tail.read(10)
    assert [p[2] for p in got] == [packets[4][0]] and got[0][0] == (2, HEADER_SIZE)
    assert (tail.torn_tails, tail.torn_bytes) == (1, 30)
    assert not tail.take_discontinuity()


def test_tail_resumes_after_the_ref_it_is_given(tmp_path):
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        writer.append(ETHERNET, make_packets(4))
        writer.append(RAW, make_packets(4, start=4))
    everything = read_all(SegmentTail(tmp_path))
    for index, packet in enumerate(everything):
        tail = SegmentTail(tmp_path, start=packet[0])
        assert tail.position == packet[0]
        assert read_all(tail) == everything[index + 1:]
        assert not tail.take_discontinuity()


def test_lag_lists_newer_segments_when_the_current_one_changes_or_in_time(tmp_path, monkeypatch):
    monkeypatch.setattr(segments_module, "LAG_LIST_EVERY_S", 3600.0)   # "in time": not here
    first = write_segment(tmp_path, 1, make_packets(5))
    tail = SegmentTail(tmp_path)
    assert len(tail.read(2)) == 2
    assert tail.lag_bytes() == 3 * 116               # listed: the tail's segment changed
    with open(first, "ab") as grow:                  # the current segment grows
        grow.write(b"".join(encode_record(ts, data, wirelen)
                            for ts, data, wirelen in make_packets(4, start=5)))
    assert tail.lag_bytes() == 7 * 116               # measured at every call
    write_segment(tmp_path, 2, make_packets(2, start=9))
    assert tail.lag_bytes() == 7 * 116               # a newer one: not listed yet
    monkeypatch.setattr(segments_module, "LAG_LIST_EVERY_S", 0.0)      # the time has passed
    assert tail.lag_bytes() == 7 * 116 + HEADER_SIZE + 2 * 116
    monkeypatch.setattr(segments_module, "LAG_LIST_EVERY_S", 3600.0)
    assert len(tail.read(8)) == 8                    # to segment 2's first packet
    assert tail.lag_bytes() == 116                   # listed again at once


def test_tail_sheds_evicted_segments_and_reports_the_discontinuity(tmp_path, monkeypatch):
    monkeypatch.setattr(segments_module, "LAG_LIST_EVERY_S", 0.0)   # each glance lists the store
    sizes: dict[int, int] = {}
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        writer.append(ETHERNET, make_packets(100, size=1000))
        tail = SegmentTail(tmp_path)
        before = tail.read(10)
        written = 100
        while writer.stats().oldest_segment < 4:   # segment 1, the tail's, is long gone
            sizes.update((info.id, info.path.stat().st_size)
                         for info in list_segments(tmp_path))
            writer.append(ETHERNET, make_packets(100, size=1000, start=written))
            written += 100
            tail.lag_bytes()                     # the tail glances at the store now and then
        oldest = writer.stats().oldest_segment
        # What the tail had already buffered from segment 1 still comes out, then the jump.
        got = tail.read(10_000)
        from_first = [p for p in got if p[0][0] == 1]
        after = got[len(from_first):]
        assert after[0][0] == (oldest, HEADER_SIZE)
        assert after[0][2] == next(iter_segment(segment_path(tmp_path, oldest)))[2]
        assert tail.take_discontinuity() is True
        assert tail.take_discontinuity() is False
        assert HEADER_SIZE + (len(before) + len(from_first)) * 1016 == sizes[1]
        assert tail.shed_segments == oldest - 2
        assert tail.shed_bytes == sum(sizes[i] for i in range(2, oldest))
        read_all(tail)
        assert tail.lag_bytes() == 0
        assert not tail.take_discontinuity()


def test_tail_resuming_in_an_evicted_segment_jumps_to_the_oldest(tmp_path):
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        written = 0
        while writer.stats().oldest_segment < 3:
            writer.append(ETHERNET, make_packets(100, size=1000, start=written))
            written += 100
        oldest = writer.stats().oldest_segment
    tail = SegmentTail(tmp_path, start=(1, HEADER_SIZE))
    got = tail.read(1)
    assert got[0][0] == (oldest, HEADER_SIZE)
    assert tail.take_discontinuity()
    assert tail.shed_segments == oldest - 1


def test_tail_from_an_emptied_store_starts_again_at_the_oldest(tmp_path):
    write_segment(tmp_path, 1, make_packets(2))
    tail = SegmentTail(tmp_path, start=(57, HEADER_SIZE))
    assert [p[0] for p in tail.read(10)] == [(1, HEADER_SIZE), (1, HEADER_SIZE + 116)]
    assert tail.take_discontinuity()


def test_tail_on_a_caught_up_segment_evicted_loses_nothing(tmp_path):
    write_segment(tmp_path, 1, make_packets(2))
    tail = SegmentTail(tmp_path)
    assert len(tail.read(10)) == 2
    write_segment(tmp_path, 2, make_packets(2, start=2))
    segment_path(tmp_path, 1).unlink()
    assert [p[0][0] for p in tail.read(10)] == [2, 2]
    assert not tail.take_discontinuity()
    assert (tail.shed_segments, tail.shed_bytes) == (0, 0)


# -- read_range ----------------------------------------------------------------------------

def test_read_range_across_segments(tmp_path):
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        for batch in range(4):
            writer.append(ETHERNET, make_packets(200, size=1000, start=batch * 200))
    everything = read_all(SegmentTail(tmp_path))
    assert len({ref[0] for ref, *_ in everything}) >= 2
    boundary = next(i for i, p in enumerate(everything) if p[0][0] == 2)
    first, last = boundary - 3, boundary + 4
    assert list(read_range(tmp_path, everything[first][0], everything[last][0])) == \
        everything[first:last + 1]
    assert list(read_range(tmp_path, everything[last][0], everything[first][0])) == []


def test_read_range_seeks_instead_of_scanning(tmp_path):
    path = write_segment(tmp_path, 1, make_packets(5))
    refs = [p[0] for p in SegmentTail(tmp_path).read(10)]
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, refs[1][1] + 8, 0xFFFFFFFF)   # record 1 now unreadable
    path.write_bytes(bytes(data))
    assert [p[0] for p in read_range(tmp_path, refs[2], refs[4])] == refs[2:]


def test_read_range_names_the_evicted_segment(tmp_path):
    write_segment(tmp_path, 2, make_packets(2))
    with pytest.raises(SegmentEvicted, match="segment 000000000001.pcap is gone"):
        list(read_range(tmp_path, (1, HEADER_SIZE), (2, HEADER_SIZE)))
    with pytest.raises(SegmentEvicted, match="000000000003.pcap"):
        list(read_range(tmp_path, (2, HEADER_SIZE), (3, HEADER_SIZE)))
    assert isinstance(SegmentEvicted("x"), StoreError)


def test_pcap_helpers_build_a_readable_file(tmp_path):
    path = tmp_path / "out.pcap"
    path.write_bytes(encode_header(RAW, 1500) + encode_record(T0, b"abc", 60)
                     + encode_record(T0 + 5, b"de", 2))
    assert list(iter_segment(path)) == [((0, 24), RAW, T0, b"abc", 60),
                                        ((0, 43), RAW, T0 + 5, b"de", 2)]
    micro = tmp_path / "micro.pcap"
    micro.write_bytes(encode_header(RAW, 1500, nano=False) + encode_record(T0, b"x", 1, nano=False))
    assert [p[2] for p in iter_segment(micro)] == [T0 // 1000 * 1000]


def test_tail_in_another_process_follows_a_writer_without_loss(tmp_path):
    """The real arrangement: a writer process appends while this one tails the files."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "sys.path[:0] = [str(Path(sys.argv[2]))]\n"
        "from tests.unit.test_store_segments import make_packets\n"
        "from worker.store.segments import SegmentWriter\n"
        "with SegmentWriter(Path(sys.argv[1]), 16 * 1024 * 1024) as writer:\n"
        "    for batch in range(300):\n"
        "        writer.append(1, make_packets(50, size=37 + batch % 700, start=batch * 50))\n"
    )
    root = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(root)])
    tail = SegmentTail(tmp_path)
    seen: list[int] = []
    while True:
        finished = writer.poll() is not None     # decided before reading: no race at the end
        got = tail.read(500)
        seen.extend(p[2] for p in got)
        if finished and not got:
            break
    assert writer.returncode == 0
    assert seen == [T0 + i * 1001 for i in range(300 * 50)]
    assert len(list_segments(tmp_path)) > 1
    assert (tail.torn_tails, tail.shed_segments) == (0, 0)


def test_the_rest_of_the_storage_dir_counts_in_the_limit_as_du_counts_it(tmp_path):
    import subprocess
    (tmp_path / "index.sqlite").write_bytes(b"i" * 700_000)
    tree = tmp_path / "kernel-headers" / "include"
    tree.mkdir(parents=True)
    (tree / "a.h").write_bytes(b"h" * 5000)
    limit = 4 * MIN_SEGMENT_SIZE
    with SegmentWriter(tmp_path, limit) as writer:
        for n in range(40):
            writer.append(ETHERNET, make_packets(100, size=1000, start=n * 100))
            assert disk_bytes(tmp_path) + writer.stats().other_bytes <= limit
        stats = writer.stats()
        du = int(subprocess.run(["du", "-sb", str(tmp_path)], capture_output=True, text=True,
                                check=True).stdout.split()[0])
        assert stats.other_bytes + stats.bytes == du
        assert du <= limit
        assert stats.evicted_for_other > 0
