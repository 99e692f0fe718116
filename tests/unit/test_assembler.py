"""The assembler: flows, roles, TCP reassembly and its edge cases, UDP datagrams."""

from __future__ import annotations

import itertools
import random
import socket
from collections.abc import Iterable, Iterator

import pytest
from factories import SEQ_MOD, TcpSegments, tcp_conversation, tcp_packet, udp_packet
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.assembler import CLOSED_LINGER_NS, Assembler, is_server_port
from worker.dissectors.base import Direction, FlowInfo
from worker.packet import LINKTYPE_ETHERNET, PacketRef, decode

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
CLIENT_IP, SERVER_IP = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
SECOND = 1_000_000_000


class Recorder:
    """A Session that records every call and checks the timeline it is given."""

    def __init__(self, flow: FlowInfo) -> None:
        self.flow = flow
        self.events: list[tuple] = []
        self.next_offset = {C2S: 0, S2C: 0}
        self.closed = 0

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        assert not self.closed, "on_data after on_close"
        assert offset == self.next_offset[direction], (direction, offset, self.next_offset)
        assert data, "empty on_data"
        self.next_offset[direction] = offset + len(data)
        self.events.append(("data", direction, data, offset, ts_ns, ref))

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        assert not self.closed, "on_gap after on_close"
        assert offset == self.next_offset[direction], (direction, offset, self.next_offset)
        assert length > 0
        self.next_offset[direction] = offset + length
        self.events.append(("gap", direction, offset, length))

    def on_close(self, ts_ns: int) -> None:
        self.closed += 1
        self.events.append(("close", ts_ns))

    def stream(self, direction: Direction) -> bytes:
        return b"".join(e[2] for e in self.events if e[0] == "data" and e[1] == direction)

    def chunks(self, direction: Direction) -> list[tuple]:
        return [e for e in self.events if e[0] == "data" and e[1] == direction]

    def gaps(self, direction: Direction | None = None) -> list[tuple[Direction, int, int]]:
        return [e[1:] for e in self.events
                if e[0] == "gap" and (direction is None or e[1] == direction)]


_harnesses: list[Harness] = []


@pytest.fixture(autouse=True)
def _sessions_never_fail() -> Iterator[None]:
    """A Recorder's timeline assertion raises inside the assembler, which catches it as a
    session error: fail the test on any."""
    _harnesses.clear()
    yield
    assert [h.stats.session_errors for h in _harnesses] == [0] * len(_harnesses)


class Harness:
    """An Assembler with Recorder sessions; frames get refs (0, 0), (0, 1), ... in order."""

    def __init__(self, **options: int | float) -> None:
        _harnesses.append(self)
        self.sessions: list[Recorder] = []
        self.assembler = Assembler(self.open, **options)  # type: ignore[arg-type]
        self.count = 0
        self.ts = 1_700_000_000 * SECOND

    def open(self, flow: FlowInfo) -> Recorder:
        session = Recorder(flow)
        self.sessions.append(session)
        return session

    def feed(self, *frames: bytes, ts_ns: int | None = None) -> None:
        for frame in frames:
            decoded = decode(LINKTYPE_ETHERNET, frame)
            assert decoded is not None
            self.ts = ts_ns if ts_ns is not None else self.ts + 1000
            self.assembler.packet(self.ts, (0, self.count), decoded)
            self.count += 1

    def feed_raw(self, packets: Iterable[tuple[int, bytes, int]]) -> None:
        for ts_ns, frame, _wirelen in packets:
            self.feed(frame, ts_ns=ts_ns)

    @property
    def session(self) -> Recorder:
        assert len(self.sessions) == 1, [s.flow for s in self.sessions]
        return self.sessions[0]

    @property
    def stats(self):  # noqa: ANN201 - AssemblerStats
        return self.assembler.stats


def handshake(conn: TcpSegments) -> list[bytes]:
    return [conn.syn(), conn.syn_ack(), conn.client(0, flags="A")]


# -- in order, roles ---------------------------------------------------------------------------

def test_in_order_conversation_delivers_both_directions_and_closes_on_fins() -> None:
    request, response = b"GET / HTTP/1.1\r\n\r\n" * 200, b"HTTP/1.1 200 OK\r\n\r\n" * 300
    h = Harness()
    h.feed_raw(tcp_conversation([request, b"more"], [response]))
    session = h.session
    assert session.flow == FlowInfo("tcp", CLIENT_IP, 40000, SERVER_IP, 80)
    assert session.stream(C2S) == request + b"more"
    assert session.stream(S2C) == response
    assert [e[3] for e in session.chunks(C2S)][:3] == [0, 1400, 2800]
    assert session.gaps() == []
    assert session.closed == 1
    assert h.stats.flows_total == 1 and h.stats.flows_active == 0
    assert h.stats.bytes_delivered == len(request) + 4 + len(response)
    assert h.stats.retransmitted_bytes == h.stats.out_of_order_packets == 0


def test_ipv6_flow() -> None:
    h = Harness()
    h.feed_raw(tcp_conversation([b"ping"], [b"pong"], client=("fd00::1", 50000),
                                server=("fd00::2", 6379)))
    assert h.session.flow.client_ip == socket.inet_pton(socket.AF_INET6, "fd00::1")
    assert h.session.flow.server_port == 6379
    assert (h.session.stream(C2S), h.session.stream(S2C)) == (b"ping", b"pong")


def test_syn_decides_roles_whatever_the_ports() -> None:
    # The client uses port 80 and connects to an ephemeral port: the SYN wins over port hints.
    h = Harness()
    h.feed_raw(tcp_conversation([b"hi"], [b"ho"], client=("10.0.0.1", 80),
                                server=("10.0.0.2", 45000)))
    assert h.session.flow == FlowInfo("tcp", CLIENT_IP, 80, SERVER_IP, 45000)
    assert h.session.stream(C2S) == b"hi"


def test_syn_ack_first_seen_makes_its_sender_the_server() -> None:
    conn = TcpSegments(("10.0.0.1", 80), ("10.0.0.2", 45000))   # ports that would say otherwise
    h = Harness()
    h.feed(conn.syn_ack(), conn.client(0, flags="A"), conn.client(0, b"abc"),
           conn.server(0, b"de"))
    assert h.session.flow == FlowInfo("tcp", CLIENT_IP, 80, SERVER_IP, 45000)
    assert h.session.stream(C2S) == b"abc" and h.session.stream(S2C) == b"de"


@pytest.mark.parametrize(("sender_port", "receiver_port", "sender_is_client"), [
    (40000, 80, True),      # to a well-known port
    (80, 40000, False),     # from a well-known port: the sender is the server
    (51000, 5432, True),    # to a hinted port
    (6379, 51000, False),   # from a hinted port
    (443, 8080, False),     # both server-like: the lower port is the server
    (8080, 443, True),
    (50000, 51000, True),   # no hint: the first sender of payload is the client
    (51000, 50000, True),
])
def test_mid_stream_roles_by_port_hint(sender_port: int, receiver_port: int,
                                       sender_is_client: bool) -> None:
    h = Harness()
    h.feed(tcp_packet("10.0.0.1", "10.0.0.2", sender_port, receiver_port, seq=777,
                      ack=5, flags="PA", payload=b"first"))
    h.feed(tcp_packet("10.0.0.2", "10.0.0.1", receiver_port, sender_port, seq=5,
                      ack=782, flags="PA", payload=b"second"))
    session = h.session
    if sender_is_client:
        assert session.flow == FlowInfo("tcp", CLIENT_IP, sender_port, SERVER_IP, receiver_port)
        assert (session.stream(C2S), session.stream(S2C)) == (b"first", b"second")
    else:
        assert session.flow == FlowInfo("tcp", SERVER_IP, receiver_port, CLIENT_IP, sender_port)
        assert (session.stream(S2C), session.stream(C2S)) == (b"first", b"second")
    # Mid-stream, offset 0 is the first byte seen.
    assert h.assembler.seq_of(session.flow, C2S if sender_is_client else S2C, 0) == 777


@pytest.mark.parametrize(("sender_port", "receiver_port", "sender_is_client"), [
    (40000, 53, True), (53, 40000, False), (5353, 1883, True), (1883, 5353, False),
    (123, 123, True), (50000, 51000, True), (51000, 50000, True),
])
def test_udp_roles_by_port_and_guessed_only_without_a_server_like_port(
        sender_port: int, receiver_port: int, sender_is_client: bool) -> None:
    h = Harness()
    h.feed(udp_packet(sport=sender_port, dport=receiver_port, payload=b"first"))
    h.feed(udp_packet(src="10.0.0.2", dst="10.0.0.1", sport=receiver_port, dport=sender_port,
                      payload=b"second"))
    flow = h.session.flow
    if sender_is_client:
        assert (flow.client_port, flow.server_port) == (sender_port, receiver_port)
        assert h.session.stream(C2S) == b"first"
    else:
        assert (flow.client_port, flow.server_port) == (receiver_port, sender_port)
        assert h.session.stream(S2C) == b"first"
    server_like = [p for p in (sender_port, receiver_port) if is_server_port(p)]
    assert flow.roles_guessed == (not server_like) and not flow.handshake
    assert flow.facts is not None   # an ICMP port unreachable can refuse a UDP flow


def test_mid_stream_roles_remember_servers_seen_accepting_connections() -> None:
    # A connection to an unhinted port 45000 with its handshake, then (as after a capture
    # discontinuity) the same server seen mid-stream sending first: it is still the server.
    h = Harness()
    h.feed_raw(tcp_conversation([b"GET / HTTP/1.1\r\n\r\n"], [b"HTTP/1.1 200 OK\r\n\r\n"],
                                client=("10.0.0.1", 51000), server=("10.0.0.2", 45000)))
    h.assembler.close_all(h.ts)
    h.feed(tcp_packet("10.0.0.2", "10.0.0.1", 45000, 52000, seq=900, ack=5, flags="PA",
                      payload=b"body bytes"))
    h.feed(tcp_packet("10.0.0.1", "10.0.0.2", 52000, 45000, seq=5, ack=910, flags="PA",
                      payload=b"GET /next"))
    second = h.sessions[1]
    assert second.flow == FlowInfo("tcp", CLIENT_IP, 52000, SERVER_IP, 45000)
    assert (second.stream(S2C), second.stream(C2S)) == (b"body bytes", b"GET /next")


def test_stray_ack_of_an_unknown_connection_opens_no_flow() -> None:
    h = Harness()
    h.feed(tcp_packet(seq=10, ack=20, flags="A"), tcp_packet(seq=10, ack=20, flags="FA"),
           tcp_packet(seq=10, flags="R"))
    assert h.sessions == [] and h.stats.flows_total == 0 and h.stats.packets == 3


# -- out of order, retransmission, overlap ------------------------------------------------------

SEGMENTS = [(0, b"aaaa"), (4, b"bbbbbb"), (10, b"cc"), (12, b"dddddddd")]
JOINED = b"".join(data for _, data in SEGMENTS)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_every_order_of_four_segments_reassembles(order: tuple[int, ...]) -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn))
    h.feed(*(conn.client(*SEGMENTS[i]) for i in order))
    session = h.session
    assert session.stream(C2S) == JOINED
    assert session.gaps() == []
    assert h.stats.buffered_bytes == 0
    # Data waiting behind a hole is released in one chunk with the hole's filler.
    chunk_starts = [e[3] for e in session.chunks(C2S)]
    expected_starts = [SEGMENTS[i][0] for i in order
                       if all(j in order[:order.index(i)] for j in range(i))]
    assert chunk_starts == expected_starts
    assert h.stats.out_of_order_packets == 4 - len(expected_starts)


def test_retransmission_is_trimmed_and_counted() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn), conn.client(0, b"hello"), conn.client(0, b"hello"),
           conn.client(5, b" world"), conn.client(0, b"hello"))
    assert h.session.stream(C2S) == b"hello world"
    assert h.stats.retransmitted_bytes == 10
    assert h.stats.overlaps == 0


def test_partial_overlap_with_delivered_bytes_keeps_only_new_bytes() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn), conn.client(0, b"abcdef"), conn.client(3, b"DEFghi"))
    assert h.session.stream(C2S) == b"abcdefghi"
    assert h.stats.retransmitted_bytes == 3 and h.stats.overlaps == 1


def test_overlapping_buffered_segments_keep_the_first_copy() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn),
           conn.client(4, b"EFGH"),              # buffered first
           conn.client(2, b"cdXXXXij"),          # overlaps it fully, extends both ways
           conn.client(9, b"Y"),                 # fully inside buffered data: a duplicate
           conn.client(0, b"ab"))                # fills the hole
    assert h.session.stream(C2S) == b"abcdEFGHij"
    assert h.stats.retransmitted_bytes == 4 + 1
    assert h.stats.overlaps == 1
    assert h.stats.buffered_bytes == 0


def test_segment_covering_a_hole_and_buffered_data_is_coalesced() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn), conn.client(0, b"ab"), conn.client(6, b"gh"),
           conn.client(2, b"cdefGH"))            # in order, runs over the buffered "gh"
    session = h.session
    assert session.stream(C2S) == b"abcdefgh"
    assert [(e[2], e[3]) for e in session.chunks(C2S)] == [(b"ab", 0), (b"cdefgh", 2)]


def test_chunk_ref_is_the_earliest_packet_among_its_bytes() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn))                       # refs (0,0) .. (0,2)
    h.feed(conn.client(8, b"3333"))                # ref (0,3)
    h.feed(conn.client(4, b"2222"))                # ref (0,4)
    h.feed(conn.client(0, b"1111"))                # ref (0,5): fills the hole
    h.feed(conn.client(12, b"4444"))               # ref (0,6): in order
    chunks = h.session.chunks(C2S)
    assert [(e[2], e[5]) for e in chunks] == [(b"111122223333", (0, 3)), (b"4444", (0, 6))]


# -- gaps --------------------------------------------------------------------------------------

def test_hole_closed_by_rst_becomes_a_gap_then_data() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn), conn.client(0, b"abc"), conn.client(10, b"klm"),
           conn.client(20, b"uvw"))
    h.feed(conn.server(0, flags="R"))
    session = h.session
    assert [e[:4] if e[0] == "data" else e for e in session.events[:-1]] == [
        ("data", C2S, b"abc", 0), ("gap", C2S, 3, 7), ("data", C2S, b"klm", 10),
        ("gap", C2S, 13, 7), ("data", C2S, b"uvw", 20)]
    assert session.closed == 1
    assert (h.stats.gaps, h.stats.gap_bytes) == (2, 14)


def test_ack_beyond_data_marks_the_lost_bytes_as_a_gap_and_resyncs() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn), conn.client(0, b"GET /a"))
    # "GET /b" (6 bytes at offset 6) was lost by the capture; the server ACKs it.
    h.feed(conn.server(0, b"ok", ack=12))
    h.feed(conn.client(12, b"GET /c", ack=2))
    session = h.session
    assert session.gaps(C2S) == [(C2S, 6, 6)]
    assert session.stream(C2S) == b"GET /aGET /c"
    assert session.chunks(C2S)[-1][3] == 12
    assert h.stats.gap_bytes == 6


def test_ack_beyond_with_buffered_data_gaps_only_the_holes() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn), conn.client(0, b"aa"), conn.client(4, b"cc"))
    h.feed(conn.server(0, flags="A", ack=8))       # acks up to 8: holes at 2..4 and 6..8
    assert h.session.gaps(C2S) == [(C2S, 2, 2), (C2S, 6, 2)]
    assert h.session.stream(C2S) == b"aacc"
    assert h.stats.buffered_bytes == 0


def test_ack_of_a_fin_is_not_a_gap() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn), conn.client(0, b"bye", flags="FPA"), conn.server(0, flags="A", ack=4))
    # The client's FIN without the capture having seen it: the ACK is one past the data.
    conn2 = TcpSegments(("10.0.0.1", 40001))
    h.feed(*handshake(conn2), conn2.client(0, b"bye"), conn2.server(0, flags="A", ack=4))
    assert all(s.gaps() == [] for s in h.sessions)
    assert h.stats.gaps == 0


def test_buffer_bound_per_flow_gives_up_the_oldest_hole() -> None:
    conn = TcpSegments()
    h = Harness(max_buffered_bytes_per_flow=10)
    h.feed(*handshake(conn), conn.client(0, b"0123"))
    h.feed(conn.client(8, b"89ab"), conn.client(14, b"ef"))   # 6 bytes buffered: within
    assert h.session.gaps() == [] and h.stats.buffered_bytes == 6
    h.feed(conn.client(20, b"klmnop"))                          # 12 buffered: over the bound
    session = h.session
    assert session.gaps(C2S) == [(C2S, 4, 4)]
    assert session.stream(C2S) == b"012389ab"
    assert h.stats.buffer_evictions == 1
    assert h.stats.buffered_bytes == 8
    h.feed(conn.client(12, b"cd"), conn.client(16, b"ghij"))    # the later holes fill normally
    assert session.stream(C2S) == b"012389abcdefghijklmnop"
    assert h.stats.buffered_bytes == 0


def test_total_buffer_bound_is_shared_by_all_flows() -> None:
    first, second = TcpSegments(), TcpSegments(("10.0.0.1", 40001))
    h = Harness(max_buffered_bytes_total=10)
    h.feed(*handshake(first), *handshake(second))
    h.feed(first.client(4, b"xxxxxx"))        # 6 buffered
    h.feed(second.client(4, b"yyyyyy"))       # 12 in total: the second flow gives up its hole
    assert h.sessions[0].gaps() == []
    assert h.sessions[1].gaps() == [(C2S, 0, 4)]
    assert h.stats.buffered_bytes == 6 and h.stats.buffer_evictions == 1


# -- FIN, RST, port reuse ----------------------------------------------------------------------

def test_flow_closes_after_both_fins_and_absorbs_stragglers() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn), conn.client(0, b"req", flags="FPA"))
    assert h.session.closed == 0 and h.stats.flows_active == 1
    h.feed(conn.server(0, b"resp", flags="PA", ack=4), conn.server(4, flags="FA", ack=4))
    assert h.session.closed == 1 and h.stats.flows_active == 0
    # The last ACK and a late retransmission neither reopen nor start a flow.
    h.feed(conn.client(4, flags="A", ack=5), conn.server(0, b"resp", ack=4))
    assert h.stats.flows_total == 1
    assert h.session.stream(S2C) == b"resp"


def test_fin_with_a_hole_before_it_gaps_the_hole_at_close() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn), conn.client(0, b"ab"), conn.client(5, b"fg", flags="FPA"),
           conn.server(0, flags="FA"))
    session = h.session
    assert session.gaps() == [(C2S, 2, 3)]
    assert session.stream(C2S) == b"abfg" and session.closed == 1


def test_fin_without_data_lost_before_it_gaps_to_the_fin() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn), conn.client(0, b"ab"), conn.client(9, flags="FA"),
           conn.server(0, flags="FA"))
    assert h.session.gaps() == [(C2S, 2, 7)]


def test_rst_closes_at_once() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(*handshake(conn), conn.client(0, b"abc"), conn.client(3, flags="R"))
    assert h.session.closed == 1 and h.stats.flows_active == 0


def test_port_reuse_after_fin_starts_a_second_flow() -> None:
    h = Harness()
    h.feed_raw(tcp_conversation([b"first"], [b"one"], client_isn=100, server_isn=900))
    h.feed_raw(tcp_conversation([b"second"], [b"two"], client_isn=50_000, server_isn=70_000,
                                start_ns=1_800_000_000 * SECOND))
    assert len(h.sessions) == 2
    assert [(s.stream(C2S), s.stream(S2C), s.closed) for s in h.sessions] == [
        (b"first", b"one", 1), (b"second", b"two", 1)]
    assert h.stats.flows_total == 2


def test_new_syn_on_a_live_flow_closes_it_and_starts_another() -> None:
    old, new = TcpSegments(client_isn=10), TcpSegments(client_isn=99_999)
    h = Harness()
    h.feed(*handshake(old), old.client(0, b"abc"), old.client(10, b"z"))   # FIN never seen
    h.feed(*handshake(new), new.client(0, b"xyz"))
    first, second = h.sessions
    assert first.closed == 1 and first.gaps() == [(C2S, 3, 7)]
    assert second.closed == 0 and second.stream(C2S) == b"xyz"


def test_retransmitted_syn_and_syn_ack_are_the_same_flow() -> None:
    conn = TcpSegments()
    h = Harness()
    h.feed(conn.syn(), conn.syn(), conn.syn_ack(), conn.syn(), conn.syn_ack(),
           conn.client(0, b"abc"))
    assert len(h.sessions) == 1 and h.session.stream(C2S) == b"abc"


def test_syn_ack_with_another_isn_on_a_live_flow_is_a_new_connection() -> None:
    old, new = TcpSegments(server_isn=10), TcpSegments(client_isn=5555, server_isn=99_999)
    h = Harness()
    h.feed(*handshake(old), old.server(0, b"old"))
    h.feed(new.syn_ack(), new.client(0, b"new"))   # the new SYN was not captured
    first, second = h.sessions
    assert first.closed == 1 and second.stream(C2S) == b"new"


# -- sequence numbers ----------------------------------------------------------------------------

def test_sequence_numbers_wrap_around_2_to_the_32() -> None:
    conn = TcpSegments(client_isn=SEQ_MOD - 5, server_isn=SEQ_MOD - 1)
    h = Harness()
    h.feed(*handshake(conn))
    # Offsets 0..3 are before the wrap, 4.. after; deliver the post-wrap segment first.
    h.feed(conn.client(6, b"ghij"), conn.client(0, b"abcdef"), conn.server(0, b"response"))
    session = h.session
    assert session.stream(C2S) == b"abcdefghij" and session.stream(S2C) == b"response"
    assert h.assembler.seq_of(session.flow, C2S, 0) == SEQ_MOD - 4
    assert h.assembler.seq_of(session.flow, C2S, 6) == 2
    assert h.assembler.seq_of(session.flow, S2C, 0) == 0
    # Both offsets of an exchange at once, and with the roles swapped (the selector's).
    assert h.assembler.seqs_of(session.flow, False, 6, 0) == (2, 0)
    assert h.assembler.seqs_of(session.flow, False, 6, None) == (2, None)
    assert h.assembler.seqs_of(session.flow, True, 0, 6) == (0, 2)
    # Retransmission across the wrap is still recognised.
    h.feed(conn.client(2, b"cdefgh"))
    assert h.stats.retransmitted_bytes == 6 and session.stream(C2S) == b"abcdefghij"


def test_conversation_across_the_wrap_with_factory_isn() -> None:
    body = bytes(range(256)) * 40
    h = Harness()
    h.feed_raw(tcp_conversation([body], [body[::-1]], client_isn=SEQ_MOD - 3000,
                                server_isn=SEQ_MOD - 1))
    assert h.session.stream(C2S) == body and h.session.stream(S2C) == body[::-1]
    assert h.stats.gaps == 0


def test_seq_of_unknown_flow_or_udp_is_none() -> None:
    h = Harness()
    flow = FlowInfo("tcp", CLIENT_IP, 1, SERVER_IP, 2)
    assert h.assembler.seq_of(flow, C2S, 0) is None
    assert h.assembler.seqs_of(flow, False, 0, 0) == (None, None)
    h.feed(udp_packet(sport=40000, dport=53, payload=b"q"))
    assert h.assembler.seq_of(h.session.flow, C2S, 0) is None
    assert h.assembler.seqs_of(h.session.flow, False, 0, 0) == (None, None)


# -- flow table ------------------------------------------------------------------------------

def test_flow_table_evicts_the_least_recently_active_flow() -> None:
    a, b, c = (TcpSegments(("10.0.0.1", port)) for port in (40001, 40002, 40003))
    h = Harness(max_flows=2)
    h.feed(a.client(0, b"a1"))
    h.feed(b.client(0, b"b1"))
    h.feed(a.client(2, b"a2"))           # a is now more recent than b
    h.feed(c.client(0, b"c1"))           # the table is full: b goes
    by_port = {s.flow.client_port: s for s in h.sessions}
    assert by_port[40002].closed == 1
    assert by_port[40001].closed == 0 and by_port[40003].closed == 0
    assert h.stats.flows_evicted == 1 and h.stats.flows_active == 2
    h.feed(b.client(2, b"b2"))           # b comes back as a new flow, evicting a
    assert by_port[40001].closed == 1 and len(h.sessions) == 4


class ClosingOrder(Harness):
    """A Harness whose sessions note their client port as they close, in one list."""

    def __init__(self, **options: int | float) -> None:
        super().__init__(**options)
        self.closed_ports: list[int] = []

    def open(self, flow: FlowInfo) -> Recorder:
        session = super().open(flow)
        close = session.on_close

        def on_close(ts_ns: int) -> None:
            self.closed_ports.append(flow.client_port)
            close(ts_ns)

        session.on_close = on_close  # type: ignore[method-assign]
        return session


def test_flows_expire_and_close_in_the_tables_order_before_and_after_a_second_chance() -> None:
    # expire() and close_all() walk the table in its order (oldest queued first): read from
    # the plain dict's insertion order until a flow was moved to the end (eviction's second
    # chance), the OrderedDict's after; both must be the table's order.
    start = 1_700_000_000 * SECOND
    h = ClosingOrder(udp_idle_timeout_s=30)
    for port, ts in ((1001, 0), (1002, 1), (1003, 20), (1004, 2)):
        h.feed(udp_packet(sport=port, dport=53, payload=b"q"), ts_ns=start + ts * SECOND)
    h.assembler.expire(start + 33 * SECOND)          # 1001, 1002, 1004 idle; 1003 not
    h.feed(udp_packet(sport=1001, dport=53, payload=b"q"), ts_ns=start + 34 * SECOND)
    h.assembler.close_all(h.ts)
    assert h.closed_ports == [1001, 1002, 1004, 1003, 1001]

    h = ClosingOrder(max_flows=3)
    for port in (2001, 2002, 2003, 2001):             # 2001 active again since queued
        h.feed(udp_packet(sport=port, dport=53, payload=b"q"))
    h.feed(udp_packet(sport=2004, dport=53, payload=b"q"))   # full: 2001 moves on, 2002 goes
    h.assembler.close_all(h.ts)
    assert h.closed_ports == [2002, 2003, 2001, 2004]


def test_idle_flows_expire_by_transport_timeout() -> None:
    conn = TcpSegments()
    h = Harness(tcp_idle_timeout_s=120, udp_idle_timeout_s=30)
    start = 1_700_000_000 * SECOND
    h.feed(*handshake(conn), conn.client(0, b"abc"), conn.client(10, b"z"), ts_ns=start)
    h.feed(udp_packet(sport=40000, dport=53, payload=b"q"), ts_ns=start)
    tcp_session, udp_session = h.sessions
    h.assembler.expire(start + 29 * SECOND)
    assert not tcp_session.closed and not udp_session.closed
    h.assembler.expire(start + 31 * SECOND)
    assert udp_session.closed == 1 and not tcp_session.closed
    h.assembler.expire(start + 121 * SECOND)
    assert tcp_session.closed == 1
    assert tcp_session.gaps() == [(C2S, 3, 7)] and tcp_session.stream(C2S) == b"abcz"
    assert h.stats.flows_expired == 2 and h.stats.flows_active == 0
    assert h.stats.buffered_bytes == 0


def test_expired_and_lingering_flows_leave_the_table() -> None:
    conn = TcpSegments()
    h = Harness(tcp_idle_timeout_s=60)
    start = 1_700_000_000 * SECOND
    h.feed(conn.client(0, b"one"), ts_ns=start)
    h.assembler.expire(start + 61 * SECOND)
    h.feed(conn.client(3, b"two"), ts_ns=start + 62 * SECOND)   # no SYN: a new mid-stream flow
    assert [(s.stream(C2S), s.closed) for s in h.sessions] == [(b"one", 1), (b"two", 0)]
    # A flow closed by FIN/RST absorbs stragglers for CLOSED_LINGER_NS, then is forgotten.
    h.feed(conn.client(6, flags="R"), ts_ns=start + 63 * SECOND)
    h.feed(conn.client(6, b"late"), ts_ns=start + 64 * SECOND)
    assert len(h.sessions) == 2
    h.assembler.expire(start + 63 * SECOND + CLOSED_LINGER_NS + 1)
    h.feed(conn.client(10, b"much later"))
    assert len(h.sessions) == 3 and h.sessions[2].stream(C2S) == b"much later"


def test_close_all_closes_every_flow_once() -> None:
    h = Harness()
    h.feed_raw(tcp_conversation([b"a"], [b"b"], close=None))
    h.feed(udp_packet(payload=b"x"))
    h.assembler.close_all(h.ts)
    h.assembler.close_all(h.ts)
    assert [s.closed for s in h.sessions] == [1, 1]
    assert h.stats.flows_active == 0


# -- anchor (detail view) --------------------------------------------------------------------

def test_anchor_drops_bytes_before_the_anchor_and_fixes_roles() -> None:
    conn = TcpSegments()
    flow = FlowInfo("tcp", CLIENT_IP, 40000, SERVER_IP, 80)
    h = Harness()
    h.assembler.anchor(flow, conn.client_isn + 1 + 10, None)
    assert h.session.flow == flow
    # The server speaks first, from a port that is not a hint: roles stay as anchored.
    h.feed(conn.server(0, b"older response"))
    h.feed(conn.client(0, b"GET /old\r\n"), conn.client(10, b"GET /new\r\n"))
    session = h.session
    assert session.stream(C2S) == b"GET /new\r\n"
    assert session.chunks(C2S)[0][3] == 0
    assert session.stream(S2C) == b"older response"
    assert h.assembler.seq_of(flow, C2S, 0) == conn.client_isn + 11
    # A segment straddling the anchor keeps only what follows it.
    h2 = Harness()
    h2.assembler.anchor(flow, conn.client_isn + 1 + 4, conn.server_isn + 1 + 3)
    h2.feed(conn.client(0, b"0123456789"), conn.server(0, b"abcdef"))
    assert h2.session.stream(C2S) == b"456789" and h2.session.stream(S2C) == b"def"


def test_anchor_survives_the_handshake_and_other_flows_are_normal() -> None:
    flow = FlowInfo("tcp", CLIENT_IP, 40000, SERVER_IP, 80)
    h = Harness()
    h.assembler.anchor(flow, None, None)
    h.feed_raw(tcp_conversation([b"req"], [b"resp"]))
    h.feed_raw(tcp_conversation([b"other"], [b""], client=("10.0.0.1", 40009)))
    anchored, other = h.sessions
    assert (anchored.stream(C2S), anchored.stream(S2C), anchored.closed) == (b"req", b"resp", 1)
    assert other.flow.client_port == 40009 and other.stream(C2S) == b"other"


# -- UDP ---------------------------------------------------------------------------------------

def test_udp_datagrams_are_one_on_data_each() -> None:
    h = Harness()
    h.feed(udp_packet("10.0.0.1", "10.0.0.2", 40000, 53, b"query-1"),
           udp_packet("10.0.0.2", "10.0.0.1", 53, 40000, b"answer-1"),
           udp_packet("10.0.0.1", "10.0.0.2", 40000, 53, b"query-2"))
    session = h.session
    assert session.flow == FlowInfo("udp", CLIENT_IP, 40000, SERVER_IP, 53)
    assert [(e[2], e[3]) for e in session.chunks(C2S)] == [(b"query-1", 0), (b"query-2", 7)]
    assert [(e[2], e[5]) for e in session.chunks(S2C)] == [(b"answer-1", (0, 1))]


def test_udp_roles_first_sender_unless_the_port_says_otherwise() -> None:
    h = Harness()
    h.feed(udp_packet("10.0.0.2", "10.0.0.1", 53, 40000, b"late answer"))
    h.feed(udp_packet("10.0.0.1", "10.0.0.2", 41000, 42000, b"hello"))
    dns, other = h.sessions
    assert dns.flow == FlowInfo("udp", CLIENT_IP, 40000, SERVER_IP, 53)
    assert dns.stream(S2C) == b"late answer"
    assert other.flow == FlowInfo("udp", CLIENT_IP, 41000, SERVER_IP, 42000)


def test_udp_and_tcp_on_the_same_ports_are_different_flows() -> None:
    h = Harness()
    h.feed(udp_packet(sport=40000, dport=80, payload=b"u"),
           tcp_packet(sport=40000, dport=80, seq=1, flags="PA", payload=b"t"))
    assert sorted(s.flow.transport for s in h.sessions) == ["tcp", "udp"]


# -- failing sessions --------------------------------------------------------------------------

class Exploding(Recorder):
    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        super().on_data(direction, data, offset, ts_ns, ref)
        if b"boom" in data:
            raise ValueError("dissector bug")


def test_a_raising_session_is_closed_and_the_assembler_goes_on() -> None:
    sessions: list[Recorder] = []

    def open_session(flow: FlowInfo) -> Recorder:
        sessions.append(Exploding(flow))
        return sessions[-1]

    assembler = Assembler(open_session)
    frames = [*tcp_conversation([b"ok", b"boom", b"after"], [b"r1", b"r2", b"r3"]),
              *tcp_conversation([b"fine"], [b"yes"], client=("10.0.0.1", 40001))]
    for index, (ts_ns, frame, _) in enumerate(frames):
        decoded = decode(LINKTYPE_ETHERNET, frame)
        assert decoded is not None
        assembler.packet(ts_ns, (0, index), decoded)
    broken, healthy = sessions
    assert broken.stream(C2S) == b"okboom"            # nothing after the failure
    assert broken.stream(S2C) == b"r1"
    assert broken.closed == 1
    assert healthy.stream(C2S) == b"fine" and healthy.closed == 1
    assert assembler.stats.session_errors == 1
    assert assembler.stats.flows_active == 0


def test_open_session_raising_leaves_the_flow_undissected() -> None:
    def open_session(flow: FlowInfo) -> Recorder:
        raise RuntimeError("no dissector")

    assembler = Assembler(open_session)
    for index, (ts_ns, frame, _) in enumerate(tcp_conversation([b"a"], [b"b"])):
        assembler.packet(ts_ns, (0, index), decode(LINKTYPE_ETHERNET, frame))  # type: ignore[arg-type]
    assert assembler.stats.session_errors == 1
    assert assembler.stats.flows_total == 1 and assembler.stats.flows_active == 0


# -- property: any order, any duplicates, the same bytes -----------------------------------------

def _cuts(draw: st.DrawFn, size: int) -> list[tuple[int, int]]:
    points = sorted(draw(st.sets(st.integers(1, max(1, size - 1)), max_size=12))) if size > 1 else []
    bounds = [0, *[p for p in points if 0 < p < size], size]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


@st.composite
def shuffled_conversations(draw: st.DrawFn) -> tuple[TcpSegments, bytes, bytes, list[bytes]]:
    conn = TcpSegments(client_isn=draw(st.integers(0, SEQ_MOD - 1)),
                       server_isn=draw(st.integers(0, SEQ_MOD - 1)))
    client = draw(st.binary(min_size=1, max_size=600))
    server = draw(st.binary(max_size=600))
    frames: list[bytes] = []
    for data, make in ((client, conn.client), (server, conn.server)):
        ranges = _cuts(draw, len(data))
        # Retransmissions with other boundaries: overlapping copies of random ranges.
        for _ in range(draw(st.integers(0, 6))):
            start = draw(st.integers(0, max(0, len(data) - 1)))
            end = draw(st.integers(start, len(data)))
            if end > start:
                ranges.append((start, end))
        frames += [make(a, data[a:b]) for a, b in ranges]
    frames += draw(st.lists(st.sampled_from(frames), max_size=5)) if frames else []  # duplicates
    seed = draw(st.integers(0, 2 ** 32))
    random.Random(seed).shuffle(frames)
    return conn, client, server, frames


@settings(max_examples=200, deadline=None)
@given(shuffled_conversations())
def test_shuffled_duplicated_segments_always_reassemble(
        case: tuple[TcpSegments, bytes, bytes, list[bytes]]) -> None:
    conn, client, server, frames = case
    h = Harness()
    h.feed(*handshake(conn), *frames)
    h.feed(conn.client(len(client), flags="FA"), conn.server(len(server), flags="FA"))
    session = h.session
    assert session.stream(C2S) == client
    assert session.stream(S2C) == server
    assert session.gaps() == [] and session.closed == 1
    assert h.stats.buffered_bytes == 0


def test_restart_session_closes_it_and_reads_on_with_a_new_one_from_the_next_byte() -> None:
    h = Harness()
    conn = TcpSegments()
    h.feed(*handshake(conn), conn.client(0, b"first part "))
    old = h.session
    assert h.assembler.restart_session(old.flow, h.ts)
    assert old.closed == 1 and len(h.sessions) == 2
    new = h.sessions[1]
    assert new.flow is old.flow   # the same flow: its roles, facts and sequence numbers
    new.next_offset = {C2S: 11, S2C: 0}   # it reads on where the old one stopped
    h.feed(conn.client(11, b"rest"), conn.server(0, b"reply"))
    assert new.chunks(C2S)[0][2:4] == (b"rest", 11) and new.stream(S2C) == b"reply"
    assert h.assembler.seq_of(new.flow, C2S, 11) == (conn.client_isn + 1 + 11) % SEQ_MOD
    assert old.stream(C2S) == b"first part "
    gone = FlowInfo("tcp", CLIENT_IP, 1, SERVER_IP, 2)
    assert not h.assembler.restart_session(gone, h.ts)   # not in the table: nothing to do
