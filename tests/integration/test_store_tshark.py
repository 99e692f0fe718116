"""Segments as peers see them: tshark and tcpdump read every segment, also mid-write and torn."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dpkt

from worker.store.segments import (
    MIN_STORAGE_LIMIT,
    RECORD_HEADER_SIZE,
    SegmentTail,
    SegmentWriter,
    list_segments,
    segment_path,
)


T0 = 1_700_000_000_000_000_001
ETHERNET = 1


def tcp_frame(number: int, payload_size: int) -> bytes:
    """An Ethernet/IPv4/TCP frame with valid checksums; the packet number is in the ports."""
    tcp = dpkt.tcp.TCP(sport=20000 + number % 40000, dport=8080, seq=1000 + number, ack=1,
                       flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH,
                       data=(b"%08d" % number) * (payload_size // 8))
    ip = dpkt.ip.IP(src=bytes([10, 213, 0, 1]), dst=bytes([10, 213, 0, 2]), p=dpkt.ip.IP_PROTO_TCP,
                    ttl=64, data=tcp)
    ip.len = len(ip)
    frame = dpkt.ethernet.Ethernet(src=b"\x02\x00\x00\x00\x00\x01", dst=b"\x02\x00\x00\x00\x00\x02",
                                   type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
    return bytes(frame)


def make_packets(start: int, count: int, payload_size: int = 600):
    # Timestamps 1 ms + 7 ns apart so that nanoseconds matter in every one of them.
    return [(T0 + i * 1_000_007, frame, len(frame))
            for i in range(start, start + count)
            for frame in (tcp_frame(i, payload_size),)]


def tshark_times(path: Path) -> tuple[list[str], str]:
    result = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
                             "-e", "tcp.srcport"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:-1], result.stderr


def tcpdump_lines(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["tcpdump", "-r", str(path), "-nn", "-tt",
                           "--time-stamp-precision=nano"],
                          capture_output=True, text=True, timeout=120)


def epoch_text(ts_ns: int) -> str:
    return f"{ts_ns // 1_000_000_000}.{ts_ns % 1_000_000_000:09d}"


def expected_by_segment(directory: Path) -> dict[Path, list[int]]:
    by_segment: dict[Path, list[int]] = {}
    for ref, _linktype, ts, _data, _wirelen in SegmentTail(directory).read(1_000_000):
        by_segment.setdefault(segment_path(directory, ref[0]), []).append(ts)
    return by_segment


def test_every_segment_reads_in_tshark_and_tcpdump_with_nanoseconds(tmp_path):
    with SegmentWriter(tmp_path, 8 * 1024 * 1024) as writer:        # 1 MiB segments
        for batch in range(16):
            writer.append(ETHERNET, make_packets(batch * 256, 256))
        stats = writer.stats()
    assert stats.evicted_segments == 0 and stats.segments >= 3
    by_segment = expected_by_segment(tmp_path)
    assert sum(len(times) for times in by_segment.values()) == 16 * 256
    for path, times in by_segment.items():
        lines, _ = tshark_times(path)
        assert [line.split("\t")[0] for line in lines] == [epoch_text(ts) for ts in times]
        first_number = (times[0] - T0) // 1_000_007
        assert lines[0].split("\t")[1] == str(20000 + first_number)
        dump = tcpdump_lines(path)
        assert dump.returncode == 0, dump.stderr
        printed = dump.stdout.splitlines()
        assert [line.split(" ")[0] for line in printed] == [epoch_text(ts) for ts in times]
        assert f"10.213.0.1.{20000 + first_number} > 10.213.0.2.8080" in printed[0]


def test_tshark_reads_the_segment_the_writer_holds_open(tmp_path):
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        writer.append(ETHERNET, make_packets(0, 100))
        path = list_segments(tmp_path)[-1].path
        lines, _ = tshark_times(path)
        assert len(lines) == 100
        writer.append(ETHERNET, make_packets(100, 50))
        lines, _ = tshark_times(path)
        assert len(lines) == 150
        assert lines[-1].split("\t")[0] == epoch_text(T0 + 149 * 1_000_007)


def test_tcpdump_reads_the_whole_packets_of_a_torn_segment(tmp_path):
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        writer.append(ETHERNET, make_packets(0, 20))
    path = list_segments(tmp_path)[0].path
    data = path.read_bytes()
    last_record = RECORD_HEADER_SIZE + len(tcp_frame(19, 600))
    torn = tmp_path / "torn.pcap"
    torn.write_bytes(data[:len(data) - last_record // 2])
    dump = tcpdump_lines(torn)
    assert "truncated dump file" in dump.stderr
    assert len(dump.stdout.splitlines()) == 19
    # And the writer, reopened over such a segment, cuts it back to whole packets.
    path.write_bytes(torn.read_bytes())
    with SegmentWriter(tmp_path, MIN_STORAGE_LIMIT) as writer:
        assert len(writer.stats().repaired) == 1
    dump = tcpdump_lines(path)
    assert dump.returncode == 0 and "truncated" not in dump.stderr
    assert len(dump.stdout.splitlines()) == 19
