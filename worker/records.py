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


# Whether the compiled build is in use: for all of shark.compiled's modules or none (its guard
# imports them all from their .py otherwise), so worker.flow_table and worker.shard_filter ask
# here. Compiled, byte loads beat struct's tuple of four ints; interpreted, the tuple costs less.
NATIVE: Final = not isinstance(_probe, types.FunctionType)
_STORE_RECORD: Final[Struct] = record_struct()   # the store's: little endian, nanoseconds
# shark.pcap's constants as this module's own Finals: compiled, a name imported from an
# interpreted module is a dict lookup at every use (and its arithmetic generic).
NS: Final = 1_000_000_000
RECORD_HEADER_SIZE: Final = 16
assert NS == pcap.NS and RECORD_HEADER_SIZE == pcap.RECORD_HEADER_SIZE


def u32le(buf: bytes, at: i64) -> i64:
    """The little-endian u32 at buf[at:at + 4]. Compiled, each byte an i64: a tagged int's
    shift is a call (CPyTagged_Lshift). worker.shard_filter reads its record headers so too."""
    b0: i64 = buf[at]
    b1: i64 = buf[at + 1]
    b2: i64 = buf[at + 2]
    b3: i64 = buf[at + 3]
    return b0 | b1 << 8 | b2 << 16 | b3 << 24


def decode_packets(buf: bytes, pos: int, header: FileHeader, limit: int, max_records: int,
                   out: list[RawPacket], base: int = 0) -> tuple[int, Stop]:
    """shark.pcap.decode_records (the same arguments, the same answer) appending RawPackets
    (ts_ns, data, wirelen) to `out` instead of Records: no offsets (`base` moves only those)."""
    if NATIVE and not header.big_endian:
        return _decode_little(buf, pos, header.ts_multiplier, limit, max_records, out)
    # Interpreted (or a big-endian file): the plain loop's Records, less their offsets.
    records: list[pcap.Record] = []
    pos, stop = pcap.decode_records(buf, pos, header, limit, max_records, records, base)
    out.extend([(ts_ns, data, wirelen) for _, ts_ns, data, wirelen in records])
    return pos, stop


def _decode_little(buf: bytes, pos: int, multiplier: i64, limit: int, max_records: int,
                   out: list[RawPacket]) -> tuple[int, Stop]:
    """decode_packets of a little-endian file, compiled: byte loads, the time in i64 (a tagged
    int's product is native only while both factors are below 2**31)."""
    end = len(buf)
    read = 0
    while read < max_records:
        if pos + RECORD_HEADER_SIZE > end:
            return pos, Stop.MORE
        incl = u32le(buf, pos + 8)
        if incl > limit:
            return pos, Stop.TOO_LONG
        start = pos + RECORD_HEADER_SIZE
        stop = start + incl
        if stop > end:
            return pos, Stop.MORE
        sec: i64 = u32le(buf, pos)
        frac: i64 = u32le(buf, pos + 4)
        wirelen = u32le(buf, pos + 12)
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


# pcapng's enhanced packet block: type, length, interface, ts high, ts low, caplen, wirelen.
_EPB: Final = 6
_EPB_FIXED: Final = 28          # the block's fields before the packet's bytes
_U32: Final[Struct] = Struct("<I")
_EPB_FIELDS: Final[Struct] = Struct("<IIIIIII")
_I64_MAX: Final = (1 << 63) - 1
_MAX_BLOCK: Final = 16 << 20      # as worker.sources.file: libpcap's limit on a block


class EnhancedInterface:
    """What decode_enhanced needs of a pcapng interface (worker.sources.file._Interface): whether
    its packets are kept (its linktype is the file's), and its time as units * multiplier +
    offset_ns; multiplier 0 when a division is needed (a binary resolution): such a packet is
    left to the caller."""

    def __init__(self, keep: bool, multiplier: int, offset_ns: int) -> None:
        self.keep = keep
        fits = 0 < multiplier <= _I64_MAX and abs(offset_ns) <= _I64_MAX // 2
        self.multiplier: i64 = multiplier if fits else 0
        self.offset_ns: i64 = offset_ns if fits else 0
        # the largest time in units whose ns fit an i64 (-1: none, all left to the caller)
        self.max_units: i64 = (_I64_MAX // 2 - abs(offset_ns)) // multiplier if fits else -1


def decode_enhanced(buf: bytes, pos: int, interfaces: list[EnhancedInterface], max_packets: int,
                    out: list[RawPacket], last_ts: int) -> tuple[int, int, int, int]:
    """The run of whole, well-formed little-endian enhanced packet blocks at buf[pos:], at most
    max_packets of them: their packets appended to `out` (those of a kept interface); returns
    (the position after the run, blocks read, packets skipped, the last block's time). It stops
    at anything else, a block that is not whole in buf, or one that is damaged, for the caller's
    block-by-block parser to read (and to name the damage)."""
    end = len(buf)
    blocks = 0
    skipped = 0
    count = len(interfaces)
    while blocks < max_packets and pos + _EPB_FIXED + 4 <= end:
        if NATIVE:
            kind = u32le(buf, pos)
            length = u32le(buf, pos + 4)
            interface_id = u32le(buf, pos + 8)
            high: i64 = u32le(buf, pos + 12)
            low: i64 = u32le(buf, pos + 16)
            caplen = u32le(buf, pos + 20)
            wirelen = u32le(buf, pos + 24)
        else:
            kind, length, interface_id, high, low, caplen, wirelen = _EPB_FIELDS.unpack_from(buf, pos)
        if kind != _EPB or length % 4 or length < _EPB_FIXED + 4 or length > _MAX_BLOCK \
                or pos + length > end \
                or _EPB_FIXED + caplen + 4 > length or interface_id >= count:
            break
        if NATIVE:
            at = pos + length - 4
            trailer = u32le(buf, at)
        else:
            trailer = _U32.unpack_from(buf, pos + length - 4)[0]
        if trailer != length:
            break
        interface = interfaces[interface_id]
        units: i64 = high << 32 | low
        if units > interface.max_units:
            break
        last_ts = units * interface.multiplier + interface.offset_ns
        if interface.keep:
            start = pos + _EPB_FIXED
            out.append((last_ts, buf[start:start + caplen], wirelen))
        else:
            skipped += 1
        blocks += 1
        pos += length
    return pos, blocks, skipped, last_ts
