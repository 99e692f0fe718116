"""shark/pcap.py: every variant of the format (byte order, resolution) through the file reader
and the stream reader, and damage named with what and where. The files here are packed by hand
(struct), not by the module's own encoder, except where the encoder is what is tested."""

from __future__ import annotations

import asyncio
import io
import struct

import pytest

from shark.pcap import (
    MAX_SNAPLEN,
    FileHeader,
    PcapFormatError,
    PcapReader,
    PcapStream,
    PcapWriter,
    decode_header,
    encode_header,
    encode_record,
)

T0 = 1_764_150_000_123_456_789
PACKETS = [(T0, b"first", 60), (T0 + 1_000, b"second!", 7), (T0 + 2_000_000_000, b"", 0)]
VARIANTS = [("<", True), ("<", False), (">", True), (">", False)]


def hand_packed(order: str, nano: bool, packets=PACKETS, linktype: int = 1,
                snaplen: int = 65535) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data, wirelen in packets:
        sec, frac = divmod(ts, 1_000_000_000)
        out.append(struct.pack(order + "IIII", sec, frac if nano else frac // 1000, len(data),
                               wirelen) + data)
    return b"".join(out)


def expected(nano: bool, packets=PACKETS) -> list[tuple[int, bytes, int]]:
    return [(ts if nano else ts // 1000 * 1000, data, wirelen) for ts, data, wirelen in packets]


def stream_records(data: bytes, step: int, limit: int = 1 << 20):
    async def chunks():
        for i in range(0, len(data), step):
            yield data[i:i + step]

    async def go():
        stream = PcapStream(chunks(), limit=limit)
        header = await stream.read_header()
        records = []
        while (record := await stream.next()) is not None:
            records.append(record)
        return header, records
    return asyncio.run(go())


@pytest.mark.parametrize("order,nano", VARIANTS)
def test_header_of_every_variant(order, nano):
    header = decode_header(hand_packed(order, nano, linktype=113, snaplen=1500))
    assert header == FileHeader(113, 1500, nano, order == ">")
    assert header.encode() == hand_packed(order, nano, [], linktype=113, snaplen=1500)


@pytest.mark.parametrize("order,nano", VARIANTS)
def test_file_reader_reads_every_variant_with_offsets(order, nano):
    data = hand_packed(order, nano)
    reader = PcapReader(io.BytesIO(data), chunk=7)       # records span many reads
    records = reader.read(100)
    assert [r[1:] for r in records] == expected(nano)
    assert [r[0] for r in records] == [24, 24 + 16 + 5, 24 + 32 + 12]
    assert reader.finished and reader.damage is None and reader.records == 3


@pytest.mark.parametrize("order,nano", VARIANTS)
@pytest.mark.parametrize("step", [1, 7, 1000])
def test_stream_reader_reads_every_variant_in_any_chunking(order, nano, step):
    header, records = stream_records(hand_packed(order, nano), step)
    assert header is not None and header.nano == nano and header.big_endian == (order == ">")
    assert [r[1:] for r in records] == expected(nano)
    assert [r[0] for r in records] == [24, 24 + 16 + 5, 24 + 32 + 12]


@pytest.mark.parametrize("nano", [True, False])
@pytest.mark.parametrize("big_endian", [True, False])
def test_encoder_round_trips(nano, big_endian):
    data = encode_header(1, 65535, nano, big_endian) + b"".join(
        encode_record(ts, body, wirelen, nano, big_endian) for ts, body, wirelen in PACKETS)
    assert data == hand_packed(">" if big_endian else "<", nano,
                               [(ts, body, max(wirelen, len(body))) for ts, body, wirelen in PACKETS])


def test_reader_resumes_at_a_record_and_takes_what_was_read_already():
    data = hand_packed("<", True)
    second = 24 + 16 + 5
    assert [r[0] for r in PcapReader(io.BytesIO(data), start=second).read(10)] == [second, 68]
    file = io.BytesIO(data)
    head = file.read(30)                                  # as a caller telling the format
    assert [r[1:] for r in PcapReader(file, head=head).read(10)] == expected(True)


def test_writer_chunks_a_whole_file():
    writer = PcapWriter(1, 65535, flush_at=40)
    chunks = [writer.add(*packet) for packet in PACKETS] + [writer.flush()]
    assert chunks[0] is None and chunks[1] is not None     # flushed past 40 bytes of records
    assert b"".join(c for c in chunks if c) == hand_packed("<", True)
    assert PcapWriter(1, 65535).flush() == hand_packed("<", True, [])


@pytest.mark.parametrize("cut,what,at", [
    (5, "truncated packet record header", 68),
    (16 + 3, "truncated packet record", 68),
])
def test_truncated_record_is_named_with_its_offset(cut, what, at):
    data = hand_packed("<", True, PACKETS[:2] + [(T0 + 5, b"third", 5)])
    data = data[:at + cut]
    reader = PcapReader(io.BytesIO(data))
    assert [r[1:] for r in reader.read(10)] == expected(True)[:2]
    assert reader.finished and reader.damage is not None
    assert (reader.damage.what, reader.damage.offset) == (what, at)
    assert str(reader.damage) == f"{what} at byte {at}"
    with pytest.raises(PcapFormatError, match=f"^{what} at byte {at}$"):
        stream_records(data, 9)


def test_record_longer_than_the_limit_is_damage_after_the_records_before_it():
    data = hand_packed("<", True, PACKETS[:1]) + struct.pack("<IIII", 1, 0, 0x7FFFFFFF, 1)
    reader = PcapReader(io.BytesIO(data))
    assert len(reader.read(10)) == 1
    assert str(reader.damage) == f"packet length {0x7FFFFFFF} larger than {MAX_SNAPLEN} at byte 45"
    assert reader.limit == MAX_SNAPLEN                   # snaplen 65535: libpcap's maximum rules

    async def go():
        async def one():
            yield data
        stream = PcapStream(one(), limit=1 << 20)
        await stream.read_header()
        first = await stream.next()                      # handed out before the damage
        with pytest.raises(PcapFormatError, match="packet length 2147483647 larger than 1048576 at byte 45"):
            await stream.next()
        return first
    assert asyncio.run(go())[1:] == expected(True)[0]


@pytest.mark.parametrize("raw,message", [
    (b"GET / HTTP/1.1\r\n\r\n" + b"x" * 10,
     "not a pcap file (magic 0x20544547, expected 0xa1b2c3d4 or 0xa1b23c4d in either byte order)"),
    (struct.pack(">I", 0xA1B23C4D) + b"\x00" * 6, "truncated pcap file header (10 of 24 bytes)"),
    (b"\xa1", "truncated pcap file header (1 of 24 bytes)"),
])
def test_bad_file_header_says_what(raw, message):
    with pytest.raises(PcapFormatError) as error:
        PcapReader(io.BytesIO(raw))
    assert str(error.value) == message


def test_stream_header_errors():
    with pytest.raises(PcapFormatError, match=r"^the stream ended inside the pcap header \(10 of 24"):
        stream_records(hand_packed("<", True)[:10], 3)
    with pytest.raises(PcapFormatError, match="^not a pcap file"):
        stream_records(b"<html>not a pcap</html>" * 2, 5)
    assert stream_records(b"", 5) == (None, [])
