"""Captures rewritten in memory: ports moved, leading packets dropped.

    packets = read_packets(GOLDEN / "mysql" / "session.pcap")
    moved = move_port(packets, 3306, 5432)
    entries = dissect_packets(moved)

Checksums are left as they are (the worker never checks them: loopback captures carry invalid
ones anyway), so a rewritten packet is exactly the original but for its port fields.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.dissection import Dissection
from worker.packet import TCP, UDP, _network_offset, decode
from worker.sources import open_file_source


@dataclass(frozen=True)
class Capture:
    linktype: int
    packets: list[tuple[int, bytes]]     # (ts_ns, frame)


def read_packets(path: Path) -> Capture:
    source = open_file_source(path)
    packets: list[tuple[int, bytes]] = []
    try:
        while not source.finished:
            packets.extend((ts, data) for ts, data, _ in source.read_batch(4096))
    finally:
        source.close()
    return Capture(source.linktype, packets)


def _transport_offset(linktype: int, frame: bytes) -> int | None:
    located = _network_offset(linktype, frame)
    if located is None:
        return None
    offset, version = located
    if version == 4:
        return offset + (frame[offset] & 0x0F) * 4
    return offset + 40      # golden captures carry no IPv6 extension headers


def server_ports(capture: Capture) -> Counter[int]:
    """Ports that answered a SYN (the SYN-ACK's source port), by connection count; for UDP
    captures the destination port of the first datagram."""
    ports: Counter[int] = Counter()
    first_udp: int | None = None
    for _, frame in capture.packets:
        decoded = decode(capture.linktype, frame)
        if decoded is None:
            continue
        if decoded.proto == TCP and decoded.flags & 0x12 == 0x12:
            ports[decoded.sport] += 1
        elif decoded.proto == UDP and first_udp is None:
            first_udp = decoded.dport
    if not ports and first_udp is not None:
        ports[first_udp] = 1
    return ports


def move_port(capture: Capture, old: int, new: int) -> Capture:
    """Every TCP/UDP port field equal to `old` becomes `new`."""
    out: list[tuple[int, bytes]] = []
    for ts, frame in capture.packets:
        decoded = decode(capture.linktype, frame)
        if decoded is None or decoded.proto not in (TCP, UDP) or old not in (decoded.sport, decoded.dport):
            out.append((ts, frame))
            continue
        at = _transport_offset(capture.linktype, frame)
        assert at is not None
        changed = bytearray(frame)
        sport, dport = struct.unpack_from("!HH", frame, at)
        struct.pack_into("!HH", changed, at, new if sport == old else sport,
                         new if dport == old else dport)
        out.append((ts, bytes(changed)))
    return Capture(capture.linktype, out)


def drop_leading(capture: Capture, count: int) -> Capture:
    """The capture as if it had started `count` TCP/UDP packets late (mid-connection)."""
    seen = 0
    for i, (_, frame) in enumerate(capture.packets):
        if decode(capture.linktype, frame) is not None:
            if seen == count:
                return Capture(capture.linktype, capture.packets[i:])
            seen += 1
    return Capture(capture.linktype, [])


def dissect_packets(capture: Capture, node: str = "golden") -> list[dict[str, Any]]:
    """Entries as dissect_capture (support.golden) makes them, for packets in memory."""
    dissection = Dissection(node)
    dissection.feed([((0, n), capture.linktype, ts, frame, len(frame))
                     for n, (ts, frame) in enumerate(capture.packets)])
    dissection.close_all()
    return [json.loads(row.entry_json) for row in dissection.take_rows()]
