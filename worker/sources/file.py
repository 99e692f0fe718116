"""`--pcap FILE`: replay a pcap or pcapng file, as fast as it parses, through the live path.

Streaming parsers of our own (not dpkt) so that damage is located: shark/pcap.py for pcap, the
pcapng blocks here. A header that is not pcap or pcapng fails at open; damage later (a
truncated record or block, an absurd length) stops the replay there, keeps what was read and
says where in stats().error.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from shark import pcap
from worker.packet import RawPacket
from worker.records import EnhancedInterface, decode_enhanced, decode_packets
from worker.sources.base import CaptureError, SourceStats
from worker.sources.bpf import UserFilter, compile_bpf

_CHUNK = 1 << 20
_MAX_BLOCK = 16 << 20           # libpcap's limit on a pcapng block

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER = 0x1A2B3C4D
_IDB, _OPB, _SPB, _EPB = 1, 2, 3, 6


class _Buffer:
    """A window on a file read in chunks; `base` is the file offset of data[0]."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.data = b""
        self.pos = 0
        self.base = 0

    def ensure(self, n: int) -> bool:
        """Make n bytes available at pos; False if the file ends first."""
        available = len(self.data) - self.pos
        if available >= n:
            return True
        rest = self.data[self.pos:]
        self.base += self.pos
        self.pos = 0
        self.data = rest + self.file.read(max(n - available, _CHUNK))
        return len(self.data) >= n

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def at_end(self) -> bool:
        return not self.ensure(1)


class _Interface:
    __slots__ = ("linktype", "snaplen", "multiplier", "divisor", "offset_ns")

    def __init__(self, linktype: int, snaplen: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.multiplier, self.divisor = 1000, 1   # default resolution: microseconds
        self.offset_ns = 0

    def set_resolution(self, tsresol: int) -> None:
        exponent = tsresol & 0x7F
        if tsresol & 0x80:
            self.multiplier, self.divisor = 1_000_000_000, 1 << exponent
        elif exponent <= 9:
            self.multiplier, self.divisor = 10 ** (9 - exponent), 1
        else:
            self.multiplier, self.divisor = 1, 10 ** (exponent - 9)

    def ns(self, units: int) -> int:
        return units * self.multiplier // self.divisor + self.offset_ns


class FileSource:
    """A finite source: read_batch returns packets until the file ends or is damaged."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._label = os.path.basename(path) or path
        self.name = f"file:{self._label}"
        try:
            self._file: BinaryIO = open(path, "rb")
        except OSError as error:
            raise CaptureError(f"{path}: cannot open: {error.strerror or error}") from None
        self._buffer = _Buffer(self._file)
        self._finished = False
        self._error = ""
        self._packets = 0        # records parsed (the packet number of the last one)
        self._received = 0       # packets handed out (after the BPF filter)
        self._skipped = 0        # pcapng packets of an interface with another linktype
        self._filter: UserFilter | None = None
        self._interfaces: list[_Interface] = []
        self._enhanced: list[EnhancedInterface] | None = None   # decode_enhanced's, made anew
        self._last_ts = 0
        try:
            self._open()
        except CaptureError:
            self._file.close()
            raise

    # -- header ---------------------------------------------------------------------------

    def _open(self) -> None:
        buffer = self._buffer
        if not buffer.ensure(4):
            raise CaptureError(f"{self._label}: not a pcap or pcapng file "
                               f"({len(buffer.data)} bytes, too short)")
        magic_le = struct.unpack_from("<I", buffer.data, 0)[0]
        magic_be = struct.unpack_from(">I", buffer.data, 0)[0]
        if magic_le == PCAPNG_SHB:
            self._format = "pcapng"
            self._order = "<"
            self.linktype, self.snaplen = -1, 0
            self._read_pcapng(1 << 30, until_interface=True)
            if self._error:
                raise CaptureError(self._error)
            if self.linktype < 0:
                raise CaptureError(f"{self._label}: pcapng file without an interface "
                                   f"description block")
            return
        if pcap.identify(buffer.data) is None:
            raise CaptureError(f"{self._label}: not a pcap or pcapng file (magic 0x{magic_be:08x})")
        self._format = "pcap"
        try:
            self._pcap = pcap.PcapReader(self._file, head=buffer.data)
        except pcap.PcapFormatError as error:
            raise CaptureError(f"{self._label}: {error}") from None
        self.linktype = self._pcap.header.linktype
        self.snaplen = self._pcap.header.snaplen or pcap.MAX_SNAPLEN

    # -- Source protocol ------------------------------------------------------------------

    def fileno(self) -> int | None:
        return None

    @property
    def finished(self) -> bool:
        return self._finished

    def read_batch(self, max_packets: int) -> list[RawPacket]:
        while not self._finished:
            if self._format == "pcap":
                packets = self._read_pcap(max_packets)
            else:
                packets = self._read_pcapng(max_packets)
            if self._filter is not None:
                accepts = self._filter.accepts
                packets = [p for p in packets if accepts(p[1], p[2])]
            if self._finished:
                self._file.close()  # nothing more to read: give the descriptor back now
            if packets:
                self._received += len(packets)
                return packets
        return []

    def set_filter(self, bpf: str) -> None:
        self._filter = UserFilter(compile_bpf(bpf, self.linktype, self.snaplen)) if bpf else None

    def stats(self) -> SourceStats:
        error = self._error
        if self._skipped:
            note = (f"{self._label}: skipped {self._skipped} packets of interfaces whose "
                    f"linktype is not {self.linktype}")
            error = f"{error}; {note}" if error else note
        return SourceStats(name=self.name, kind="file", received=self._received,
                           skipped=self._skipped, finished=self._finished, error=error)

    @property
    def skipped(self) -> int:
        return self._skipped

    def close(self) -> None:
        self._finished = True
        self._file.close()

    # -- parsing --------------------------------------------------------------------------

    def _stop(self, what: str, offset: int, in_packet: bool = True) -> None:
        """Damage: stop the replay here, keeping everything read before it."""
        kept = self._packets
        where = f"packet {kept + 1}" if in_packet else f"after packet {kept}"
        self._error = (f"{self._label}: {what} at byte {offset} ({where}); "
                       f"kept {kept} packets")
        self._finished = True

    def _read_pcap(self, max_packets: int) -> list[RawPacket]:
        reader = self._pcap
        packets = reader.read_as(decode_packets, max_packets)
        self._packets += len(packets)
        if reader.damage is not None:
            self._stop(reader.damage.what, reader.damage.offset or 0)
        elif reader.finished:
            self._finished = True
        return packets

    def _read_pcapng(self, max_packets: int, until_interface: bool = False) -> list[RawPacket]:
        buffer = self._buffer
        packets: list[RawPacket] = []
        while len(packets) < max_packets:
            if until_interface and self.linktype >= 0:
                break
            if self._order == "<" and not until_interface:   # the common blocks, compiled
                if self._enhanced is None:
                    self._enhanced = [
                        EnhancedInterface(i.linktype == self.linktype,
                                          i.multiplier if i.divisor == 1 else 0, i.offset_ns)
                        for i in self._interfaces]
                buffer.pos, blocks, skipped, self._last_ts = decode_enhanced(
                    buffer.data, buffer.pos, self._enhanced, max_packets - len(packets),
                    packets, self._last_ts)
                self._packets += blocks
                self._skipped += skipped
                if len(packets) >= max_packets:
                    break
            offset = buffer.offset
            if not buffer.ensure(12):
                if buffer.at_end():
                    self._finished = True
                else:
                    self._stop("truncated block header", offset, in_packet=False)
                break
            data, pos = buffer.data, buffer.pos
            order = self._order
            block_type = struct.unpack_from(order + "I", data, pos)[0]
            if block_type == PCAPNG_SHB:
                magic = data[pos + 8:pos + 12]
                if magic == b"\x4d\x3c\x2b\x1a":
                    order = self._order = "<"
                elif magic == b"\x1a\x2b\x3c\x4d":
                    order = self._order = ">"
                elif offset == 0:
                    raise CaptureError(f"{self._label}: not a pcapng file (byte-order magic "
                                       f"0x{magic.hex()})")
                else:
                    self._stop("bad section header byte-order magic", offset, in_packet=False)
                    break
            length = struct.unpack_from(order + "I", data, pos + 4)[0]
            is_packet = block_type in (_EPB, _SPB, _OPB)
            if length < 12 or length % 4 or length > _MAX_BLOCK:
                self._stop(f"bad block length {length}", offset, is_packet)
                break
            if not buffer.ensure(length):
                self._stop(f"truncated block (type 0x{block_type:x}, {length} bytes)", offset,
                           is_packet)
                break
            data, pos = buffer.data, buffer.pos
            if struct.unpack_from(order + "I", data, pos + length - 4)[0] != length:
                self._stop("block length mismatch", offset, is_packet)
                break
            body = data[pos + 8:pos + length - 4]
            buffer.pos = pos + length
            if is_packet:
                problem = self._packet_block(block_type, body, order, packets)
                if problem:
                    buffer.pos = pos
                    self._stop(problem, offset)
                    break
            elif block_type == _IDB:
                if len(body) < 8:
                    buffer.pos = pos
                    self._stop("interface description block too short", offset, False)
                    break
                self._add_interface(body, order)
            elif block_type == PCAPNG_SHB:
                self._interfaces = []  # a new section starts its own interface numbering
                self._enhanced = None
            # Other blocks (name resolution, statistics, custom, ...) carry no packets.
        return packets

    def _add_interface(self, body: bytes, order: str) -> None:
        linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body, 0)
        interface = _Interface(linktype, snaplen)
        position = 8
        while position + 4 <= len(body):
            code, size = struct.unpack_from(order + "HH", body, position)
            value = body[position + 4:position + 4 + size]
            if code == 0 or len(value) < size:
                break
            if code == 9 and size >= 1:            # if_tsresol
                interface.set_resolution(value[0])
            elif code == 14 and size >= 8:         # if_tsoffset, seconds
                interface.offset_ns = struct.unpack_from(order + "q", value)[0] * 1_000_000_000
            position += 4 + (size + 3) // 4 * 4
        self._interfaces.append(interface)
        self._enhanced = None
        if self.linktype < 0:
            self.linktype, self.snaplen = linktype, snaplen or pcap.MAX_SNAPLEN

    def _packet_block(self, block_type: int, body: bytes, order: str,
                      packets: list[RawPacket]) -> str:
        """Append the block's packet; returns what is wrong with it, or ""."""
        if block_type == _EPB:
            if len(body) < 20:
                return "enhanced packet block too short"
            interface_id, high, low, caplen, wirelen = struct.unpack_from(order + "IIIII", body)
            start = 20
        elif block_type == _OPB:
            if len(body) < 20:
                return "packet block too short"
            interface_id, _drops, high, low, caplen, wirelen = struct.unpack_from(
                order + "HHIIII", body)
            start = 20
        else:  # simple packet block: interface 0, no timestamp
            if len(body) < 4:
                return "simple packet block too short"
            interface_id, high, low = 0, -1, 0
            wirelen = struct.unpack_from(order + "I", body)[0]
            caplen = min(wirelen, len(body) - 4)
            if self._interfaces and self._interfaces[0].snaplen:
                caplen = min(caplen, self._interfaces[0].snaplen)
            start = 4
        if interface_id >= len(self._interfaces):
            return f"packet on interface {interface_id} without an interface description block"
        if start + caplen > len(body):
            return f"packet length {caplen} larger than its block"
        interface = self._interfaces[interface_id]
        self._packets += 1
        if high >= 0:
            self._last_ts = interface.ns((high << 32) | low)
        if interface.linktype != self.linktype:
            self._skipped += 1
            return ""
        packets.append((self._last_ts, body[start:start + caplen], wirelen))
        return ""
