"""The classic pcap file format (libpcap 2.4), in one place for the store, the file source
and the hub: the constants, the file header and record encoded and decoded, a writer that
hands a file out in chunks, a reader over a file and a reader over an async byte stream.

A file starts with a 24-byte header whose magic says the byte order (the writer's) and the
timestamp resolution: 0xa1b2c3d4 microseconds, 0xa1b23c4d nanoseconds. Each record is a
16-byte header (seconds, fraction, captured length, length on the wire) and the captured bytes.
Decoding does no I/O: the readers feed it what they read. A Record is (offset of its record
header, ts in ns since the epoch, captured bytes, length on the wire); the offset counts from
the start of the file (the readers) or of the buffer given (decode_records).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from struct import Struct
from typing import BinaryIO, TypeVar

MAGIC_MICRO = 0xA1B2C3D4
MAGIC_NANO = 0xA1B23C4D
HEADER_SIZE = 24
RECORD_HEADER_SIZE = 16
# libpcap's MAXIMUM_SNAPLEN: what a capture writes at most per packet
MAX_SNAPLEN = 262144
NS = 1_000_000_000

_HEADERS = {False: Struct("<IHHiIII"), True: Struct(">IHHiIII")}  # by big_endian
_RECORDS = {False: Struct("<IIII"), True: Struct(">IIII")}
_MAGIC_LE = Struct("<I")
# The magic as read little endian -> (big endian, nanoseconds)
_MAGICS = {
    MAGIC_MICRO: (False, False), MAGIC_NANO: (False, True),
    0xD4C3B2A1: (True, False), 0x4D3CB2A1: (True, True),
}
# The link type is the low 16 bits; the upper ones may carry FCS information.
_LINKTYPE_MASK = 0x0FFFFFFF

Record = tuple[int, int, bytes, int]
T = TypeVar("T")


class PcapFormatError(ValueError):
    """Bytes that are not (or no longer) a pcap file: what is wrong and at which byte."""

    def __init__(self, what: str, offset: int | None = None) -> None:
        super().__init__(what if offset is None else f"{what} at byte {offset}")
        self.what = what
        self.offset = offset


@dataclass(frozen=True, slots=True)
class FileHeader:
    linktype: int
    snaplen: int
    nano: bool = True
    big_endian: bool = False
    major: int = 2
    minor: int = 4

    @property
    def ts_multiplier(self) -> int:
        """ns per unit of the records' fraction field."""
        return 1 if self.nano else 1000

    @property
    def record(self) -> Struct:
        """The record header in this file's byte order: (sec, frac, incl_len, orig_len)."""
        return _RECORDS[self.big_endian]

    def encode(self) -> bytes:
        magic = MAGIC_NANO if self.nano else MAGIC_MICRO
        return _HEADERS[self.big_endian].pack(magic, self.major, self.minor, 0, 0, self.snaplen,
                                              self.linktype)


def record_struct(big_endian: bool = False) -> Struct:
    """The record header (sec, frac, incl_len, orig_len) in one byte order."""
    return _RECORDS[big_endian]


def encode_header(linktype: int, snaplen: int, nano: bool = True, big_endian: bool = False) -> bytes:
    """A pcap file header, version 2.4."""
    return FileHeader(linktype, snaplen, nano, big_endian).encode()


def encode_record(ts_ns: int, data: bytes, wirelen: int, nano: bool = True,
                  big_endian: bool = False) -> bytes:
    """One record (header + data) for a file whose header has the same nano and byte order;
    a wire length below the captured one is raised to it."""
    sec, frac = divmod(ts_ns, NS)
    if not nano:
        frac //= 1000
    return _RECORDS[big_endian].pack(sec, frac, len(data), max(wirelen, len(data))) + data


def identify(raw: bytes) -> tuple[bool, bool] | None:
    """(big endian, nanoseconds) from a file's first 4 bytes; None when they are no pcap magic."""
    if len(raw) < 4:
        return None
    return _MAGICS.get(_MAGIC_LE.unpack_from(raw)[0])


def decode_header(raw: bytes) -> FileHeader:
    """The file header at the start of `raw`, in either byte order and resolution."""
    kind = identify(raw)
    if kind is None:
        if len(raw) < 4:
            raise PcapFormatError(f"truncated pcap file header ({len(raw)} of {HEADER_SIZE} bytes)")
        magic = _MAGIC_LE.unpack_from(raw)[0]
        raise PcapFormatError(f"not a pcap file (magic 0x{magic:08x}, expected 0x{MAGIC_MICRO:08x} "
                              f"or 0x{MAGIC_NANO:08x} in either byte order)")
    if len(raw) < HEADER_SIZE:
        raise PcapFormatError(f"truncated pcap file header ({len(raw)} of {HEADER_SIZE} bytes)")
    big_endian, nano = kind
    _magic, major, minor, _zone, _sigfigs, snaplen, linktype = _HEADERS[big_endian].unpack_from(raw)
    return FileHeader(linktype & _LINKTYPE_MASK, snaplen, nano, big_endian, major, minor)


class Stop(enum.Enum):
    """Why decode_records stopped."""
    FULL = "full"            # max_records were decoded
    MORE = "more"            # the next record is not whole in the buffer (or the buffer ended)
    TOO_LONG = "too long"    # the next record's captured length is above the limit: damage


def decode_records(buf: bytes, pos: int, header: FileHeader, limit: int, max_records: int,
                   out: list[Record], base: int = 0) -> tuple[int, Stop]:
    """Append the whole records of buf from pos on (a record boundary) to `out`, at most
    max_records, their offsets counted from `base` (the offset of buf[0] in the file);
    returns the position in buf after the last one and why it stopped there."""
    unpack = header.record.unpack_from
    mult = header.ts_multiplier
    append = out.append
    end = len(buf)
    full = len(out) + max_records
    while len(out) < full:
        if pos + RECORD_HEADER_SIZE > end:
            return pos, Stop.MORE
        sec, frac, incl, orig = unpack(buf, pos)
        if incl > limit:
            return pos, Stop.TOO_LONG
        start = pos + RECORD_HEADER_SIZE
        stop = start + incl
        if stop > end:
            return pos, Stop.MORE
        append((base + pos, sec * NS + frac * mult, buf[start:stop], orig))
        pos = stop
    return pos, Stop.FULL


def whole_records_end(buf: bytes | memoryview, pos: int, header: FileHeader,
                      limit: int) -> int:
    """The offset just after the last whole record (captured length within limit) from pos."""
    unpack = header.record.unpack_from
    end = len(buf)
    while pos + RECORD_HEADER_SIZE <= end:
        incl = unpack(buf, pos)[2]
        if incl > limit or pos + RECORD_HEADER_SIZE + incl > end:
            break
        pos += RECORD_HEADER_SIZE + incl
    return pos


def _record_error(stop: Stop, buf: bytes, pos: int, base: int, header: FileHeader,
            limit: int) -> PcapFormatError:
    """What is wrong with the record at buf[pos] (file offset base + pos) that cannot be read."""
    if stop is Stop.TOO_LONG:
        incl = header.record.unpack_from(buf, pos)[2]
        return PcapFormatError(f"packet length {incl} larger than {limit}", base + pos)
    if len(buf) - pos < RECORD_HEADER_SIZE:
        return PcapFormatError("truncated packet record header", base + pos)
    return PcapFormatError("truncated packet record", base + pos)


# What decode_records is: (buf, pos, header, limit, max_records, out, base) -> (pos, Stop).
Decoder = Callable[[bytes, int, FileHeader, int, int, list[T], int], tuple[int, Stop]]


class PcapWriter:
    """A pcap file encoded for a streamed answer: `add` returns a chunk of about `flush_at`
    bytes when one is full, `flush` what is left (the header alone for a file without
    records)."""

    def __init__(self, linktype: int, snaplen: int, *, nano: bool = True,
                 flush_at: int = 256 * 1024) -> None:
        self._nano = nano
        self._flush_at = flush_at
        self._parts = [encode_header(linktype, snaplen, nano)]
        self._size = 0

    def add(self, ts_ns: int, data: bytes, wirelen: int) -> bytes | None:
        record = encode_record(ts_ns, data, wirelen, self._nano)
        self._parts.append(record)
        self._size += len(record)
        if self._size < self._flush_at:
            return None
        return self.flush()

    def flush(self) -> bytes:
        chunk = b"".join(self._parts)
        self._parts, self._size = [], 0
        return chunk


class PcapReader:
    """The records of a pcap file, read in chunks. The header is checked at open
    (PcapFormatError); a damaged record later (truncated, longer than `limit`) ends the
    reading: read() returns the records before it and `damage` says what and where."""

    def __init__(self, file: BinaryIO, *, limit: int | None = None, start: int = HEADER_SIZE,
                 chunk: int = 1 << 20, head: bytes = b"") -> None:
        """`start`: the offset of the first record to read (a record boundary); `head`: what
        the caller read already from the start of the file (to tell its format)."""
        self._file = file
        self._chunk = chunk
        raw = head + file.read(max(0, HEADER_SIZE - len(head)))
        self.header = decode_header(raw)
        # By default as libpcap: a record may be as long as the larger of snaplen and its maximum.
        self.limit = max(self.header.snaplen, MAX_SNAPLEN) if limit is None else limit
        self._buf = raw[HEADER_SIZE:]
        self._pos = 0
        self._base = HEADER_SIZE     # file offset of _buf[0]
        if start > HEADER_SIZE:
            file.seek(start)
            self._buf, self._base = b"", start
        self.damage: PcapFormatError | None = None
        self.finished = False
        self.records = 0             # records read so far

    def read(self, max_records: int) -> list[Record]:
        """Up to max_records records; fewer only at the end of the file or at damage."""
        return self.read_as(decode_records, max_records)

    def read_as(self, decode: Decoder[T], max_records: int) -> list[T]:
        """read() with another decoder of the records: decode_records' arguments and answer,
        what it appends its own (worker.records.decode_packets: the capture's RawPackets)."""
        out: list[T] = []
        while not self.finished and len(out) < max_records:
            pos, stop = decode(self._buf, self._pos, self.header, self.limit,
                               max_records - len(out), out, self._base)
            self._pos = pos
            if stop is Stop.MORE and self._fill():
                continue
            if stop is not Stop.FULL:
                self.finished = True
                if pos < len(self._buf) or stop is Stop.TOO_LONG:
                    self.damage = _record_error(stop, self._buf, pos, self._base, self.header, self.limit)
        self.records += len(out)
        return out

    def _fill(self) -> bool:
        """Read more after the buffer's unread part (a chunk, or what the record begun there
        needs if more); False at the end of the file."""
        rest = len(self._buf) - self._pos
        need = RECORD_HEADER_SIZE
        if rest >= RECORD_HEADER_SIZE:
            need += self.header.record.unpack_from(self._buf, self._pos)[2]
        more = self._file.read(max(self._chunk, need - rest))
        if not more:
            return False
        self._base += self._pos
        self._buf = self._buf[self._pos:] + more
        self._pos = 0
        return True

    def __iter__(self) -> Iterator[Record]:
        while not self.finished:
            yield from self.read(1024)


class PcapStream:
    """A pcap file arriving as chunks of bytes (an HTTP body): read_header() once, then
    next() per record. Holds one chunk and the records decoded from it; a stream that ends
    inside a header or a record, or a record longer than `limit`, is a PcapFormatError."""

    def __init__(self, chunks: AsyncIterator[bytes], *, limit: int = 1 << 20) -> None:
        self._chunks = chunks.__aiter__()
        self.limit = limit
        self.header: FileHeader | None = None
        self._buf = b""
        self._base = 0               # stream offset of _buf[0]
        self._ready: deque[Record] = deque()
        self._damage: PcapFormatError | None = None
        self._ended = False

    async def _more(self) -> bool:
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._ended = True
            return False
        self._buf += chunk           # (after the decoded records were cut off: one chunk or so)
        return True

    async def read_header(self) -> FileHeader | None:
        """The file header; None when the stream ends without a byte."""
        while len(self._buf) < HEADER_SIZE and await self._more():
            pass
        if not self._buf:
            return None
        if len(self._buf) < HEADER_SIZE and identify(self._buf) is not None:
            raise PcapFormatError(f"the stream ended inside the pcap header "
                                  f"({len(self._buf)} of {HEADER_SIZE} bytes)")
        self.header = decode_header(self._buf)
        self._buf = self._buf[HEADER_SIZE:]
        self._base = HEADER_SIZE
        return self.header

    async def next(self) -> Record | None:
        """The next record (its offset in the stream), None at the end of a whole file (or of
        a stream without a byte)."""
        header = self.header
        if header is None:
            header = await self.read_header()
            if header is None:
                return None
        while not self._ready:
            if self._damage is not None:
                raise self._damage
            out: list[Record] = []
            pos, stop = decode_records(self._buf, 0, header, self.limit, 1 << 30, out, self._base)
            self._ready.extend(out)
            if stop is Stop.TOO_LONG:     # raised once the records before it are handed out
                self._damage = _record_error(stop, self._buf, pos, self._base, header, self.limit)
            self._buf = self._buf[pos:]
            self._base += pos
            if self._ready or self._damage is not None:
                continue
            if self._ended or not await self._more():
                if self._buf:
                    raise _record_error(stop, self._buf, 0, self._base, header, self.limit)
                return None
        return self._ready.popleft()
