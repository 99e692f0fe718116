"""Cleartext chunks in, synthesized TCP packets out: one TCP stream per TLS connection.

Each connection gets a three-way handshake when first seen (so the assembler knows the
client), data segments whose sequence numbers are the chunk's stream offset (kept in the bcc
program per SSL object and direction) plus the direction's initial sequence number, and FINs
when the socket is closed or its process exits. Offsets that jump (events lost in the ring
buffer, bytes beyond what one call copies, unreadable buffers) become holes that the peer's
ACK then covers, so the assembler reports a gap right there and dissection resyncs.

When both ends of a connection run on this node and both are hooked, each reports the same
bytes; one end owns the connection and the other end's chunks are counted as duplicates and
left out (also for a while after the owner closed, like TIME_WAIT). The client's end is
preferred, whichever comes first: a write that fails midway (the peer went away) reports
nothing, though part of it was delivered, while the reads report what arrived, and the
client's exit or close is what ends a request cut short. The server's end is seen first when
the client is preempted between its write and the probe on the write's return, or when the
server speaks first; it owns the connection until the client's first chunk, which takes over
if its bytes match what the server reported at the same offsets (both ends count from the
connection's start; an end hooked mid-connection does not, and is left out as a duplicate).
The client's chunks that came before the match (a Go HTTP/2 server writes its SETTINGS
before it reads anything, so the client's first writes have nothing to match yet) are kept,
bounded, and replayed at the takeover: what they carry beyond what the server reported is
not lost.

Pure: events and times in, packets out; no I/O.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import msgspec

from worker.packet import ACK, FIN, PSH, SYN, RawPacket
from worker.sources.ebpf.events import ConnKey, TlsEvent
from worker.sources.ebpf.program import KIND_WRITE
from worker.sources.ebpf.synth import SEQ_MASK, max_payload, tcp_frame

# A closed connection's key is remembered this long: the other end's late chunks are dropped.
CLOSED_MEMORY_NS = 60_000_000_000
# A connection with no chunk for this long is forgotten (its close was never seen).
IDLE_FORGET_NS = 600_000_000_000
# Of a connection a server's end owns, this many first bytes each way are kept to match the
# client's end against.
MATCH_BYTES = 256
# And of the client's end's chunks while they cannot be matched yet, this many bytes a
# connection and in all (the oldest go first: what they held becomes a gap after a takeover;
# an end hooked mid-connection never matches, and its chunks only wait until dropped).
WAITING_BYTES = 64 * 1024
WAITING_TOTAL_BYTES = 4 << 20
# What a waiting chunk counts beyond its bytes (the event and its place in the list): an
# unreadable chunk has none, and must still count against the bounds.
WAITING_OVERHEAD = 256

Owner = tuple[int, int]   # (process, SSL object): one end of one TLS connection


class SynthStats(msgspec.Struct):
    chunks: int = 0               # chunks turned into packets
    bytes: int = 0                # cleartext bytes in them
    packets: int = 0              # synthesized packets (handshakes and FINs included)
    connections: int = 0          # connections opened
    connections_active: int = 0
    duplicate_chunks: int = 0     # the other end of a connection another end already reports
    handovers: int = 0            # connections the client's end took over from the server's
    gaps: int = 0                 # holes in a stream (lost or unreadable chunks)
    gap_bytes: int = 0
    forgotten: int = 0            # connections dropped after IDLE_FORGET_NS without a close


@dataclass(slots=True)
class _Half:
    isn: int                      # initial sequence number of this direction
    expected: int = 0             # stream offset of the next byte
    end: int = 0                  # highest stream offset known to exist (unreadable chunks)


@dataclass(slots=True)
class _Connection:
    key: ConnKey
    owner: Owner
    owner_is_client: bool
    fd: int
    last_ns: int
    to_server: _Half = field(default_factory=lambda: _Half(0))
    to_client: _Half = field(default_factory=lambda: _Half(0))
    # While a server's end owns it: (offset, bytes) of the first data each way, by to_server.
    first_data: dict[bool, tuple[int, bytes]] = field(default_factory=dict)
    # While a server's end owns it: the chunks of client ends not matched yet, oldest first,
    # with their times.
    waiting: dict[Owner, list[tuple[TlsEvent, int]]] = field(default_factory=dict)
    waiting_bytes: int = 0
    # How many directions first_data held when the waiting chunks were last matched against
    # it (it only grows until the takeover): they are matched again only when it has grown.
    waiting_matched: int = 0


def _isn(key: ConnKey, to_server: bool) -> int:
    client_ip, client_port, server_ip, server_port = key
    raw = client_ip + client_port.to_bytes(2, "big") + server_ip + server_port.to_bytes(2, "big")
    return zlib.crc32(raw + (b">" if to_server else b"<")) & SEQ_MASK


class StreamSynthesizer:
    """The state of every TLS connection seen, and the packets that tell its story."""

    def __init__(self, linktype: int, snaplen: int) -> None:
        self._linktype = linktype
        self._max_v4 = max_payload(linktype, snaplen, ipv6=False)
        self._max_v6 = max_payload(linktype, snaplen, ipv6=True)
        self._connections: dict[ConnKey, _Connection] = {}
        self._by_owner: dict[Owner, ConnKey] = {}
        self._closed: dict[ConnKey, tuple[Owner, int]] = {}
        # The connections holding waiting chunks, in the order they began to (a set in order).
        self._waiting_in: dict[ConnKey, None] = {}
        self._waiting_bytes = 0
        self.stats = SynthStats()

    # -- events ---------------------------------------------------------------------------
    def chunk(self, event: TlsEvent, key: ConnKey, owner_is_client: bool, wall_ns: int) -> list[RawPacket]:
        """Packets for one cleartext chunk of connection `key`, seen by the end that is its
        client when owner_is_client. wall_ns: the chunk's time, epoch nanoseconds."""
        owner = (event.tgid, event.ssl)
        connection = self._connections.get(key)
        packets: list[RawPacket] = []
        if connection is None:
            closed = self._closed.get(key)
            if closed is not None and closed[0] != owner:
                self.stats.duplicate_chunks += 1
                return packets
            previous = self._by_owner.get(owner)
            if previous is not None:
                # The SSL object moved to another socket: its old connection is over.
                packets += self._finish(self._connections[previous], wall_ns)
            connection = self._open(key, owner, owner_is_client, event.fd, wall_ns, packets)
        elif connection.owner != owner:
            if not owner_is_client or connection.owner_is_client:
                self.stats.duplicate_chunks += 1
                return packets
            earlier = connection.waiting.get(owner, [])
            if not (self._takes_over(connection, event) or self._waiting_match(connection, earlier)):
                self._wait(connection, owner, event, wall_ns)
                self.stats.duplicate_chunks += 1
                return packets
            packets += self._hand_over(connection, owner, event.fd, wall_ns)
            for chunk, chunk_ns in earlier:     # what they carry beyond the server's report
                sent = chunk.kind == KIND_WRITE      # by the client, now the owner: to the server
                packets += self._data(connection, sent, sent, chunk, chunk_ns)
            self.stats.duplicate_chunks -= len(earlier)
        connection.last_ns = wall_ns
        sent_by_owner = event.kind == KIND_WRITE
        to_server = sent_by_owner == connection.owner_is_client
        if not connection.owner_is_client and to_server not in connection.first_data \
                and event.data:
            connection.first_data[to_server] = (event.offset, event.data[:MATCH_BYTES])
        packets += self._data(connection, to_server, sent_by_owner, event, wall_ns)
        return packets

    def close(self, tgid: int, fd: int, key: ConnKey | None, wall_ns: int) -> list[RawPacket]:
        """The socket `fd` of process `tgid` was closed: FINs for its connection, if it owns one."""
        candidates = [key] if key is not None else [
            k for k, c in self._connections.items() if c.owner[0] == tgid and c.fd == fd]
        packets: list[RawPacket] = []
        for candidate in candidates:
            connection = self._connections.get(candidate)
            if connection is not None and connection.owner[0] == tgid and connection.fd == fd:
                packets += self._finish(connection, wall_ns)
        return packets

    def exit(self, tgid: int, wall_ns: int) -> list[RawPacket]:
        """Process `tgid` exited: its connections end (the kernel closed its sockets)."""
        packets: list[RawPacket] = []
        for connection in [c for c in self._connections.values() if c.owner[0] == tgid]:
            packets += self._finish(connection, wall_ns)
        return packets

    def expire(self, wall_ns: int) -> None:
        """Forget closed keys after CLOSED_MEMORY_NS, and connections idle for IDLE_FORGET_NS."""
        self._closed = {k: v for k, v in self._closed.items()
                        if wall_ns - v[1] <= CLOSED_MEMORY_NS}
        for connection in [c for c in self._connections.values()
                           if wall_ns - c.last_ns > IDLE_FORGET_NS]:
            self._forget(connection)
            self.stats.forgotten += 1

    def owns(self, tgid: int) -> bool:
        return any(owner[0] == tgid for owner in self._by_owner)

    # -- ownership ------------------------------------------------------------------------
    @staticmethod
    def _takes_over(connection: _Connection, event: TlsEvent) -> bool:
        """Whether a chunk of the client's end of a connection a server's end owns is the
        same stream: its bytes equal the server's first bytes that way at the same offsets."""
        if connection.owner_is_client or event.read_failed:
            return False
        first = connection.first_data.get(event.kind == KIND_WRITE)   # the client writes to the server
        if first is None:
            return False
        start, seen = first
        low = max(start, event.offset)
        high = min(start + len(seen), event.offset + len(event.data))
        return high > low and (seen[low - start:high - start]
                               == event.data[low - event.offset:high - event.offset])

    def _waiting_match(self, connection: _Connection,
                       earlier: list[tuple[TlsEvent, int]]) -> bool:
        """Whether a waiting chunk matches what the server's end has reported since they were
        last tried (each is tried once per direction the server reports, not per chunk)."""
        if connection.waiting_matched == len(connection.first_data):
            return False
        connection.waiting_matched = len(connection.first_data)
        return any(self._takes_over(connection, chunk) for chunk, _ns in earlier)

    def _wait(self, connection: _Connection, owner: Owner, event: TlsEvent, wall_ns: int) -> None:
        """Keep a client end's chunk that matches nothing yet, within the bounds."""
        connection.waiting.setdefault(owner, []).append((event, wall_ns))
        size = len(event.data) + WAITING_OVERHEAD
        connection.waiting_bytes += size
        self._waiting_bytes += size
        self._waiting_in[connection.key] = None
        while connection.waiting_bytes > WAITING_BYTES:
            self._drop_oldest_waiting(connection)
        while self._waiting_bytes > WAITING_TOTAL_BYTES:
            self._drop_oldest_waiting(self._connections[next(iter(self._waiting_in))])

    def _drop_oldest_waiting(self, connection: _Connection) -> None:
        owner, chunks = next(iter(connection.waiting.items()))
        size = len(chunks.pop(0)[0].data) + WAITING_OVERHEAD
        connection.waiting_bytes -= size
        self._waiting_bytes -= size
        if not chunks:
            del connection.waiting[owner]
        if not connection.waiting:
            del self._waiting_in[connection.key]

    def _stop_waiting(self, connection: _Connection) -> None:
        self._waiting_bytes -= connection.waiting_bytes
        connection.waiting.clear()
        connection.waiting_bytes = 0
        self._waiting_in.pop(connection.key, None)

    def _hand_over(self, connection: _Connection, owner: Owner, fd: int,
                   wall_ns: int) -> list[RawPacket]:
        """The client's end owns the connection from now on; the server's is a duplicate."""
        if self._by_owner.get(connection.owner) == connection.key:
            del self._by_owner[connection.owner]
        packets: list[RawPacket] = []
        previous = self._by_owner.get(owner)
        if previous is not None:
            # The client's SSL object moved to this socket: its old connection is over.
            packets += self._finish(self._connections[previous], wall_ns)
        connection.owner, connection.owner_is_client, connection.fd = owner, True, fd
        connection.first_data.clear()
        self._stop_waiting(connection)
        self._by_owner[owner] = connection.key
        self.stats.handovers += 1
        return packets

    # -- packets --------------------------------------------------------------------------
    def _open(self, key: ConnKey, owner: Owner, owner_is_client: bool, fd: int, wall_ns: int,
              packets: list[RawPacket]) -> _Connection:
        connection = _Connection(key, owner, owner_is_client, fd, wall_ns,
                                 _Half(_isn(key, True)), _Half(_isn(key, False)))
        self._connections[key] = connection
        self._by_owner[owner] = key
        self._closed.pop(key, None)
        self.stats.connections += 1
        self.stats.connections_active += 1
        client_sends = owner_is_client
        c2s, s2c = connection.to_server.isn, connection.to_client.isn
        packets.append(self._frame(connection, True, client_sends, c2s, 0, SYN, b"", wall_ns))
        packets.append(self._frame(connection, False, not client_sends, s2c, c2s + 1, SYN | ACK,
                                   b"", wall_ns))
        packets.append(self._frame(connection, True, client_sends, c2s + 1, s2c + 1, ACK, b"",
                                   wall_ns))
        return connection

    def _data(self, connection: _Connection, to_server: bool, sent_by_owner: bool,
              event: TlsEvent, wall_ns: int) -> list[RawPacket]:
        half = connection.to_server if to_server else connection.to_client
        peer = connection.to_client if to_server else connection.to_server
        offset, length = event.offset, event.length
        half.end = max(half.end, offset + length)
        if event.read_failed:
            return []       # a hole: the next chunk, or the FIN, makes it a gap
        data = event.data
        if offset < half.expected:          # bytes already given (cannot happen; be safe)
            skip = half.expected - offset
            if skip >= len(data):
                return []
            data, offset = data[skip:], half.expected
        packets: list[RawPacket] = []
        hole = offset - half.expected
        limit = self._max_v6 if len(connection.key[0]) == 16 else self._max_v4
        ack = peer.isn + 1 + peer.expected
        for start in range(0, len(data), limit):
            piece = data[start:start + limit]
            packets.append(self._frame(connection, to_server, sent_by_owner,
                                       half.isn + 1 + offset + start, ack, PSH | ACK, piece,
                                       wall_ns))
        half.expected = offset + len(data)
        self.stats.chunks += 1
        self.stats.bytes += len(data)
        if hole > 0:
            # The peer acknowledges past the hole: the assembler turns the hole into a gap
            # and delivers the data buffered behind it.
            self.stats.gaps += 1
            self.stats.gap_bytes += hole
            packets.append(self._frame(connection, not to_server, not sent_by_owner,
                                       ack, half.isn + 1 + half.expected, ACK, b"", wall_ns))
        return packets

    def _finish(self, connection: _Connection, wall_ns: int) -> list[RawPacket]:
        """FIN from the owner's end, FIN from the other, the last ACK; then forget it."""
        owner_to_server = connection.owner_is_client
        first = connection.to_server if owner_to_server else connection.to_client
        second = connection.to_client if owner_to_server else connection.to_server
        first_end = first.isn + 1 + max(first.expected, first.end)
        second_end = second.isn + 1 + max(second.expected, second.end)
        packets = [
            self._frame(connection, owner_to_server, True, first_end, second_end, FIN | ACK,
                        b"", wall_ns),
            self._frame(connection, not owner_to_server, False, second_end, first_end + 1,
                        FIN | ACK, b"", wall_ns),
            self._frame(connection, owner_to_server, True, first_end + 1, second_end + 1, ACK,
                        b"", wall_ns),
        ]
        self._forget(connection)
        self._closed[connection.key] = (connection.owner, wall_ns)
        return packets

    def _forget(self, connection: _Connection) -> None:
        self._stop_waiting(connection)
        self._connections.pop(connection.key, None)
        if self._by_owner.get(connection.owner) == connection.key:
            del self._by_owner[connection.owner]
        self.stats.connections_active -= 1

    def _frame(self, connection: _Connection, to_server: bool, outgoing: bool, seq: int,
               ack: int, flags: int, payload: bytes, wall_ns: int) -> RawPacket:
        client_ip, client_port, server_ip, server_port = connection.key
        if to_server:
            frame = tcp_frame(self._linktype, client_ip, client_port, server_ip, server_port,
                              seq, ack, flags, payload, outgoing)
        else:
            frame = tcp_frame(self._linktype, server_ip, server_port, client_ip, client_port,
                              seq, ack, flags, payload, outgoing)
        self.stats.packets += 1
        return (wall_ns, frame, len(frame))
