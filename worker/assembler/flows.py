"""Flow state: one Flow per connection (or UDP 5-tuple), one Half per direction, and roles.

These are plain __slots__ classes made once per flow, never per packet. The assembler's table
maps each direction's key (one table per transport) to that direction's Half, so a packet
finds its state with one dict lookup and no canonicalisation. The key is the source and
destination addresses then ports as they lie in the IP and transport headers
(packet.decode_fields: one slice of the frame for IPv4 without options), the same bytes as the
dissection shards' flow table keys.
"""

from __future__ import annotations

from struct import Struct
from typing import Final
from worker.dissectors.base import Direction, FlowInfo, Session
from worker.dissectors.stream import TwoWaySession
from worker.packet import PacketRef

# src ip, dst ip (4 or 16 bytes each), src port, dst port (2 bytes each, big-endian)
FlowKey = bytes
_PORTS: Final = Struct("!HH")

# Ports that are servers more often than not, beyond the well-known range (<1024). Only a hint
# for flows first seen mid-stream (no SYN) and for UDP; content decides the protocol.
SERVER_PORT_HINTS: Final = frozenset({
    1883, 2379, 3000, 3306, 4222, 5432, 5672, 6379, 6443, 8000, 8080, 8443, 8888, 9000, 9090,
    9092, 9200, 11211, 15672, 27017,
})


def is_server_port(port: int) -> bool:
    return port < 1024 or port in SERVER_PORT_HINTS


def sender_is_client(sport: int, dport: int) -> bool:
    """Roles without a SYN: the side on the (lower) server-like port is the server; when the
    ports say nothing, the first sender is the client."""
    return roles_from_ports(sport, dport)[0]


def roles_from_ports(sport: int, dport: int) -> tuple[bool, bool]:
    """(sender is client, guessed) by the ports, for every new UDP flow and the TCP flows
    first seen mid-stream: sender_is_client's rule, and guessed when neither port is
    server-like (then the first sender was only taken for the client)."""
    source_hint = sport < 1024 or sport in SERVER_PORT_HINTS
    destination_hint = dport < 1024 or dport in SERVER_PORT_HINTS
    if source_hint and destination_hint:
        return dport <= sport, False
    return not source_hint, not (source_hint or destination_hint)


def flow_key(flow: FlowInfo) -> FlowKey:
    """The client-to-server key of a FlowInfo."""
    return b"".join((flow.client_ip, flow.server_ip,
                     _PORTS.pack(flow.client_port, flow.server_port)))


def reverse_key(key: FlowKey) -> FlowKey:
    """The key of the other direction: addresses swapped, ports swapped."""
    size = (len(key) - 4) >> 1
    end = 2 * size
    # (concatenated slices: compiled, each a direct call; b"".join of a tuple of them was
    # ~1.5k instructions, once per new flow)
    return key[size:end] + key[:size] + key[end + 2:] + key[end:end + 2]


def key_parts(key: FlowKey) -> tuple[bytes, int, bytes, int]:
    """(src ip, src port, dst ip, dst port) of a key."""
    size = (len(key) - 4) >> 1
    end = 2 * size
    return (key[:size], (key[end] << 8) | key[end + 1], key[size:end],
            (key[end + 2] << 8) | key[end + 3])


# One buffered out-of-order piece: (stream offset, bytes, ref of the packet they came from).
Piece = tuple[int, bytes, PacketRef]
# A Half's `pending` until it first buffers a piece: most never do, and a list per direction
# of every flow would be that many more objects for the garbage collector to walk.
NO_PIECES: Final[tuple[Piece, ...]] = ()


class Half:
    """One direction of a flow: its reassembly position and out-of-order buffer."""

    __slots__ = ("flow", "direction", "peer", "base", "next_seq", "delivered", "pending",
                 "fin_offset")
    __deletable__ = ("peer",)     # Flow.unlink (mypyc: compiled attributes are not deletable else)

    def __init__(self, flow: Flow, direction: Direction) -> None:
        self.flow = flow
        self.direction = direction
        self.peer: Half = self
        # TCP sequence number of stream offset 0 (None until this direction's first byte,
        # SYN or anchor), and of the next byte to deliver (= base + delivered, mod 2**32).
        self.base: int | None = None
        self.next_seq: int | None = None
        self.delivered = 0                 # stream offset of the next byte to deliver
        # Sorted by offset, non-overlapping, all > delivered; NO_PIECES until the first one.
        self.pending: list[Piece] | tuple[Piece, ...] = NO_PIECES
        self.fin_offset: int | None = None  # stream offset where the FIN sits, once seen

    def start_at(self, seq: int) -> None:
        self.base = self.next_seq = seq


# Calls through a flow's session after which the assembler stops looking for a TwoWaySession
# that claimed it (Assembler._probe_stream): a selector decides within its first few calls;
# a session of another kind never has one.
STREAM_PROBES: Final = 16


class Flow:
    """A connection (TCP) or a 5-tuple (UDP) with fixed client/server roles."""

    __slots__ = ("info", "key", "server_key", "is_tcp", "session", "client", "server",
                 "last_ns", "queued_ns", "closed", "anchored", "buffered", "stream", "probes")
    __deletable__ = ("client", "server")   # unlink

    def __init__(self, info: FlowInfo, key: FlowKey, server_key: FlowKey,
                 session: Session | None, ts_ns: int, anchored: bool = False) -> None:
        self.info = info
        self.key = key                     # client-to-server key
        # server-to-client (reverse_key(key)), as the assembler's table holds it: made once
        self.server_key = server_key
        self.is_tcp = info.transport == "tcp"
        self.session = session             # None once closed or after the session failed
        self.new_session()
        self.client = Half(self, Direction.CLIENT_TO_SERVER)
        self.server = Half(self, Direction.SERVER_TO_CLIENT)
        self.client.peer, self.server.peer = self.server, self.client
        self.last_ns = ts_ns               # capture time of the last packet
        self.queued_ns = ts_ns             # last_ns when last (re)queued in the LRU order
        self.closed = False                # on_close delivered; kept briefly to absorb stragglers
        self.anchored = anchored
        self.buffered = 0                  # out-of-order bytes held, both directions

    def new_session(self) -> None:
        """`session` is new (or None): what the assembler learnt of the last one is
        forgotten, and the claimed session it called is no longer held."""
        # The TwoWaySession that claimed the flow through its selector, called directly
        # (Assembler._probe_stream), and how many more calls may look for it.
        self.stream: TwoWaySession | None = None
        self.probes = STREAM_PROBES

    def unlink(self) -> None:
        """The flow left the assembler's table for good: cut the references between it and
        its halves (flow -> half, half <-> peer, a half's own `peer` at first), the only
        cycles a flow makes. Then the flow, its session and all they hold are freed by
        reference counting as soon as nothing holds them, not left for the garbage collector
        (a DNS flow is ~16 GC-tracked objects, most of them living through several young
        collections). A half keeps its `flow`, so code still holding one sees it closed."""
        client, server = self.client, self.server
        del client.peer, server.peer
        del self.client, self.server

    def half(self, direction: Direction) -> Half:
        return self.client if direction == Direction.CLIENT_TO_SERVER else self.server
