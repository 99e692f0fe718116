"""The capture filter for a list of target addresses (PUT /targets), bounded whatever its length.

libpcap's compiler is superlinear in the length of a `host A or host B or ...` chain (measured:
2000 addresses 2.3 s of CPU, 5000 far longer, docs/BENCHMARKS.md) and the program it makes grows
by ~4 instructions an address, past the kernel's limit of 4096 (BPF_MAXINSNS) at ~1000. So the
addresses are first merged into networks (exact: sorted neighbours that fill a prefix); when
there are more than MAX_NETS of one family, the kernel gets the fewest covering prefixes that fit
(a superset, compiled in milliseconds) and the capture child keeps exactly the packets a
`host` filter on the addresses would keep, by a set lookup on their addresses (TargetMatcher).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterable
from typing import Union

import msgspec

from worker.packet import (LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL,
                           LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP, LINKTYPE_NULL, LINKTYPE_RAW, RawPacket)

IDLE_BPF = "less 0"   # no packet is that short: capture nothing (an always-false filter is refused by libpcap)
# Networks per address family the kernel filter names. 16 of each compile in ~1 ms of CPU and
# make ~70 instructions (docs/BENCHMARKS.md); more buys a narrower kernel filter for little.
MAX_NETS = 16

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class CaptureFilter(msgspec.Struct, frozen=True):
    """What the capture child applies: `bpf` in the kernel (libpcap), then, when `addresses` is
    not None, only packets with a source or destination among them (4- or 16-byte packed)."""
    bpf: str
    addresses: frozenset[bytes] | None = None

    @property
    def exact_in_kernel(self) -> bool:
        return self.addresses is None


def target_filter(base: str, ips: Iterable[str], idle: bool = False,
                  max_nets: int = MAX_NETS) -> CaptureFilter:
    """The filter that stores the packets of `(base) and (host ip1 or host ip2 ...)`, with a
    kernel part of at most max_nets networks per family. `ips` are valid addresses."""
    if idle:
        return CaptureFilter(IDLE_BPF)
    parsed = sorted({ipaddress.ip_address(ip) for ip in ips}, key=lambda a: (a.version, int(a)))
    if not parsed:
        return CaptureFilter(base)
    nets: list[Network] = []
    exact = True
    for version in (4, 6):
        family = [a for a in parsed if a.version == version]
        if family:
            covering, family_exact = covering_networks(family, max_nets)
            nets += covering
            exact = exact and family_exact
    terms = " or ".join(f"host {n.network_address}" if n.prefixlen == n.max_prefixlen else f"net {n}"
                        for n in nets)
    bpf = f"({base}) and ({terms})" if base else terms
    return CaptureFilter(bpf, None if exact else frozenset(a.packed for a in parsed))


def covering_networks(addresses: list[ipaddress.IPv4Address] | list[ipaddress.IPv6Address],
                      max_nets: int) -> tuple[list[Network], bool]:
    """At most max_nets networks holding every address (sorted, one family): the exact merge
    when it is short enough (True), else the longest common prefix length that gives few enough
    networks (False: they hold other addresses too)."""
    bits = addresses[0].max_prefixlen
    values = [int(a) for a in addresses]
    make = ipaddress.IPv4Network if bits == 32 else ipaddress.IPv6Network
    exact = _exact_blocks(values, bits, max_nets)
    if exact is not None:
        return [make(block) for block in exact], True

    def count(prefix: int) -> int:
        return len({v >> (bits - prefix) for v in values})

    low, high = 0, bits          # count(low) == 1 <= max_nets; the answer is the largest fitting prefix
    while low < high:            # the count only grows with the prefix length: binary search
        middle = (low + high + 1) // 2
        if count(middle) <= max_nets:
            low = middle
        else:
            high = middle - 1
    shift = bits - low
    return [make((v << shift, low)) for v in sorted({v >> shift for v in values})], False


def _exact_blocks(values: list[int], bits: int, max_nets: int) -> list[tuple[int, int]] | None:
    """The (address, prefix length) blocks that hold exactly the sorted distinct `values`, or None
    as soon as there are more than max_nets: each run of consecutive values split into the
    largest aligned blocks (a linear walk; ipaddress.collapse_addresses took ~1 s for 60k)."""
    blocks: list[tuple[int, int]] = []
    index = 0
    while index < len(values):
        start = end = values[index]
        index += 1
        while index < len(values) and values[index] == end + 1:
            end = values[index]
            index += 1
        while start <= end:
            size = (start & -start) if start else 1 << bits     # the alignment of start ...
            while size > end - start + 1:                        # ... within the run
                size >>= 1
            blocks.append((start, bits - size.bit_length() + 1))
            if len(blocks) > max_nets:
                return None
            start += size
    return blocks


# -- the user-space part: the addresses a libpcap `host` test looks at, by link type -----------

_IPV4, _IPV6, _ARP, _RARP = b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x80\x35"
_VLAN_TPIDS = (b"\x81\x00", b"\x88\xa8", b"\x91\x00")
_RAW_IP = {LINKTYPE_RAW, 12, 14}
_NULL_FAMILY = struct.Struct("<I")
_AF_INET6 = {10, 24, 28, 30}   # Linux, BSDs, macOS


def _by_ethertype(ethertype: bytes, frame: bytes, at: int, addresses: frozenset[bytes]) -> bool:
    # libpcap's `host`/`net`: IPv4 source/destination, ARP/RARP sender/target protocol
    # address (fixed offsets 14 and 24, as libpcap), IPv6 source/destination.
    if ethertype == _IPV4:
        return frame[at + 12:at + 16] in addresses or frame[at + 16:at + 20] in addresses
    if ethertype == _IPV6:
        return frame[at + 8:at + 24] in addresses or frame[at + 24:at + 40] in addresses
    if ethertype == _ARP or ethertype == _RARP:
        return frame[at + 14:at + 18] in addresses or frame[at + 24:at + 28] in addresses
    return False


def _by_version(frame: bytes, at: int, addresses: frozenset[bytes]) -> bool:
    version = frame[at] >> 4 if len(frame) > at else 0
    if version == 4:
        return _by_ethertype(_IPV4, frame, at, addresses)
    if version == 6:
        return _by_ethertype(_IPV6, frame, at, addresses)
    return False


def _ethernet(frame: bytes, addresses: frozenset[bytes]) -> bool:
    ethertype, at = frame[12:14], 14
    # A tag left in the frame (the kernel's VLAN offload took it out where its filter ran, and
    # the reader put it back) is skipped, so the kernel and this check see the same packet.
    while ethertype in _VLAN_TPIDS:
        ethertype, at = frame[at + 2:at + 4], at + 4
    return _by_ethertype(ethertype, frame, at, addresses)


def _null(frame: bytes, addresses: frozenset[bytes]) -> bool:
    if len(frame) < 4:
        return False
    # DLT_NULL's family is in the capturing host's order, LOOP's in network order: try both.
    family = _NULL_FAMILY.unpack_from(frame)[0]
    families = {family, int.from_bytes(frame[:4], "big")}
    if 2 in families:
        return _by_ethertype(_IPV4, frame, 4, addresses)
    if families & _AF_INET6:
        return _by_ethertype(_IPV6, frame, 4, addresses)
    return False


def _matcher(linktype: int) -> Callable[[bytes, frozenset[bytes]], bool] | None:
    if linktype == LINKTYPE_ETHERNET:
        return _ethernet
    if linktype == LINKTYPE_LINUX_SLL:
        return lambda frame, addresses: _by_ethertype(frame[14:16], frame, 16, addresses)
    if linktype == LINKTYPE_LINUX_SLL2:
        return lambda frame, addresses: _by_ethertype(frame[0:2], frame, 20, addresses)
    if linktype in _RAW_IP or linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        return lambda frame, addresses: _by_version(frame, 0, addresses)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return _null
    return None


class TargetMatcher:
    """Keeps the packets with a target address, as the exact `host` filter would."""

    def __init__(self, addresses: frozenset[bytes]) -> None:
        self.addresses = addresses
        self.left_out = 0     # packets the kernel's broader filter let through, dropped here

    def keep(self, linktype: int, packets: list[RawPacket]) -> list[RawPacket]:
        match = _matcher(linktype)
        if match is None:     # a link type libpcap's `host` has no meaning for: the kernel's filter decided
            return packets
        addresses = self.addresses
        kept = [p for p in packets if match(p[1], addresses)]
        self.left_out += len(packets) - len(kept)
        return kept
