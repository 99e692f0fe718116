"""worker/records.py, the capture process's record loops (compiled in a mypyc build; run this
file with SHARK_PURE_PYTHON=1 too): the same answers as shark.pcap's plain decoder and
encoder, for every variant of the format and wherever the records stop."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shark.pcap import (
    HEADER_SIZE,
    PcapReader,
    decode_header,
    decode_records,
    encode_record,
)
from worker.records import decode_packets, pack_packets

T0 = 1_764_150_000_123_456_789
VARIANTS = [("<", True), ("<", False), (">", True), (">", False)]


def pcap_file(order: str, nano: bool, packets: list[tuple[int, bytes, int]],
              snaplen: int = 65535) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, 1)]
    for ts, data, wirelen in packets:
        sec, frac = divmod(ts, 1_000_000_000)
        out.append(struct.pack(order + "IIII", sec, frac if nano else frac // 1000, len(data),
                               wirelen) + data)
    return b"".join(out)


def packets_of(count: int) -> list[tuple[int, bytes, int]]:
    return [(T0 + i * 1_001_000, bytes([i % 251]) * (i * 37 % 300), i * 37 % 300 + i % 3)
            for i in range(count)]


def both(raw: bytes, pos: int, limit: int, max_records: int) -> None:
    """decode_packets and decode_records agree from pos: position, stop, packets."""
    header = decode_header(raw)
    records: list = []
    packets: list = []
    expected = decode_records(raw, pos, header, limit, max_records, records, 0)
    assert decode_packets(raw, pos, header, limit, max_records, packets) == expected
    assert packets == [(ts, data, wirelen) for _offset, ts, data, wirelen in records]


@pytest.mark.parametrize("order, nano", VARIANTS)
def test_decode_packets_reads_what_decode_records_reads_cut_anywhere(order, nano):
    raw = pcap_file(order, nano, packets_of(12))
    for cut in range(HEADER_SIZE, len(raw) + 1, 7):
        both(raw[:cut], HEADER_SIZE, 65535, 100)
    both(raw, HEADER_SIZE, 65535, 5)                     # FULL after 5
    both(raw, HEADER_SIZE, 65535, 0)
    both(raw, HEADER_SIZE, 200, 100)                     # TOO_LONG at the first long one


@pytest.mark.parametrize("order, nano", VARIANTS)
def test_a_file_read_as_packets_stops_at_the_same_damage(order, nano):
    packets = packets_of(30)
    raw = pcap_file(order, nano, packets)
    last = len(raw) - 16 - len(packets[-1][1])            # the last record's header
    plain, fast = (PcapReader(_Bytes(raw[:-5]), chunk=64) for _ in range(2))
    records = plain.read(1000)
    assert fast.read_as(decode_packets, 1000) == [(ts, d, w) for _o, ts, d, w in records]
    assert len(records) == 29
    assert plain.damage is not None and fast.damage is not None
    assert (fast.damage.what, fast.damage.offset) == (plain.damage.what, plain.damage.offset) \
        == ("truncated packet record", last)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def read(self, n: int) -> bytes:
        chunk = self.data[self.at:self.at + n]
        self.at += len(chunk)
        return chunk


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 999_999_999),
                          st.binary(max_size=40), st.integers(0, 2**32 - 1)), max_size=12),
       st.sampled_from(VARIANTS), st.integers(0, 40), st.integers(0, 2000))
def test_decode_packets_agrees_on_any_records(records, variant, limit, cut):
    order, nano = variant
    packets = [(sec * 1_000_000_000 + (frac if nano else frac // 1000 * 1000), data, wirelen)
               for sec, frac, data, wirelen in records]
    raw = pcap_file(order, nano, packets)
    both(raw[:HEADER_SIZE + cut], HEADER_SIZE, limit, 20)


def packed(packets, start, room, snaplen):
    parts: list[bytes] = []
    stop, size = pack_packets(packets, start, room, snaplen, parts)
    assert size == sum(len(p) for p in parts)
    return b"".join(parts), stop


def test_pack_packets_writes_what_encode_record_writes():
    packets = packets_of(20)
    blob, stop = packed(packets, 0, 1 << 30, 65535)
    assert stop == 20
    assert blob == b"".join(encode_record(ts, data, wirelen) for ts, data, wirelen in packets)


def test_pack_packets_cuts_at_the_snaplen_and_raises_a_short_wire_length():
    blob, stop = packed([(T0, bytes(range(200)), 300), (T0 + 1, b"short", 2)], 0, 1 << 30, 64)
    assert stop == 2
    assert blob == encode_record(T0, bytes(range(64)), 300) + encode_record(T0 + 1, b"short", 5)


def test_pack_packets_stops_before_the_first_packet_that_does_not_fit():
    packets = packets_of(10)
    sizes = [16 + len(data) for _ts, data, _w in packets]
    room = sum(sizes[2:6])
    blob, stop = packed(packets, 2, room, 65535)
    assert stop == 6 and len(blob) == room
    blob, stop = packed(packets, 2, room - 1, 65535)
    assert stop == 5 and len(blob) == room - sizes[5]
    assert packed(packets, 2, sizes[2] - 1, 65535) == (b"", 2)


@pytest.mark.parametrize("bad", [(-5, b"abc", 3), (2**32 * 1_000_000_000, b"abc", 3),
                                 (T0, b"abc", 2**32)])
def test_pack_packets_refuses_what_a_record_cannot_hold(bad):
    # SegmentWriter._pack then packs one by one to name the packet (test_store_segments).
    with pytest.raises((struct.error, OverflowError, TypeError)):
        pack_packets([(T0, b"ok", 2), bad], 0, 1 << 30, 65535, [])
