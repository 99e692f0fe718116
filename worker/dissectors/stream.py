"""One direction of a TCP session, read once for every dissector.

A dissector's session owns two readers, one per direction (TwoWaySession). A StreamReader
takes the chunks the assembler hands to Session.on_data, drops what was already seen, reports
what was lost, buffers what the parser has not consumed with a mark per chunk (so a message
found in the buffer can say which packet its first and last bytes came in: a Span), trims
what was consumed and counts the bytes skipped while resyncing. The dissector writes only
`parse` (cut the buffer into messages) and `lose` (what a gap means to it).

LengthPrefixedReader adds what every protocol whose messages carry their length shares: a
message longer than what the session wants to keep is not buffered; its head is kept and the
rest skipped by length (the SKIP state), across chunks and gaps, and delivered as one Frame.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, Protocol, TypeVar

import msgspec
from mypy_extensions import mypyc_attr

from worker.dissectors.base import Direction
from worker.packet import PacketRef


def in_order(expected: int, data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(missing, data, offset) for a chunk at `offset` when `expected` is the next new byte:
    how many bytes were lost before it (report a gap of that length at `expected` first), and
    the chunk without what was already seen (a retransmitted overlap; empty if all of it)."""
    if offset > expected:
        return offset - expected, data, offset
    if offset < expected:
        return 0, data[expected - offset:], expected
    return 0, data, offset


# (stream offset where a chunk began, its ts, its ref): readers keep one per buffered chunk so
# a message found in the buffer can say which packet its first or last byte came in.
Mark = tuple[int, int, PacketRef]


def chunk_at(marks: list[Mark], offset: int) -> Mark:
    """The mark of the chunk holding stream byte `offset` (the first one if none is before)."""
    for mark in reversed(marks):
        if mark[0] <= offset:
            return mark
    return marks[0]


class Span(msgspec.Struct, frozen=True, gc=False):
    """Where a message lies: stream offsets [start, end) of its direction, and the time and
    packet of its first and of its last byte."""

    start: int
    end: int
    first_ts: int
    first_ref: PacketRef
    last_ts: int
    last_ref: PacketRef

    @property
    def size(self) -> int:
        return self.end - self.start


# Compiled (shark/compiled.py): other dissectors and tests subclass it in Python.
@mypyc_attr(allow_interpreted_subclasses=True)
class StreamReader(ABC):
    """Buffer, marks, offsets, gaps and skipped bytes of one direction.

    Subclasses write `parse` and `lose`; `feed`, `gap` and `close` are the session's calls."""

    __slots__ = ("direction", "buf", "base", "marks", "expected", "skipped", "dead", "last_ts",
                 "last_ref", "direct")

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.buf = bytearray()
        self.base = 0                   # stream offset of buf[0]
        self.marks: list[Mark] = []     # one per buffered chunk
        self.expected = 0               # the next new stream byte
        self.skipped = 0                # bytes passed over while looking for a message start
        self.dead = False
        self.last_ts = 0                # the time and packet of the last chunk taken
        self.last_ref: PacketRef = (0, 0)
        # A reader that overrides take (to act on in-order chunks before they are buffered)
        # gets every chunk through it; for the others feed does take's work itself while
        # nothing is buffered, so the commonest chunk costs one call: parse.
        self.direct = type(self).take is StreamReader.take

    # -- what a dissector writes --

    @abstractmethod
    def parse(self, work: bytes | bytearray, base: int, ts: int, ref: PacketRef) -> int:
        """Cut messages out of `work` (the buffered bytes and the chunk `ts`/`ref` just taken;
        work[0] is stream byte `base`): how many bytes of it were consumed (len(work) or more
        keeps none). Read `work` only: it may be the caller's chunk, not a copy."""

    @abstractmethod
    def lose(self, offset: int, end: int, ts: int) -> None:
        """Bytes [offset, end) were lost (noticed at time `ts`); called before the buffer
        is dropped."""

    # -- the session's calls --

    def feed(self, data: bytes, offset: int, ts: int, ref: PacketRef) -> None:
        if self.dead or not data:
            return
        if offset != self.expected:
            missing, data, offset = in_order(self.expected, data, offset)
            if missing:
                self.gap(self.expected, missing, ts)
            elif not data:
                return
        self.expected = offset + len(data)
        if self.buf or not self.direct:
            self.take(data, offset, ts, ref)
            return
        # take() for an empty buffer, inline
        self.last_ts, self.last_ref = ts, ref
        self.base = offset
        marks = self.marks
        if marks:                       # left by a reader that emptied its buffer itself
            marks.clear()
        marks.append((offset, ts, ref))
        pos = self.parse(data, offset, ts, ref)
        if pos >= len(data) or self.dead:
            self.marks.clear()
        else:
            self.buf = bytearray(data[pos:])
            self.base += pos

    def gap(self, offset: int, length: int, ts: int = 0) -> None:
        if self.dead or length <= 0:
            return
        end = offset + length
        self.lose(offset, end, ts)
        self.drop()
        self.expected = end

    def close(self) -> None:
        self.dead = True
        self.buf = bytearray()

    def held_bytes(self) -> int:
        """Bytes buffered and not parsed yet."""
        return len(self.buf)

    # -- for parsers --

    def take(self, data: bytes, offset: int, ts: int, ref: PacketRef) -> None:
        """Parse an in-order chunk after what is buffered; buffer what was not consumed (a
        chunk parsed whole is never copied): no call but parse, nothing allocated when all is
        consumed. feed does the same inline when nothing is buffered and take is not
        overridden; a reader overriding it calls it (super().take) to buffer and parse."""
        self.last_ts, self.last_ref = ts, ref
        buf = self.buf
        marks = self.marks
        work: bytes | bytearray
        if buf:
            buf += data
            work = buf
            base = self.base
        else:
            self.base = base = offset
            work = data
            if marks:                   # left by a reader that emptied its buffer itself
                marks.clear()
        marks.append((offset, ts, ref))
        pos = self.parse(work, base, ts, ref)
        if pos >= len(work) or self.dead:
            if work is buf:
                self.buf = bytearray()
            self.marks.clear()
            return
        if work is self.buf:
            if pos:
                del work[:pos]
        else:
            self.buf = bytearray(work[pos:])
        self.base += pos
        marks = self.marks
        while len(marks) > 1 and marks[1][0] <= self.base:
            marks.pop(0)

    def drop(self) -> None:
        self.buf = bytearray()
        self.marks = []

    def where(self, offset: int) -> Mark:
        """(chunk offset, ts, ref) of the buffered chunk holding stream byte `offset`."""
        return chunk_at(self.marks, offset)

    def last_mark(self, ts: int) -> tuple[int, PacketRef]:
        """The time and packet of the last chunk buffered (`ts` and no packet if none)."""
        if self.marks:
            _, ts, ref = self.marks[-1]
            return ts, ref
        return ts, (0, 0)

    def span_of(self, start: int, end: int) -> Span:
        """The span of buffered bytes [start, end), both ends looked up in the marks."""
        marks = self.marks
        _, first_ts, first_ref = chunk_at(marks, start)
        _, last_ts, last_ref = chunk_at(marks, end - 1)
        return Span(start, end, first_ts, first_ref, last_ts, last_ref)

    def span(self, start: int, end: int, ts: int, ref: PacketRef) -> Span:
        """The span of buffered bytes [start, end) whose last byte came in (ts, ref)."""
        _, first_ts, first_ref = chunk_at(self.marks, start)
        return Span(start, end, first_ts, first_ref, ts, ref)


class Frame(msgspec.Struct, frozen=True, gc=False):
    """One message of a length-prefixed protocol, as its reader hands it to the session."""

    kind: int              # the protocol's message type (PostgreSQL: type byte; MySQL: seq)
    body: bytes            # the body, cut to what FrameSink.keep asked for
    span: Span             # the whole message on the wire, header included
    cut: bool = False      # bytes of its skipped body were lost (a gap, the end of the flow)
    continued: bool = False   # it continues the previous message (MySQL's 16 MiB packets)


class FrameSink(Protocol):
    """What a LengthPrefixedReader calls on its session."""

    def keep(self, direction: Direction, kind: int, size: int) -> int:
        """How many of a `size`-byte body to copy; the rest is skipped by length."""

    def on_frame(self, direction: Direction, frame: Frame) -> None:
        """One message, whole or with its body cut to what keep asked for."""

    def on_lost(self, direction: Direction, why: str, start: int, end: int, ts: int,
                ref: PacketRef) -> None:
        """Bytes [start, end) were lost in a gap (why="gap") or are not a message where one
        should start ("malformed"); ts and ref say where the reader was."""



# What a LengthPrefixedReader delivers to and a TwoWaySession reads with: generic so that a
# dissector's session and reader see each other's own type (mypyc cannot narrow an attribute's
# type in a subclass as mypy lets a class annotation do).
_Sink = TypeVar("_Sink", bound=FrameSink)
_Reader = TypeVar("_Reader", bound=StreamReader)

# Compiled (shark/compiled.py): other dissectors and tests subclass it in Python.
@mypyc_attr(allow_interpreted_subclasses=True)
class LengthPrefixedReader(StreamReader, Generic[_Sink]):
    """A StreamReader whose parser knows each message's length: a message longer than what
    the sink keeps is delivered from its head, the rest skipped by length (SKIP)."""

    __slots__ = ("sink", "skip_left", "pending", "cut")

    def __init__(self, sink: _Sink, direction: Direction) -> None:
        super().__init__(direction)
        self.sink = sink
        self.skip_left = 0
        # (kind, head, start, first_ts, first_ref, continued) of the message being skipped
        self.pending: tuple[int, bytes, int, int, PacketRef, bool] | None = None
        self.cut = False            # the skipped message lost bytes in a gap

    def frame(self, kind: int, body: bytes, start: int, end: int, ts: int, ref: PacketRef,
              continued: bool = False) -> None:
        """Deliver a whole buffered message [start, end) whose last chunk came at ts/ref."""
        self.sink.on_frame(self.direction,
                           Frame(kind, body, self.span(start, end, ts, ref), False, continued))

    def skip(self, kind: int, head: bytes, start: int, total: int,
             continued: bool = False) -> None:
        """The message at `start` of `total` bytes is delivered with `head` once its last byte
        has passed; the parser stops here (the rest of what it was given is that message's)."""
        _, ts, ref = chunk_at(self.marks, start)
        self.pending = (kind, head, start, ts, ref, continued)
        self.skip_left = total - (self.expected - start)

    def take(self, data: bytes, offset: int, ts: int, ref: PacketRef) -> None:
        if self.pending is not None:
            take = min(self.skip_left, len(data))
            self.skip_left -= take
            if self.skip_left:
                return
            self._end_skip(offset + take, ts, ref)
            data, offset = data[take:], offset + take
            if not data:
                return
        self.chunk(data, offset, ts, ref)

    def chunk(self, data: bytes, offset: int, ts: int, ref: PacketRef) -> None:
        """An in-order chunk outside a skip (a parser may refuse it before it is buffered)."""
        StreamReader.take(self, data, offset, ts, ref)

    def gap(self, offset: int, length: int, ts: int = 0) -> None:
        if self.dead or length <= 0:
            return
        if self.pending is not None and self.skip_left > length:
            self.skip_left -= length     # only bytes of a skipped body were lost
            self.cut = True
            self.expected = offset + length
            return
        self.pending = None
        super().gap(offset, length, ts)

    def finish(self, ts: int) -> None:
        """The flow ended: deliver a message being skipped (cut), then stop."""
        if self.pending is not None and not self.dead:
            self.cut = True
            last_ts, last_ref = self.last_mark(ts)
            self._end_skip(self.expected, last_ts, last_ref)
        self.close()

    def close(self) -> None:
        super().close()
        self.pending = None

    def held_bytes(self) -> int:
        pending = self.pending
        return len(self.buf) + (len(pending[1]) if pending is not None else 0)

    def _end_skip(self, end: int, ts: int, ref: PacketRef) -> None:
        kind, head, start, first_ts, first_ref, continued = self.pending  # type: ignore[misc]
        self.pending = None
        cut, self.cut = self.cut, False
        self.sink.on_frame(self.direction, Frame(
            kind, head, Span(start, end, first_ts, first_ref, ts, ref), cut, continued))


# Compiled (shark/compiled.py): other dissectors and tests subclass it in Python.
@mypyc_attr(allow_interpreted_subclasses=True)
class TwoWaySession(Generic[_Reader]):
    """A session reading each direction with its own reader: the client's and the server's.

    Subclasses make the two readers and write on_close; `dead` stops both directions."""

    def __init__(self, client: _Reader, server: _Reader) -> None:
        self.client = client
        self.server = server
        self.readers = (client, server)       # indexed by Direction
        self.dead = False

    @property
    def skipped_bytes(self) -> int:
        """Bytes both readers passed over while looking for a message start."""
        return self.client.skipped + self.server.skipped

    def held_bytes(self) -> int:
        """What the readers buffer plus what the session keeps (kept_bytes); nothing once
        dead (closed, or given up: what it still references is no longer the flow's)."""
        if self.dead:
            return 0
        return self.client.held_bytes() + self.server.held_bytes() + self.kept_bytes()

    def kept_bytes(self) -> int:
        """Bytes the session keeps beyond its readers' buffers: bodies of messages waiting
        for their exchange, decoder tables. Sessions that keep any say how many."""
        return 0

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        if not self.dead:
            self.readers[direction].feed(data, offset, ts_ns, ref)

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        if not self.dead:
            self.readers[direction].gap(offset, length, ts_ns)
