"""Synthesized packets: cleartext chunks dressed as TCP segments of the real connection.

The eBPF source stores TLS cleartext as ordinary TCP packets, in the live capture's link
type, so the store, export and detail paths need nothing new: a pcap of a TLS entry opens in
Wireshark as a plain TCP stream with the connection's real 5-tuple. What tells them apart
from the encrypted packets of the same 5-tuple captured on the wire is the link-layer source
address: MARK (02:73:68:61:72:6b, a locally administered MAC spelling "\\x02shark"). The
dissection routes marked frames to an assembler of their own, so the two never mix.

Pure functions: no I/O.
"""

from __future__ import annotations

from struct import Struct

from worker.packet import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2

MARK = b"\x02shark"

# Where each link type carries the sender's hardware address (the mark).
MARK_OFFSETS = {LINKTYPE_ETHERNET: 6, LINKTYPE_LINUX_SLL: 6, LINKTYPE_LINUX_SLL2: 12}
LINK_HEADER_SIZES = {LINKTYPE_ETHERNET: 14, LINKTYPE_LINUX_SLL: 16, LINKTYPE_LINUX_SLL2: 20}

IPV4_HEADER = 20
IPV6_HEADER = 40
TCP_HEADER = 20
# The largest payload an IP packet carries (16-bit length fields).
MAX_PAYLOAD_V4 = 65535 - IPV4_HEADER - TCP_HEADER
MAX_PAYLOAD_V6 = 65535 - TCP_HEADER
# Below this many payload bytes per packet, synthesizing makes no sense (--snaplen too small).
MIN_USEFUL_PAYLOAD = 512

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ARPHRD_ETHER = 1

_eth = Struct("!6s6sH")
_sll = Struct("!HHH8sH")
_sll2 = Struct("!HHIHBB8s")
_ipv4 = Struct("!BBHHHBBH4s4s")
_ipv6 = Struct("!IHBB16s16s")
_tcp = Struct("!HHIIBBHHH")

SEQ_MASK = (1 << 32) - 1


def mark_offset(linktype: int) -> int | None:
    """Where the mark sits in frames of this link type; None when it has no hardware address."""
    return MARK_OFFSETS.get(linktype)


def is_synthesized(linktype: int, frame: bytes) -> bool:
    """True for a frame this module made (the eBPF TLS source), False for a captured one."""
    offset = MARK_OFFSETS.get(linktype)
    return offset is not None and frame[offset:offset + 6] == MARK


def max_payload(linktype: int, snaplen: int, ipv6: bool) -> int:
    """Payload bytes per synthesized packet: what fits an IP packet and the store's snaplen."""
    headers = LINK_HEADER_SIZES[linktype] + (IPV6_HEADER if ipv6 else IPV4_HEADER) + TCP_HEADER
    return min(MAX_PAYLOAD_V6 if ipv6 else MAX_PAYLOAD_V4, snaplen - headers)


def _link_header(linktype: int, ipv6: bool, outgoing: bool) -> bytes:
    ethertype = ETHERTYPE_IPV6 if ipv6 else ETHERTYPE_IPV4
    if linktype == LINKTYPE_ETHERNET:
        return _eth.pack(MARK, MARK, ethertype)
    address = MARK + b"\x00\x00"
    packet_type = 4 if outgoing else 0      # PACKET_OUTGOING / PACKET_HOST
    if linktype == LINKTYPE_LINUX_SLL:
        return _sll.pack(packet_type, ARPHRD_ETHER, 6, address, ethertype)
    if linktype == LINKTYPE_LINUX_SLL2:
        return _sll2.pack(ethertype, 0, 0, ARPHRD_ETHER, packet_type, 6, address)
    raise ValueError(f"link type {linktype} has no hardware address to mark synthesized "
                     f"packets with (supported: {sorted(MARK_OFFSETS)})")


def ipv4_checksum(header: bytes) -> int:
    total = sum(int.from_bytes(header[i:i + 2], "big") for i in range(0, len(header), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_frame(linktype: int, src: bytes, sport: int, dst: bytes, dport: int, seq: int,
              ack: int, flags: int, payload: bytes = b"", outgoing: bool = True) -> bytes:
    """One marked frame: link header, IPv4 or IPv6 (by address length), TCP, payload.

    The TCP checksum is left 0 (Wireshark does not check it by default; loopback captures
    carry invalid ones too); the IPv4 header checksum is right.
    """
    ipv6 = len(src) == 16
    tcp = _tcp.pack(sport, dport, seq & SEQ_MASK, ack & SEQ_MASK, (TCP_HEADER // 4) << 4,
                    flags, 65535, 0, 0)
    if ipv6:
        ip = _ipv6.pack(6 << 28, TCP_HEADER + len(payload), 6, 64, src, dst)
    else:
        header = _ipv4.pack(0x45, 0, IPV4_HEADER + TCP_HEADER + len(payload), 0, 0x4000, 64, 6,
                            0, src, dst)
        ip = header[:10] + ipv4_checksum(header).to_bytes(2, "big") + header[12:]
    return _link_header(linktype, ipv6, outgoing) + ip + tcp + payload
