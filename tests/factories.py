"""Small factories for packets and TCP conversations, for tests (no network needed).

Frames are Ethernet (LINKTYPE_ETHERNET) carrying IPv4 or IPv6 (chosen by the address form),
with valid IP, TCP and UDP checksums, so they also make sense to tcpdump and tshark when
written to a pcap file.

    frame = tcp_packet("10.0.0.1", "10.0.0.2", 40000, 80, seq=1, ack=1, flags="PA", payload=b"x")
    packets = tcp_conversation([b"GET / HTTP/1.1\\r\\n\\r\\n"], [b"HTTP/1.1 204 No Content\\r\\n\\r\\n"])
    for ts_ns, frame, wirelen in packets: ...

`tcp_conversation` returns RawPackets (ts_ns, frame, wirelen) as sources yield them. For
hand-made orderings (loss, reordering, overlaps) `TcpSegments` builds each segment by stream
offset:

    conn = TcpSegments()
    frames = [conn.syn(), conn.syn_ack(), conn.client(0, b"GET / HTTP/1.1\r\n"),
              conn.client(16, b"\r\n"), conn.server(0, b"HTTP/1.1 204 No Content\r\n\r\n")]
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

from typing import Any

import msgspec

from shark.model import Endpoint, Entry, encode
from worker.packet import LINKTYPE_ETHERNET, RawPacket

__all__ = ["API", "FRONTEND", "LINKTYPE_ETHERNET", "SEQ_MOD", "TcpSegments", "tcp_conversation",
           "tcp_flags", "tcp_packet", "tentry", "tentry_json", "udp_packet"]

SEQ_MOD = 2 ** 32
_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20}
_CLIENT_MAC = bytes.fromhex("02000000000a")
_SERVER_MAC = bytes.fromhex("02000000000b")


def tentry(**fields: Any) -> Entry:
    """An HTTP entry as the worker indexes it; `fields` replace the defaults."""
    values: dict[str, Any] = {
        "id": "test-node:1", "node": "test-node", "protocol": "http", "ts": 1764150000.0,
        "src": Endpoint(ip="10.0.0.1", port=40000), "dst": Endpoint(ip="10.0.0.2", port=80),
        "summary": "GET /", "request": {"method": "GET", "path": "/", "query": {}, "headers": {}},
        "response": {"status": 200, "headers": {}}, "status": 200,
    }
    values.update(fields)
    return Entry(**values)


def tentry_json(**fields: Any) -> dict[str, Any]:
    """tentry(**fields) as its JSON decodes: a worker's /entries line, what the hub, the CLI and
    scripts read. Keys an Entry does not have are added as given (what a reader must pass on)."""
    known = {name: value for name, value in fields.items() if name in Entry.__struct_fields__}
    made: dict[str, Any] = msgspec.json.decode(encode(tentry(**known)))
    made.update((name, value) for name, value in fields.items() if name not in known)
    return made


# Two named endpoints: a pod calling a service in namespace "shop".
FRONTEND = Endpoint("10.0.0.5", 40000, "frontend", "shop", "pod")
API = Endpoint("10.0.0.9", 8080, "api", "shop", "service")


def tcp_flags(flags: str | int) -> int:
    """TCP flag bits from letters as tcpdump prints them: "S", "SA", "PA", "FA", "R"."""
    if isinstance(flags, int):
        return flags
    bits = 0
    for letter in flags.upper():
        if letter == ".":
            letter = "A"
        if letter not in _FLAG_BITS:
            raise ValueError(f"tcp flags {flags!r}: unknown flag {letter!r}, expected letters of FSRPAU")
        bits |= _FLAG_BITS[letter]
    return bits


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip_frame(src: str, dst: str, proto: int, transport: bytes, checksum_at: int) -> bytes:
    """Ethernet + IP header around a transport header+payload whose checksum field is at
    `checksum_at` (zeroed by the caller); fills in that checksum."""
    source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if source.version != destination.version:
        raise ValueError(f"addresses {src} and {dst}: both must be IPv4 or both IPv6")
    length = len(transport)
    if source.version == 4:
        pseudo = source.packed + destination.packed + struct.pack("!BBH", 0, proto, length)
    else:
        pseudo = source.packed + destination.packed + struct.pack("!IxxxB", length, proto)
    checksum = _checksum(pseudo + transport) or 0xFFFF
    transport = transport[:checksum_at] + struct.pack("!H", checksum) + transport[checksum_at + 2:]
    if source.version == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 1, 0x4000, 64, proto, 0,
                             source.packed, destination.packed)
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        ethertype = 0x0800
    else:
        header = struct.pack("!IHBB16s16s", 6 << 28, length, proto, 64,
                             source.packed, destination.packed)
        ethertype = 0x86DD
    return _SERVER_MAC + _CLIENT_MAC + struct.pack("!H", ethertype) + header + transport


def tcp_packet(src: str = "10.0.0.1", dst: str = "10.0.0.2", sport: int = 40000,
               dport: int = 80, *, seq: int = 0, ack: int = 0, flags: str | int = "A",
               payload: bytes = b"", window: int = 65535) -> bytes:
    """One Ethernet frame with a TCP segment. `seq` and `ack` are taken modulo 2**32."""
    header = struct.pack("!HHIIBBHHH", sport, dport, seq % SEQ_MOD, ack % SEQ_MOD, 5 << 4,
                         tcp_flags(flags), window, 0, 0)
    return _ip_frame(src, dst, 6, header + payload, 16)


def udp_packet(src: str = "10.0.0.1", dst: str = "10.0.0.2", sport: int = 40000,
               dport: int = 53, payload: bytes = b"") -> bytes:
    """One Ethernet frame with a UDP datagram."""
    header = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    return _ip_frame(src, dst, 17, header + payload, 6)


def tcp_conversation(client_chunks: Sequence[bytes], server_chunks: Sequence[bytes], *,
                     client: tuple[str, int] = ("10.0.0.1", 40000),
                     server: tuple[str, int] = ("10.0.0.2", 80),
                     client_isn: int = 1000, server_isn: int = 5000, mss: int = 1400,
                     handshake: bool = True, close: str | None = "fin",
                     start_ns: int = 1_700_000_000_000_000_000,
                     step_ns: int = 1_000_000) -> list[RawPacket]:
    """A realistic TCP connection as RawPackets (ts_ns, frame, wirelen), in capture order.

    The handshake (SYN, SYN-ACK, ACK), then turns: client chunk i, server chunk i, client
    chunk i+1, ... Each chunk is cut into segments of at most `mss` bytes (PSH on the last),
    every segment carries the current ACK number, and the receiver ACKs each chunk. `close`:
    "fin" (FIN from the client, ACK, FIN from the server, ACK), "rst" (RST from the client)
    or None (the capture ends with the connection open). Sequence numbers wrap at 2**32, so
    an ISN near 2**32 tests wrap-around. Timestamps start at `start_ns`, `step_ns` apart.
    """
    if mss <= 0:
        raise ValueError(f"mss {mss}: expected a positive segment size")
    if close not in ("fin", "rst", None):
        raise ValueError(f"close {close!r}: expected 'fin', 'rst' or None")
    frames: list[bytes] = []
    # Next sequence number each side sends; SYNs take one number each.
    next_seq = {"c": client_isn + 1, "s": server_isn + 1}
    ends = {"c": (client, server), "s": (server, client)}

    def send(side: str, flags: str, payload: bytes = b"", *, seq: int | None = None) -> None:
        (src, sport), (dst, dport) = ends[side]
        peer = "s" if side == "c" else "c"
        ack = next_seq[peer] if "A" in flags else 0
        frames.append(tcp_packet(src, dst, sport, dport, seq=next_seq[side] if seq is None else seq,
                                 ack=ack, flags=flags, payload=payload))
        next_seq[side] += len(payload) + ("F" in flags)

    if handshake:
        send("c", "S", seq=client_isn)
        send("s", "SA", seq=server_isn)
        send("c", "A")
    for turn in range(max(len(client_chunks), len(server_chunks))):
        for side, chunks in (("c", client_chunks), ("s", server_chunks)):
            if turn >= len(chunks) or not chunks[turn]:
                continue
            chunk = chunks[turn]
            for start in range(0, len(chunk), mss):
                last = start + mss >= len(chunk)
                send(side, "PA" if last else "A", chunk[start:start + mss])
            send("s" if side == "c" else "c", "A")
    if close == "fin":
        send("c", "FA")
        send("s", "A")
        send("s", "FA")
        send("c", "A")
    elif close == "rst":
        send("c", "RA")
    return [(start_ns + i * step_ns, frame, len(frame)) for i, frame in enumerate(frames)]


class TcpSegments:
    """Segments of one TCP connection addressed by stream offset instead of sequence number.

    Offset 0 of each direction is its ISN + 1. Data segments carry ACK with, by default, the
    peer's ISN + 1 (acknowledging only its SYN), so that any order of segments stays plausible:
    an ACK never claims bytes the capture has not shown yet. Pass `ack=` (a stream offset of
    the peer) for a receiver that acknowledges data.
    """

    def __init__(self, client: tuple[str, int] = ("10.0.0.1", 40000),
                 server: tuple[str, int] = ("10.0.0.2", 80), *, client_isn: int = 1000,
                 server_isn: int = 5000) -> None:
        self.client_addr, self.server_addr = client, server
        self.client_isn, self.server_isn = client_isn, server_isn

    def _frame(self, from_client: bool, offset: int, payload: bytes, flags: str | int,
               ack: int | None, *, syn: bool = False) -> bytes:
        (src, sport), (dst, dport) = ((self.client_addr, self.server_addr) if from_client
                                      else (self.server_addr, self.client_addr))
        own, peer = ((self.client_isn, self.server_isn) if from_client
                     else (self.server_isn, self.client_isn))
        seq = own if syn else own + 1 + offset
        return tcp_packet(src, dst, sport, dport, seq=seq, ack=peer + 1 + (ack or 0),
                          flags=flags, payload=payload)

    def syn(self) -> bytes:
        return self._frame(True, 0, b"", "S", None, syn=True)

    def syn_ack(self) -> bytes:
        return self._frame(False, 0, b"", "SA", None, syn=True)

    def client(self, offset: int, payload: bytes = b"", flags: str | int = "PA",
               ack: int | None = None) -> bytes:
        """A client-to-server segment whose first byte is at stream `offset`."""
        return self._frame(True, offset, payload, flags, ack)

    def server(self, offset: int, payload: bytes = b"", flags: str | int = "PA",
               ack: int | None = None) -> bytes:
        """A server-to-client segment whose first byte is at stream `offset`."""
        return self._frame(False, offset, payload, flags, ack)
