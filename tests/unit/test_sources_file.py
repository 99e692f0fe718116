"""The file source: pcap and pcapng replay, damage located, BPF applied, fuzzed."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.packet import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW, decode
from worker.sources import open_file_source
from worker.sources.base import BpfError, CaptureError
from worker.sources.bpf import (UserFilter, compile_bpf, cooked_kernel_program, instructions,
                                skip_loopback_outgoing)
from worker.sources.file import FileSource

NS = 1_000_000_000


# -- factories ----------------------------------------------------------------------------

def frame(dport: int, payload: bytes = b"hello", proto: int = 17) -> bytes:
    """An Ethernet + IPv4 + UDP (or TCP) frame to 10.0.0.2:dport."""
    if proto == 17:
        transport = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    else:
        transport = struct.pack("!HHIIBBHHH", 40000, dport, 1, 0, 0x50, 0x18, 8192, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(transport), 1, 0, 64, proto, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + transport


def raw_ip_frame(dport: int) -> bytes:
    return frame(dport)[14:]


Packet = tuple[int, bytes]  # (ts_ns, frame)


def pcap_bytes(packets: list[Packet], *, nano: bool = False, order: str = "<",
               linktype: int = LINKTYPE_ETHERNET, snaplen: int = 65535) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data in packets:
        frac = ts % NS if nano else ts % NS // 1000
        out.append(struct.pack(order + "IIII", ts // NS, frac, len(data), len(data)) + data)
    return b"".join(out)


def _option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def _block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack(order + "II", block_type, length) + body + struct.pack(order + "I", length)


def pcapng_bytes(interfaces: list[tuple[int, int | None]],
                 packets: list[tuple[int, int, bytes]], *, order: str = "<",
                 extra_blocks: bytes = b"") -> bytes:
    """interfaces: (linktype, if_tsresol or None); packets: (interface, ts in that interface's
    units, frame) as Enhanced Packet Blocks."""
    shb = _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    blocks = [shb]
    for linktype, tsresol in interfaces:
        options = b""
        if tsresol is not None:
            options = _option(order, 9, bytes([tsresol])) + _option(order, 0, b"")
        blocks.append(_block(order, 1, struct.pack(order + "HHI", linktype, 0, 0) + options))
    blocks.append(extra_blocks)
    for interface, units, data in packets:
        body = struct.pack(order + "IIIII", interface, units >> 32, units & 0xFFFFFFFF,
                           len(data), len(data)) + data
        blocks.append(_block(order, 6, body))
    return b"".join(blocks)


def write(tmp_path: Path, content: bytes, name: str = "capture.pcap") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def read_all(source: FileSource, batch: int = 3) -> list[tuple[int, bytes, int]]:
    packets = []
    while not source.finished:
        packets.extend(source.read_batch(batch))
    assert source.read_batch(batch) == []
    return packets


SAMPLE = [(1_700_000_000 * NS + i * 1_234_567_891, frame(5000 + i, b"x" * i)) for i in range(7)]


# -- pcap ---------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_packets_and_timestamps_in_both_resolutions_and_byte_orders(tmp_path, order, nano):
    source = open_file_source(write(tmp_path, pcap_bytes(SAMPLE, nano=nano, order=order)))
    assert source.linktype == LINKTYPE_ETHERNET
    assert source.fileno() is None
    packets = read_all(source)
    expected_ts = [ts if nano else ts // 1000 * 1000 for ts, _ in SAMPLE]
    assert [p[0] for p in packets] == expected_ts
    assert [p[1] for p in packets] == [data for _, data in SAMPLE]
    assert [p[2] for p in packets] == [len(data) for _, data in SAMPLE]
    stats = source.stats()
    assert (stats.kind, stats.received, stats.finished, stats.error) == ("file", 7, True, "")
    assert stats.name == "file:capture.pcap"


def test_pcap_spanning_many_read_chunks(tmp_path):
    packets = [(i * NS, frame(i % 65535, bytes(1400))) for i in range(2000)]  # ~2.9 MB
    source = FileSource(write(tmp_path, pcap_bytes(packets)))
    got = read_all(source, batch=700)
    assert len(got) == 2000
    assert got[-1][0] == 1999 * NS
    assert decode(source.linktype, got[1234][1]).dport == 1234


def test_empty_pcap_finishes_with_no_packets(tmp_path):
    source = FileSource(write(tmp_path, pcap_bytes([])))
    assert read_all(source) == []
    assert source.stats().error == ""


# -- pcapng -------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_two_interfaces_with_their_own_resolution(tmp_path, order):
    # Interface 0: default microseconds; interface 1: nanoseconds (tsresol 9).
    content = pcapng_bytes(
        [(LINKTYPE_ETHERNET, None), (LINKTYPE_ETHERNET, 9)],
        [(0, 1_700_000_000_123_456, frame(1)), (1, 1_700_000_000_987_654_321, frame(2)),
         (0, 1_700_000_001_000_000, frame(3))], order=order)
    source = FileSource(write(tmp_path, content, "two.pcapng"))
    packets = read_all(source)
    assert [p[0] for p in packets] == [1_700_000_000_123_456_000, 1_700_000_000_987_654_321,
                                       1_700_000_001_000_000_000]
    assert [decode(source.linktype, p[1]).dport for p in packets] == [1, 2, 3]


def test_pcapng_binary_resolution_and_foreign_blocks_are_handled(tmp_path):
    name_resolution = _block("<", 4, b"\x00" * 8)
    statistics = _block("<", 5, b"\x00" * 12)
    content = pcapng_bytes([(LINKTYPE_ETHERNET, 0x80 | 10)], [(0, 3 * 1024 + 512, frame(9))],
                           extra_blocks=name_resolution + statistics)
    packets = read_all(FileSource(write(tmp_path, content, "b.pcapng")))
    assert [p[0] for p in packets] == [3 * NS + NS // 2]


def test_pcapng_keeps_the_first_linktype_and_counts_the_other_interfaces_packets(tmp_path):
    content = pcapng_bytes(
        [(LINKTYPE_ETHERNET, None), (LINKTYPE_RAW, None)],
        [(0, 1, frame(1)), (1, 2, raw_ip_frame(2)), (1, 3, raw_ip_frame(3)), (0, 4, frame(4))])
    source = FileSource(write(tmp_path, content, "mixed.pcapng"))
    packets = read_all(source)
    assert source.linktype == LINKTYPE_ETHERNET
    assert [decode(LINKTYPE_ETHERNET, p[1]).dport for p in packets] == [1, 4]
    assert source.skipped == 2
    assert "skipped 2 packets" in source.stats().error
    assert source.stats().skipped == 2


def test_pcapng_simple_packet_block_takes_interface_zero_and_the_last_timestamp(tmp_path):
    spb = _block("<", 3, struct.pack("<I", len(frame(7))) + frame(7))
    content = pcapng_bytes([(LINKTYPE_ETHERNET, 9)], [(0, 42, frame(6))]) + spb
    packets = read_all(FileSource(write(tmp_path, content, "spb.pcapng")))
    assert [(p[0], decode(LINKTYPE_ETHERNET, p[1]).dport) for p in packets] == [(42, 6), (42, 7)]


def test_pcapng_without_an_interface_is_refused(tmp_path):
    content = pcapng_bytes([], [])
    with pytest.raises(CaptureError, match="without an interface description block"):
        FileSource(write(tmp_path, content, "none.pcapng"))


def test_pcapng_packet_on_an_undeclared_interface_stops_there(tmp_path):
    content = pcapng_bytes([(LINKTYPE_ETHERNET, None)], [(0, 1, frame(1)), (3, 2, frame(2))])
    source = FileSource(write(tmp_path, content, "x.pcapng"))
    assert len(read_all(source)) == 1
    assert "packet on interface 3 without an interface description block" in source.stats().error
    assert "(packet 2); kept 1 packets" in source.stats().error


# -- damage -------------------------------------------------------------------------------

def _record_offsets(packets: list[Packet]) -> list[int]:
    offsets, position = [], 24
    for _, data in packets:
        offsets.append(position)
        position += 16 + len(data)
    return offsets


@pytest.mark.parametrize("cut", ["inside_header", "inside_data"])
@pytest.mark.parametrize("damaged", [0, 3, 6])
def test_truncated_pcap_keeps_the_packets_before_and_says_where(tmp_path, cut, damaged):
    content = pcap_bytes(SAMPLE)
    start = _record_offsets(SAMPLE)[damaged]
    end = start + (7 if cut == "inside_header" else 16 + len(SAMPLE[damaged][1]) - 1)
    source = FileSource(write(tmp_path, content[:end]))
    packets = read_all(source)
    assert [p[1] for p in packets] == [data for _, data in SAMPLE[:damaged]]
    error = source.stats().error
    assert error.startswith("capture.pcap: truncated packet record")
    assert f"at byte {start} (packet {damaged + 1}); kept {damaged} packets" in error
    assert source.stats().finished


def test_absurd_caplen_stops_the_pcap_there(tmp_path):
    content = bytearray(pcap_bytes(SAMPLE))
    start = _record_offsets(SAMPLE)[2]
    struct.pack_into("<I", content, start + 8, 0x7FFFFFFF)
    source = FileSource(write(tmp_path, bytes(content)))
    assert len(read_all(source)) == 2
    assert f"packet length {0x7FFFFFFF} larger than 262144 at byte {start} (packet 3)" in \
        source.stats().error


@pytest.mark.parametrize("keep_bytes", [-1, -4, -13])
def test_truncated_pcapng_block_keeps_the_packets_before(tmp_path, keep_bytes):
    packets = [(0, i, frame(i)) for i in range(4)]
    content = pcapng_bytes([(LINKTYPE_ETHERNET, None)], packets)
    last_block = len(content) - (32 + (len(frame(3)) + 3) // 4 * 4)  # EPB: 32 + padded frame
    assert struct.unpack_from("<I", content, last_block)[0] == 6
    source = FileSource(write(tmp_path, content[:keep_bytes], "cut.pcapng"))
    assert [decode(LINKTYPE_ETHERNET, p[1]).dport for p in read_all(source)] == [0, 1, 2]
    error = source.stats().error
    assert f"truncated block (type 0x6, {len(content) - last_block} bytes) at byte {last_block} " \
           f"(packet 4); kept 3 packets" in error


def test_pcapng_block_length_mismatch_is_damage(tmp_path):
    content = bytearray(pcapng_bytes([(LINKTYPE_ETHERNET, None)], [(0, 1, frame(1))] * 2))
    struct.pack_into("<I", content, len(content) - 4, 999)
    source = FileSource(write(tmp_path, bytes(content), "m.pcapng"))
    assert len(read_all(source)) == 1
    assert "block length mismatch" in source.stats().error


@pytest.mark.parametrize("content, message", [
    (b"", "too short"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a pcap or pcapng file (magic 0x47455420)"),
    (struct.pack("<I", 0xA1B2C3D4) + b"\x00" * 8, "truncated pcap file header"),
    (struct.pack("<II", 0x0A0D0D0A, 28) + b"\x00" * 20, "not a pcapng file (byte-order magic"),
])
def test_not_a_capture_file_is_refused_at_open(tmp_path, content, message):
    with pytest.raises(CaptureError, match=re.escape(message)):
        open_file_source(write(tmp_path, content))


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CaptureError, match="cannot open"):
        FileSource(str(tmp_path / "nope.pcap"))


# -- BPF on files -------------------------------------------------------------------------

def test_bpf_filter_applies_to_file_packets(tmp_path):
    packets = [(i * NS, frame(53 if i % 3 == 0 else 80, proto=17 if i % 2 else 6))
               for i in range(12)]
    source = FileSource(write(tmp_path, pcap_bytes(packets)))
    source.set_filter("udp port 53")
    got = read_all(source)
    assert [p[0] for p in got] == [3 * NS, 9 * NS]
    assert source.stats().received == 2


def test_bpf_filter_on_a_raw_ip_capture(tmp_path):
    packets = [(i * NS, raw_ip_frame(53 + i % 2)) for i in range(6)]
    source = FileSource(write(tmp_path, pcap_bytes(packets, linktype=LINKTYPE_RAW)))
    source.set_filter("udp dst port 54")
    assert [p[0] for p in read_all(source)] == [1 * NS, 3 * NS, 5 * NS]


def test_bad_bpf_on_a_file_raises_with_libpcaps_reason(tmp_path):
    source = FileSource(write(tmp_path, pcap_bytes(SAMPLE)))
    with pytest.raises(BpfError, match="'udp port': .*syntax error"):
        source.set_filter("udp port")
    source.close()


# -- BPF programs --------------------------------------------------------------------------

def test_empty_expression_compiles_to_accept_all_capped_at_snaplen():
    program = compile_bpf("", LINKTYPE_ETHERNET, 1234)
    assert instructions(program) == [(0x06, 0, 0, 1234)]  # ret #1234
    assert UserFilter(program).accepts(frame(1), len(frame(1)))


def test_cooked_program_uses_kernel_loads_for_the_sll_header_fields():
    program = compile_bpf("inbound and udp port 53", LINKTYPE_LINUX_SLL, 65535)

    def is_packet_load(code: int) -> bool:  # ld/ldx with abs, ind or msh mode
        return code & 0x07 in (0, 1) and code & 0xE0 in (0x20, 0x40, 0xA0)

    def ancillary(field: int) -> int:       # SKF_AD_OFF + field, as the u32 in the program
        return (-0x1000 + field) & 0xFFFFFFFF
    loads = {before[3]: after[3] for before, after in
             zip(instructions(program), instructions(cooked_kernel_program(program)))
             if is_packet_load(before[0])}
    assert loads[0] == ancillary(4)    # SLL packet type -> SKF_AD_PKTTYPE
    assert loads[14] == ancillary(0)   # SLL protocol -> SKF_AD_PROTOCOL
    assert all(loads[k] == k - 16 for k in loads if k >= 16)  # no SLL header in the kernel
    # A load of other header bytes cannot run in the kernel: the caller filters in user space.
    assert cooked_kernel_program(compile_bpf("link[4:2] = 6", LINKTYPE_LINUX_SLL, 100)) is None


def test_loopback_prefix_drops_outgoing_loopback_packets_only():
    program = skip_loopback_outgoing(1, compile_bpf("", LINKTYPE_LINUX_SLL, 100))
    insns = instructions(program)
    assert insns[-1] == (0x06, 0, 0, 100) and len(insns) == 6
    assert insns[1][1:] == (0, 3, 1) and insns[3][1:] == (0, 1, 4)  # jumps land on ret 0 / start
    assert insns[4] == (0x06, 0, 0, 0)


# -- fuzz ---------------------------------------------------------------------------------

_SEEDS = [pcap_bytes(SAMPLE[:3]), pcap_bytes(SAMPLE[:2], nano=True, order=">"),
          pcapng_bytes([(LINKTYPE_ETHERNET, 9), (LINKTYPE_RAW, None)],
                       [(0, 5, frame(1)), (1, 6, raw_ip_frame(2))])]


@st.composite
def damaged_captures(draw) -> bytes:
    """A valid capture with bytes flipped, cut or inserted, or plain random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    content = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(content) - 1))
        content[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(content)))
    return bytes(content[:cut])


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damaged_captures())
def test_any_bytes_parse_or_fail_cleanly(tmp_path, content):
    path = write(tmp_path, content, "fuzz.bin")
    try:
        source = FileSource(path)
    except CaptureError as error:
        assert str(error).startswith("fuzz.bin: ")
        return
    packets = read_all(source, batch=2)
    stats = source.stats()
    assert stats.received == len(packets)
    for ts, data, wirelen in packets:
        assert isinstance(ts, int) and isinstance(data, bytes) and isinstance(wirelen, int)
    assert "\n" not in stats.error
    source.close()


def _replay(path: str, batch: int) -> tuple[list[tuple[int, bytes, int]], str, int]:
    source = FileSource(path)
    packets = read_all(source, batch)
    return packets, source.stats().error, source.skipped


@pytest.mark.parametrize("batch", [3, 4096])
def test_pcapng_compiled_blocks_read_what_the_block_parser_reads_cut_anywhere(
        tmp_path, monkeypatch, batch):
    # Enhanced packet blocks go through worker.records.decode_enhanced (compiled) while they
    # are whole and well formed; anything else through the block parser, which must then see
    # the same place, count and time: the same file with decode_enhanced reading nothing
    # (the block parser alone) gives the same packets, errors and counts at every cut.
    spb = _block("<", 3, struct.pack("<I", len(frame(99))) + frame(99))
    packets = [(i % 3, 1_700_000_000_000_000 + i * 997, frame(i, b"y" * (i % 17)))
               for i in range(60)]
    content = pcapng_bytes([(LINKTYPE_ETHERNET, None), (LINKTYPE_RAW, 9),
                            (LINKTYPE_ETHERNET, 0x80 | 20)], packets[:30]) + spb + b"".join(
        _block("<", 6, struct.pack("<IIIII", interface, units >> 32, units & 0xFFFFFFFF,
                                   len(data), len(data) + 4) + data)
        for interface, units, data in packets[30:])
    cuts = [*range(200, len(content) - 400, 61), *range(len(content) - 400, len(content) + 1)]
    fast = [_replay(write(tmp_path, content[:cut], f"{cut}.pcapng"), batch) for cut in cuts]
    monkeypatch.setattr("worker.sources.file.decode_enhanced",
                        lambda buf, pos, interfaces, most, out, last_ts: (pos, 0, 0, last_ts))
    for cut, seen in zip(cuts, fast):
        assert seen == _replay(str(tmp_path / f"{cut}.pcapng"), batch), cut
    kept, error, skipped = fast[-1]      # the whole file: interface 1's packets are skipped
    assert len(kept) == 41 and skipped == 20 and "skipped 20 packets" in error
    assert kept[-1] == ((1_700_000_000_000_000 + 59 * 997) * NS // (1 << 20),
                        frame(59, b"y" * 8), len(frame(59, b"y" * 8)) + 4)
    assert any("truncated block" in error for _kept, error, _skipped in fast[:-1])


def test_pcapng_spanning_many_read_chunks_through_the_compiled_blocks(tmp_path):
    frames = [frame(i % 60000, bytes([i % 251]) * (i % 1400)) for i in range(3000)]
    content = pcapng_bytes([(LINKTYPE_ETHERNET, 9)],
                           [(0, 1_700_000_000_000_000_000 + i, data) for i, data in enumerate(frames)])
    assert len(content) > 2 << 20      # more than two of the source's read chunks
    packets = read_all(FileSource(write(tmp_path, content, "big.pcapng")), 1000)
    assert [data for _ts, data, _w in packets] == frames
    assert [ts for ts, _d, _w in packets] == [1_700_000_000_000_000_000 + i for i in range(3000)]
