"""worker.dissectors.stream: the reader every dissector builds on, through a toy protocol.

The toy protocol: each message is a 1-byte kind, a 4-byte big-endian body length and the body;
a kind of 0 is not a message (the reader then looks for the next non-zero byte)."""

from __future__ import annotations

from worker.dissectors.base import Direction
from worker.dissectors.stream import (Frame, LengthPrefixedReader, Span, StreamReader,
                                      TwoWaySession)
from worker.packet import PacketRef

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
KEEP = 8


def message(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(4, "big") + body


class ToyReader(LengthPrefixedReader):
    __slots__ = ()

    def parse(self, work: bytes | bytearray, base: int, ts: int, ref: PacketRef) -> int:
        n, pos = len(work), 0
        while pos < n:
            if work[pos] == 0:                      # not a message start: pass over it
                self.skipped += 1
                pos += 1
                continue
            if n - pos < 5:
                break
            kind, size = work[pos], int.from_bytes(work[pos + 1:pos + 5], "big")
            keep = self.sink.keep(self.direction, kind, size)
            if n - pos >= 5 + size:
                self.frame(kind, bytes(work[pos + 5:pos + 5 + min(keep, size)]), base + pos,
                           base + pos + 5 + size, ts, ref)
                pos += 5 + size
            elif keep < size and n - pos >= 5 + keep:
                self.skip(kind, bytes(work[pos + 5:pos + 5 + keep]), base + pos, 5 + size)
                return n
            else:
                break
        return pos

    def lose(self, offset: int, end: int, ts: int) -> None:
        self.sink.on_lost(self.direction, "gap", offset, end, ts, (0, 0))


class ToySession(TwoWaySession):
    def __init__(self) -> None:
        self.frames: list[tuple[Direction, Frame]] = []
        self.lost: list[tuple[Direction, int, int]] = []
        super().__init__(ToyReader(self, C2S), ToyReader(self, S2C))

    def keep(self, direction: Direction, kind: int, size: int) -> int:
        return min(size, KEEP)

    def on_frame(self, direction: Direction, frame: Frame) -> None:
        self.frames.append((direction, frame))

    def on_lost(self, direction: Direction, why: str, start: int, end: int, ts: int,
                ref: PacketRef) -> None:
        self.lost.append((direction, start, end))

    def on_close(self, ts_ns: int) -> None:
        for reader in self.readers:
            reader.finish(ts_ns)


def feed_split(session: ToySession, direction: Direction, data: bytes, cuts: list[int],
               start: int = 0) -> None:
    """data as chunks cut at `cuts`; chunk i has ts 100 + i and ref (0, i)."""
    bounds = [0, *cuts, len(data)]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        session.on_data(direction, data[a:b], start + a, 100 + i, (0, i))


def test_messages_whole_and_split_say_where_their_first_and_last_bytes_came():
    session = ToySession()
    data = message(1, b"abc") + message(2, b"de")
    feed_split(session, C2S, data, [6, 9])   # the first message spans chunks 0 and 1
    assert [(f.kind, f.body) for _, f in session.frames] == [(1, b"abc"), (2, b"de")]
    first, second = session.frames[0][1].span, session.frames[1][1].span
    assert first == Span(0, 8, 100, (0, 0), 101, (0, 1))
    assert second == Span(8, 15, 101, (0, 1), 102, (0, 2))
    assert session.client.buf == b"" and session.client.marks == []


def test_every_chunking_gives_the_same_frames():
    data = message(1, b"abc") + b"\x00\x00" + message(2, b"") + message(3, b"fgh")
    whole = ToySession()
    whole.on_data(C2S, data, 0, 1, (0, 0))
    expected = [(f.kind, f.body, f.span.start, f.span.end) for _, f in whole.frames]
    for cut in range(1, len(data)):
        split = ToySession()
        split.on_data(C2S, data[:cut], 0, 1, (0, 0))
        split.on_data(C2S, data[cut:], cut, 2, (0, 1))
        assert [(f.kind, f.body, f.span.start, f.span.end) for _, f in split.frames] == expected
        assert split.skipped_bytes == 2


def test_a_long_body_is_skipped_by_length_and_delivered_from_its_head():
    session = ToySession()
    body = bytes(range(100))
    feed_split(session, S2C, message(7, body) + message(1, b"x"), [20, 60])
    (_, big), (_, small) = session.frames
    assert big.kind == 7 and big.body == body[:KEEP] and not big.cut
    assert big.span == Span(0, 105, 100, (0, 0), 102, (0, 2))
    assert small.body == b"x" and small.span.start == 105
    assert session.server.buf == b"" and session.server.pending is None


def test_a_gap_inside_a_skipped_body_only_cuts_it():
    session = ToySession()
    data = message(7, bytes(100)) + message(1, b"x")
    session.on_data(C2S, data[:20], 0, 1, (0, 0))
    session.on_gap(C2S, 20, 30, 2)
    session.on_data(C2S, data[50:], 50, 3, (0, 3))
    (_, big), (_, small) = session.frames
    assert big.cut and big.span.end == 105 and small.body == b"x"
    assert session.lost == []


def test_a_gap_outside_a_body_is_reported_and_reading_goes_on_after_it():
    session = ToySession()
    data = message(1, b"abc") + message(2, b"de")
    session.on_data(C2S, data[:4], 0, 1, (0, 0))
    session.on_gap(C2S, 4, 4, 2)
    session.on_data(C2S, data[8:], 8, 3, (0, 3))
    assert session.lost == [(C2S, 4, 8)]
    assert [(f.kind, f.span.start) for _, f in session.frames] == [(2, 8)]


def test_a_chunk_after_a_hole_reports_the_hole_first_and_overlaps_are_dropped():
    session = ToySession()
    data = message(1, b"abc") + message(2, b"de")
    session.on_data(C2S, data[:8], 0, 1, (0, 0))
    session.on_data(C2S, data[:8], 0, 2, (0, 1))      # a retransmission: nothing new
    session.on_data(C2S, data[10:], 10, 3, (0, 2))    # two bytes lost
    assert session.lost == [(C2S, 8, 10)]
    assert len(session.frames) == 1


def test_the_end_of_the_flow_delivers_a_skipped_message_cut():
    session = ToySession()
    session.on_data(C2S, message(7, bytes(100))[:30], 0, 1, (0, 0))
    session.on_close(9)
    (_, big), = session.frames
    assert big.cut and big.span.end == 30 and big.span.last_ref == (0, 0)
    session.on_data(C2S, b"more", 30, 10, (0, 1))     # a closed reader reads nothing
    assert len(session.frames) == 1


class LineReader(StreamReader):
    """A plain reader (take not overridden): lines, each with the span of its bytes."""

    __slots__ = ("lines",)

    def __init__(self) -> None:
        super().__init__(C2S)
        self.lines: list[tuple[bytes, Span]] = []

    def parse(self, work: bytes | bytearray, base: int, ts: int, ref: PacketRef) -> int:
        pos = 0
        while (nl := work.find(b"\n", pos)) >= 0:
            self.lines.append((bytes(work[pos:nl]), self.span_of(base + pos, base + nl + 1)))
            pos = nl + 1
        return pos

    def lose(self, offset: int, end: int, ts: int) -> None:
        pass


def test_a_plain_reader_keeps_what_parse_left_with_the_marks_of_its_chunks():
    reader = LineReader()
    assert reader.direct
    offset = 0
    for i, chunk in enumerate([b"ab\ncd", b"e", b"\nf", b"\n"]):
        reader.feed(chunk, offset, 100 + i, (0, i))
        offset += len(chunk)
    assert [(line, span.first_ref, span.last_ref) for line, span in reader.lines] == [
        (b"ab", (0, 0), (0, 0)), (b"cde", (0, 0), (0, 2)), (b"f", (0, 2), (0, 3))]
    assert reader.buf == b"" and reader.marks == [] and reader.expected == 9
    assert not ToyReader(ToySession(), C2S).direct      # it overrides take: feed calls it
