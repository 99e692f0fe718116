"""The capture process's per-record loops, compiled (shark.compiled): a replayed pcap file's
records read as RawPackets (worker.sources.file) and RawPackets packed as the store's records
(worker.store.segments).

Both run once per packet in the capture process, which on a worker of one CPU shares the core
with dissection (docs/BENCHMARKS.md, "The capture process's replay"). They give what
shark.pcap.decode_records and encode_record give, without a Record made per packet on the way
in; what they are given is assumed well formed: a malformed packet raises whatever its first
wrong operation raises, and the callers' plain loops then say which packet and what is wrong.
"""

from __future__ import annotations

import types
from typing import Final

from mypy_extensions import i64

from struct import Struct

from shark import pcap
from shark.pcap import FileHeader, Stop, record_struct
from worker.packet import RawPacket


def _probe() -> None:
    """Its type says whether this module runs compiled (a native function) or not."""


# As in worker.shard_filter: compiled, byte loads beat struct's tuple of four ints;
# interpreted, the tuple costs less.
_NATIVE: Final = not isinstance(_probe, types.FunctionType)
_STORE_RECORD: Final[Struct] = record_struct()   # the store's: little endian, nanoseconds
# shark.pcap's constants as this module's own Finals: compiled, a name imported from an
# interpreted module is a dict lookup at every use (and its arithmetic generic).
NS: Final = 1_000_000_000
RECORD_HEADER_SIZE: Final = 16
assert NS == pcap.NS and RECORD_HEADER_SIZE == pcap.RECORD_HEADER_SIZE


def decode_packets(buf: bytes, pos: int, header: FileHeader, limit: int, max_records: int,
                   out: list[RawPacket], base: int = 0) -> tuple[int, Stop]:
    """shark.pcap.decode_records (the same arguments, the same answer) appending RawPackets
    (ts_ns, data, wirelen) to `out` instead of Records: no offsets (`base` is not used)."""
    if _NATIVE and not header.big_endian:
        return _decode_little(buf, pos, header.ts_multiplier, limit, max_records, out)
    unpack = header.record.unpack_from
    append = out.append
    multiplier = header.ts_multiplier
    end = len(buf)
    read = 0
    while read < max_records:
        if pos + RECORD_HEADER_SIZE > end:
            return pos, Stop.MORE
        sec, frac, incl, wirelen = unpack(buf, pos)
        if incl > limit:
            return pos, Stop.TOO_LONG
        start = pos + RECORD_HEADER_SIZE
        stop = start + incl
        if stop > end:
            return pos, Stop.MORE
        append((sec * NS + frac * multiplier, buf[start:stop], wirelen))
        read += 1
        pos = stop
    return pos, Stop.FULL


def _decode_little(buf: bytes, pos: int, multiplier: i64, limit: int, max_records: int,
                   out: list[RawPacket]) -> tuple[int, Stop]:
    """decode_packets of a little-endian file, compiled: byte loads, the time in i64 (a tagged
    int's product is native only while both factors are below 2**31)."""
    end = len(buf)
    read = 0
    while read < max_records:
        if pos + RECORD_HEADER_SIZE > end:
            return pos, Stop.MORE
        incl = buf[pos + 8] | buf[pos + 9] << 8 | buf[pos + 10] << 16 | buf[pos + 11] << 24
        if incl > limit:
            return pos, Stop.TOO_LONG
        start = pos + RECORD_HEADER_SIZE
        stop = start + incl
        if stop > end:
            return pos, Stop.MORE
        sec: i64 = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16 | buf[pos + 3] << 24
        frac: i64 = buf[pos + 4] | buf[pos + 5] << 8 | buf[pos + 6] << 16 | buf[pos + 7] << 24
        wirelen = buf[pos + 12] | buf[pos + 13] << 8 | buf[pos + 14] << 16 | buf[pos + 15] << 24
        out.append((sec * NS + frac * multiplier, buf[start:stop], wirelen))
        read += 1
        pos = stop
    return pos, Stop.FULL


def pack_packets(packets: list[RawPacket], start: int, room: int, snaplen: int,
                 parts: list[bytes]) -> tuple[int, int]:
    """Append the store's record header and data of packets[start:] to `parts`, as many as fit
    in `room` bytes; returns (the index of the first packet left out, the bytes appended).
    Data beyond snaplen is cut; a wire length below the captured one is raised to it."""
    pack = _STORE_RECORD.pack
    size = 0
    for index in range(start, len(packets)):
        ts_ns, data, wirelen = packets[index]
        ts: i64 = ts_ns
        incl = len(data)
        if incl > snaplen:
            data = data[:snaplen]
            incl = snaplen
        if size + RECORD_HEADER_SIZE + incl > room:
            return index, size
        if wirelen < incl:
            wirelen = incl
        parts.append(pack(ts // NS, ts % NS, incl, wirelen))
        parts.append(data)
        size += RECORD_HEADER_SIZE + incl
    return len(packets), size
