"""Raw packets and the per-packet decode to a transport 5-tuple.

This is the hot path: no dpkt objects, no IP strings; addresses stay as packed bytes until an
Entry is made. Captures on lo carry invalid checksums (offload), so checksums are never checked.
"""

from __future__ import annotations

import socket
from struct import Struct
from typing import Final, NamedTuple

# A captured frame as sources yield it: (timestamp in ns since the epoch, captured bytes,
# original length on the wire). Plain tuples keep the capture path free of object overhead.
RawPacket = tuple[int, bytes, int]

# Where a packet lives in the store: (segment id, byte offset of its pcap record header).
PacketRef = tuple[int, int]

# A packet read back from the store: (where it is, linktype, ts_ns, captured bytes, wire length).
StoredPacket = tuple[PacketRef, int, int, bytes, int]
# The linktype of a StoredPacket that stands for a packet of another shard's flow, its bytes
# left out (worker.shard_filter): it only moves the dissection's clock and place.
FOREIGN: Final = -1

LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276
# Some libpcap builds report DLT_RAW as 12 or 14 instead of LINKTYPE_RAW.
_RAW_IP_LINKTYPES: Final = {LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6}

TCP: Final = 6
UDP: Final = 17
# Not an IP protocol number: Decoded.proto of an ICMP/ICMPv6 "port unreachable" about a UDP
# datagram, whose addresses and ports are those of that datagram (client -> server).
UNREACHABLE: Final = 256
_ICMP: Final = 1
_ICMPV6: Final = 58

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10

_u16: Final = Struct("!H")
_udp_ports: Final = Struct("!HH")
_ETH_VLAN: Final = {0x8100, 0x88A8, 0x9100}
_IPV6_EXTENSIONS: Final = {0, 43, 60}  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT: Final = 44


class Decoded(NamedTuple):
    proto: int      # TCP or UDP
    src: bytes      # packed address, 4 or 16 bytes
    sport: int
    dst: bytes
    dport: int
    flags: int      # TCP flags, 0 for UDP
    seq: int        # TCP sequence number, 0 for UDP
    payload: bytes
    ack: int = 0    # TCP acknowledgment number (valid when ACK is in flags), 0 for UDP
    window: int = -1  # TCP receive window (unscaled), -1 for UDP


def _network_offset(linktype: int, frame: bytes) -> tuple[int, int] | None:
    """(offset of the IP header, IP version) for a frame, or None if it carries no IP."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        ethertype = (frame[12] << 8) | frame[13]
        offset = 14
        while ethertype in _ETH_VLAN and len(frame) >= offset + 4:
            ethertype = (frame[offset + 2] << 8) | frame[offset + 3]
            offset += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        ethertype = (frame[14] << 8) | frame[15]
        offset = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        ethertype = (frame[0] << 8) | frame[1]
        offset = 20
    elif linktype in _RAW_IP_LINKTYPES:
        if not frame:
            return None
        version = frame[0] >> 4
        return (0, version) if version in (4, 6) else None
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 5:
            return None
        version = frame[4] >> 4
        return (4, version) if version in (4, 6) else None
    else:
        return None
    if ethertype == 0x0800:
        return offset, 4
    if ethertype == 0x86DD:
        return offset, 6
    return None


# decode_fields' result: (proto, key, sport, dport, flags, seq, payload, ack, window), proto
# NOTHING when the frame has no flow. The key is the source and destination addresses then
# ports, as they lie in the headers: for IPv4 without options one slice of the frame (the
# assembler's flow key, worker.assembler.flows). A fixed-length tuple of these types is,
# compiled, a C struct returned by value to a compiled caller: no tuple and no int objects per
# packet (Dissection.feed -> Assembler.packet_fields), where a Decoded was a tuple of 10, two
# address slices and its sequence numbers and ports boxed.
Fields = tuple[int, bytes, int, int, int, int, bytes, int, int]
NOTHING: Final = 0     # not an IP protocol decode gives (TCP, UDP, UNREACHABLE)
_NO_FIELDS: Final[Fields] = (NOTHING, b"", 0, 0, 0, 0, b"", 0, -1)


def decode(linktype: int, frame: bytes) -> Decoded | None:
    """The TCP or UDP 5-tuple and payload of a frame; None for anything else or a fragment."""
    proto, key, sport, dport, flags, seq, payload, ack, window = decode_fields(linktype, frame)
    if proto == NOTHING:
        return None
    size = (len(key) - 4) >> 1
    return Decoded(proto, key[:size], sport, key[size:2 * size], dport, flags, seq, payload, ack,
                   window)


def _key(frame: bytes, addresses: int, size: int, ports: int) -> bytes:
    """The addresses (2 x size bytes at `addresses`) then the 4 bytes of ports at `ports`."""
    if addresses + 2 * size == ports:
        return frame[addresses:ports + 4]
    return frame[addresses:addresses + 2 * size] + frame[ports:ports + 4]


def decode_fields(linktype: int, frame: bytes) -> Fields:
    """decode()'s fields, the addresses and ports as one key (above); where decode() gives
    None, _NO_FIELDS: proto NOTHING, its other slots filled with fixed values that mean
    nothing (a tuple of fixed length has a value in each)."""
    # The common case, without _network_offset's tests; the EtherType by two indexings (a
    # slice compared with b"\x08\x00" made a bytes object per packet).
    if linktype == LINKTYPE_ETHERNET and len(frame) >= 14 and frame[12] == 8 and frame[13] == 0:
        offset, version = 14, 4
    else:
        located = _network_offset(linktype, frame)
        if located is None:
            return _NO_FIELDS
        offset, version = located
    if version == 4:
        if len(frame) < offset + 20:
            return _NO_FIELDS
        # The header's fields by indexing, as in the TCP header below: compiled, that is native
        # integer code, where Struct.unpack_from made a tuple and an int object per field.
        ihl = (frame[offset] & 0x0F) * 4
        # MF set or a non-zero offset (flags/fragment offset & 0x3FFF): fragments are not
        # reassembled
        if frame[offset + 6] & 0x3F or frame[offset + 7]:
            return _NO_FIELDS
        total = (frame[offset + 2] << 8) | frame[offset + 3]
        proto = frame[offset + 9]
        addresses, size = offset + 12, 4
        # Trim Ethernet padding with the IP total length; TSO frames may report 0.
        end = offset + total if total >= ihl else len(frame)
        start = offset + ihl
    else:
        if len(frame) < offset + 40:
            return _NO_FIELDS
        proto = frame[offset + 6]
        payload_length = _u16.unpack_from(frame, offset + 4)[0]
        addresses, size = offset + 8, 16
        start = offset + 40
        end = start + payload_length if payload_length else len(frame)
        while proto in _IPV6_EXTENSIONS or proto == _IPV6_FRAGMENT:
            if proto == _IPV6_FRAGMENT or len(frame) < start + 8:
                return _NO_FIELDS
            proto, length = frame[start], (frame[start + 1] + 1) * 8
            start += length
    if proto == TCP:
        if len(frame) < start + 20:
            return _NO_FIELDS
        # "!HHIIBBH": ports, sequence and acknowledgment numbers, data offset, flags, window
        sport = (frame[start] << 8) | frame[start + 1]
        dport = (frame[start + 2] << 8) | frame[start + 3]
        seq = (frame[start + 4] << 24) | (frame[start + 5] << 16) | (frame[start + 6] << 8) \
            | frame[start + 7]
        ack = (frame[start + 8] << 24) | (frame[start + 9] << 16) | (frame[start + 10] << 8) \
            | frame[start + 11]
        flags = frame[start + 13]
        window = (frame[start + 14] << 8) | frame[start + 15]
        payload_start = start + (frame[start + 12] >> 4) * 4
        return (TCP, _key(frame, addresses, size, start), sport, dport, flags, seq,
                frame[payload_start:end], ack, window)
    if proto == UDP:
        if len(frame) < start + 8:
            return _NO_FIELDS
        sport = (frame[start] << 8) | frame[start + 1]
        dport = (frame[start + 2] << 8) | frame[start + 3]
        return (UDP, _key(frame, addresses, size, start), sport, dport, 0, 0,
                frame[start + 8:end], 0, -1)
    if proto == _ICMP or proto == _ICMPV6:
        return _port_unreachable(frame, start, proto)
    return _NO_FIELDS


def _port_unreachable(frame: bytes, start: int, proto: int) -> Fields:
    """An ICMP destination unreachable / port unreachable (ICMPv6: type 1 code 4) quoting a
    UDP datagram: that datagram's 5-tuple as Decoded(UNREACHABLE, ...)'s fields; no fields
    otherwise."""
    if len(frame) < start + 8:
        return _NO_FIELDS
    kind, code = frame[start], frame[start + 1]
    inner = start + 8
    if proto == _ICMP:
        if kind != 3 or code != 3 or len(frame) < inner + 20 or frame[inner] >> 4 != 4:
            return _NO_FIELDS
        ihl = (frame[inner] & 0x0F) * 4
        if frame[inner + 9] != UDP or len(frame) < inner + ihl + 4:
            return _NO_FIELDS
        addresses, size, ports_at = inner + 12, 4, inner + ihl
    else:
        if kind != 1 or code != 4 or len(frame) < inner + 44 or frame[inner + 6] != UDP:
            return _NO_FIELDS
        addresses, size, ports_at = inner + 8, 16, inner + 40
    sport, dport = _udp_ports.unpack_from(frame, ports_at)
    return (UNREACHABLE, _key(frame, addresses, size, ports_at), sport, dport, 0, 0, b"", 0, -1)


def ip_text(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def flow_key(linktype: int, frame: bytes) -> tuple[int, bytes, int] | None:
    """(TCP or UDP, the flow's key, TCP flags) of a frame, for the dissection shards' flow table
    (worker.flow_table): the key is the source and destination addresses then ports, as they
    lie in the IP and transport headers (a FlowTable slices them from there). An ICMP port
    unreachable gives the UDP flow it quotes (its flags 0). None for a frame decode() has no
    flow for, or a fragment. Cheaper than decode(): a few slices of the headers."""
    located = _network_offset(linktype, frame)
    if located is None:
        return None
    offset, version = located
    if version == 4:
        if len(frame) < offset + 20 or _u16.unpack_from(frame, offset + 6)[0] & 0x3FFF:
            return None
        proto = frame[offset + 9]
        addresses = offset + 12, offset + 16, 4
        start = offset + (frame[offset] & 0x0F) * 4
    else:
        if len(frame) < offset + 40:
            return None
        proto = frame[offset + 6]
        addresses = offset + 8, offset + 24, 16
        start = offset + 40
        while proto in _IPV6_EXTENSIONS:
            if len(frame) < start + 8:
                return None
            proto, start = frame[start], start + (frame[start + 1] + 1) * 8
    flags = 0
    if proto == _ICMP or proto == _ICMPV6:
        # A port unreachable: the quoted datagram's addresses and ports (decode() checks the
        # rest; a frame it then refuses lands in some shard that refuses it just the same).
        inner = start + 8
        if proto == _ICMP:
            if len(frame) < inner + 20 or frame[start:start + 2] != b"\x03\x03" \
                    or frame[inner + 9] != UDP:
                return None
            addresses, start = (inner + 12, inner + 16, 4), inner + (frame[inner] & 0x0F) * 4
        else:
            if len(frame) < inner + 40 or frame[start:start + 2] != b"\x01\x04" \
                    or frame[inner + 6] != UDP:
                return None
            addresses, start = (inner + 8, inner + 24, 16), inner + 40
        proto = UDP
    elif proto == TCP:
        flags = frame[start + 13] if len(frame) > start + 13 else 0
    elif proto != UDP:
        return None
    if len(frame) < start + 4:
        return None
    src_at, dst_at, size = addresses
    key = frame[src_at:src_at + size] + frame[dst_at:dst_at + size] + frame[start:start + 4]
    return proto, key, flags
