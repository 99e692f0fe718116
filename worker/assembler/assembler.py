"""The assembler: decoded packets in, per-flow in-order byte streams out to dissector Sessions.

Per packet the work is one dict lookup by the packet's addresses and ports (one bytes slice) and, for in-order TCP data, a few
integer operations before `Session.on_data`; nothing is allocated and payloads are not copied.
Only out-of-order data is buffered (see worker.assembler.tcp), bounded per flow and in total.

Each Session sees one consistent timeline per direction: `on_data` and `on_gap` calls whose
offsets follow each other without holes or overlaps, then one `on_close`. When buffered data
is released, it comes as one chunk with the earliest PacketRef among its packets (re-reading
the store from there finds them all) and the timestamp of the packet that released it.
"""

from __future__ import annotations

from struct import Struct
from typing import Final
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import msgspec

from worker.assembler.flows import (Flow, FlowKey, Half, flow_key, key_parts, reverse_key,
                                    roles_from_ports)
from worker.assembler.tcp import HALF_SPACE, SEQ_MASK, insert, seq_delta, take_run
from worker.connections import SYN_TIMEOUT_NS, TcpFacts
from worker.dissectors.base import DatagramSession, Direction, FlowInfo, Session
from worker.dissectors.stream import TwoWaySession
from worker.packet import ACK, FIN, RST, SYN, TCP, UNREACHABLE, Decoded, PacketRef

MAX_KNOWN_SERVERS: Final = 65536
_PORTS: Final = Struct("!HH")

log = logging.getLogger("shark.worker.assembler")

# A closed TCP flow stays in the table this long (capture time) so that its stragglers (the
# last ACK, retransmissions, a late RST) are absorbed instead of starting a bogus flow.
CLOSED_LINGER_NS: Final = 10_000_000_000

# Called when a TCP connection failed (worker.connections): after its session closed for a
# refusal or a reset, when its SYNs have gone unanswered for SYN_TIMEOUT_NS.
OnFailure = Callable[[FlowInfo, TcpFacts, int], None]


class AssemblerStats(msgspec.Struct):
    flows_active: int = 0           # flows with an open session
    flows_total: int = 0            # flows ever opened
    flows_evicted: int = 0          # closed early because the flow table was full
    flows_expired: int = 0          # closed by the idle timeout
    packets: int = 0
    bytes_delivered: int = 0        # payload bytes handed to sessions
    gaps: int = 0                   # on_gap calls
    gap_bytes: int = 0
    retransmitted_bytes: int = 0    # bytes trimmed because they were delivered or buffered
    overlaps: int = 0               # segments partly new, partly seen before
    out_of_order_packets: int = 0   # segments buffered ahead of a hole
    buffered_bytes: int = 0         # out-of-order bytes held now, all flows
    buffer_evictions: int = 0       # holes given up on because a buffer bound was passed
    session_errors: int = 0         # exceptions raised by sessions (or by open_session)
    non_ip_or_fragments: int = 0    # counted by the caller: packets decode() returned None for


# The plain dict's keys view, for an OrderedDict: iterated in the underlying dict's insertion
# order, without the OrderedDict's lookup of each key (Assembler._flows).
_DICT_KEYS: Final = dict.keys


# TwoWaySession's own on_data (a session class that overrides it is not called directly).
_TWO_WAY_ON_DATA: Final = TwoWaySession.on_data


def _probe_stream(flow: Flow, session: Session) -> None:
    """After an in-order chunk went through the flow's session (a dissection selector until a
    dissector claims the flow, then its bound method forwards each call unchanged): once the
    selector has handed the flow to a TwoWaySession whose on_data is TwoWaySession's own,
    that session, for the assembler to call directly (through the selector, each chunk was a
    Python method call with its five arguments boxed: ~1k instructions a packet). At most
    flow.probes calls look (a session of another kind has no claimed one)."""
    claimed = getattr(session, "session", None)
    if claimed is None:
        flow.probes -= 1
        return
    flow.probes = 0
    if isinstance(claimed, TwoWaySession) and type(claimed).on_data is _TWO_WAY_ON_DATA \
            and getattr(session, "on_data", None) == claimed.on_data:
        flow.stream = claimed


class Assembler:
    def __init__(self, open_session: Callable[[FlowInfo], Session], *, max_flows: int = 65536,
                 max_buffered_bytes_per_flow: int = 4 * 1024 * 1024,
                 max_buffered_bytes_total: int = 256 * 1024 * 1024,
                 tcp_idle_timeout_s: float = 120.0, udp_idle_timeout_s: float = 30.0,
                 on_failure: OnFailure | None = None) -> None:
        if max_flows < 1:
            raise ValueError(f"max_flows {max_flows}: expected at least 1")
        self._open_session = open_session
        self._on_failure = on_failure
        self._max_flows = max_flows
        self._max_flow_buffer = max_buffered_bytes_per_flow
        self._max_total_buffer = max_buffered_bytes_total
        self._tcp_idle_ns = int(tcp_idle_timeout_s * 1e9)
        self._udp_idle_ns = int(udp_idle_timeout_s * 1e9)
        # Per transport: a TCP and a UDP flow may share addresses and ports.
        self._tcp_halves: dict[FlowKey, Half] = {}
        self._udp_halves: dict[FlowKey, Half] = {}
        # Every flow in the table, oldest queued first: LRU eviction by second chance, so a
        # packet only stamps flow.last_ns and never reorders this.
        self._order: OrderedDict[Flow, None] = OrderedDict()
        # True once a flow was moved to the end of _order (eviction's second chance): until
        # then its order is its underlying dict's insertion order, which a plain dict's
        # iteration gives without the OrderedDict's hash lookup per flow (_flows).
        self._moved = False
        self._clock_ns = 0   # latest time given to expire()/close_all()
        # Endpoints seen accepting connections (SYN/SYN-ACK), most recent last: they decide
        # roles of flows later seen mid-stream, where ports alone often cannot.
        self._known_servers: OrderedDict[tuple[int, bytes, int], None] = OrderedDict()
        # The counters every packet or flow moves are native ints here, put into the
        # AssemblerStats when it is read (`stats`): a Struct's field += is a generic attribute
        # get, add and set (~1.3k instructions a packet, compiled).
        self._stats = AssemblerStats()
        self._packets = 0
        self._delivered = 0
        self._flows_total = 0
        self._flows_active = 0

    @property
    def stats(self) -> AssemblerStats:
        stats = self._stats
        stats.packets = self._packets
        stats.bytes_delivered = self._delivered
        stats.flows_total = self._flows_total
        stats.flows_active = self._flows_active
        return stats

    # -- per packet -------------------------------------------------------------------------
    def packet(self, ts_ns: int, ref: PacketRef, decoded: Decoded) -> None:
        proto, src, sport, dst, dport, flags, seq, payload, ack, window = decoded
        self.packet_fields(ts_ns, ref, proto, src + dst + _PORTS.pack(sport, dport), sport,
                           dport, flags, seq, payload, ack, window)

    def packet_fields(self, ts_ns: int, ref: PacketRef, proto: int, key: FlowKey, sport: int,
                      dport: int, flags: int, seq: int, payload: bytes, ack: int,
                      window: int) -> None:
        """packet() of packet.decode_fields' fields: compiled, they come as native values,
        without the tuple and the int objects a Decoded is made of; `key` is the packet's
        addresses then ports (flows.FlowKey)."""
        self._packets += 1
        if proto != TCP:
            if proto == UNREACHABLE:
                self._unreachable(key, ts_ns, ref)
                return
            half = self._udp_halves.get(key)
            if half is None:
                # Unpacked, not *args: compiled, a star call goes through the Python wrapper.
                sender_client, guessed = roles_from_ports(sport, dport)
                half = self._new_flow(False, key, sender_client, guessed, ts_ns)
            flow = half.flow
            flow.last_ns = ts_ns
            if payload:
                size = len(payload)
                offset = half.delivered
                half.delivered = offset + size
                self._delivered += size
                session = flow.session
                if session is not None:
                    try:
                        if isinstance(session, DatagramSession):   # a direct call, compiled
                            session.on_data(half.direction, payload, offset, ts_ns, ref)
                        else:
                            session.on_data(half.direction, payload, offset, ts_ns, ref)
                    except Exception:
                        self._session_failed(flow, ts_ns)
            return

        half = self._tcp_halves.get(key)
        if flags & SYN:
            syn_ack = flags & ACK
            src, sport, dst, dport = key_parts(key)
            self._remember_server((TCP, src, sport) if syn_ack else (TCP, dst, dport))
            if half is None or self._starts_new_connection(half, seq, syn_ack):
                half = self._replace(half, key, not syn_ack, ts_ns)
        elif half is None:
            if not payload:
                return   # a stray ACK/FIN/RST of a connection we never saw
            sender_client, guessed = self._mid_stream_roles(key)
            half = self._new_flow(True, key, sender_client, guessed, ts_ns)
        flow = half.flow
        if flow.closed:
            return
        flow.last_ns = ts_ns
        if flags & SYN:
            seq = self._syn(half, flags, seq, ack, ts_ns, ref)
        if flags & ACK:
            peer_next = half.peer.next_seq
            if peer_next is not None:
                acked = (ack - peer_next) & SEQ_MASK
                if 0 < acked < HALF_SPACE:
                    self._acked_beyond(half.peer, acked, ts_ns)
        if payload:
            expected = half.next_seq
            if expected is None:
                half.base = half.next_seq = expected = seq
            if seq == expected and not half.pending:
                size = len(payload)
                offset = half.delivered
                half.delivered = offset + size
                half.next_seq = (expected + size) & SEQ_MASK
                self._delivered += size
                session = flow.session
                if session is not None:
                    stream = flow.stream
                    try:
                        if stream is not None:    # a native call: no boxed arguments
                            stream.on_data(half.direction, payload, offset, ts_ns, ref)
                        else:
                            session.on_data(half.direction, payload, offset, ts_ns, ref)
                            if flow.probes:
                                _probe_stream(flow, session)
                    except Exception:
                        self._session_failed(flow, ts_ns)
            else:
                self._segment(half, seq, payload, ts_ns, ref)
        elif not window and not flags & (SYN | FIN | RST):
            flow.info.facts.zero_windows += 1
        if flags & (FIN | RST):
            self._fin_or_rst(half, flags, seq, len(payload), ts_ns, ref)

    # -- the pipeline's clock and the detail view --------------------------------------------
    def expire(self, now_ns: int) -> None:
        """Close flows idle longer than their timeout; forget closed flows after a linger."""
        self._clock_ns = max(self._clock_ns, now_ns)
        tcp_idle, udp_idle = self._tcp_idle_ns, self._udp_idle_ns
        for flow in self._flows():
            idle = now_ns - flow.last_ns
            if flow.is_tcp and not flow.closed and flow.info.facts.synack_ns is None:
                self._check_syn_timeout(flow, now_ns)   # only connections still unanswered
            if flow.closed:
                if idle > CLOSED_LINGER_NS:
                    self._remove(flow)
            elif idle > (tcp_idle if flow.is_tcp else udp_idle):
                self._stats.flows_expired += 1
                abandoned = self._abandoned(flow)
                self._close(flow, now_ns)
                self._remove(flow)
                if abandoned and self._on_failure is not None:
                    self._on_failure(flow.info, flow.info.facts, now_ns)

    def close_all(self, ts_ns: int) -> None:
        """End of capture or a discontinuity: every session gets on_close; the table empties."""
        self._clock_ns = max(self._clock_ns, ts_ns)
        flows = self._flows()
        for flow in flows:
            self._close(flow, ts_ns)
        self._tcp_halves.clear()
        self._udp_halves.clear()
        self._order.clear()
        for flow in flows:
            flow.unlink()

    def anchor(self, flow: FlowInfo, client_start: int | None, server_start: int | None) -> None:
        """Fix the roles of `flow` and, per direction, the TCP sequence number that becomes
        stream offset 0 (earlier bytes are dropped); None starts at the first byte seen."""
        key = flow_key(flow)
        halves = self._tcp_halves if flow.transport == "tcp" else self._udp_halves
        for existing in (halves.get(key), halves.get(reverse_key(key))):
            if existing is not None:
                self._close(existing.flow, self._clock_ns)
                self._remove(existing.flow)
        anchored = self._install(flow, key, self._clock_ns, anchored=True)
        if anchored.is_tcp:
            if client_start is not None:
                anchored.client.start_at(client_start & SEQ_MASK)
            if server_start is not None:
                anchored.server.start_at(server_start & SEQ_MASK)

    def restart_session(self, flow: FlowInfo, ts_ns: int) -> bool:
        """Close the session of a live flow (it emits what it has, cut) and give the flow a new
        one that reads on from the next byte, as after a gap: the flow keeps its roles, facts
        and sequence numbers (the worker-wide memory budget's cut). False if it is gone."""
        halves = self._tcp_halves if flow.transport == "tcp" else self._udp_halves
        half = halves.get(flow_key(flow))
        if half is None or half.flow.info is not flow or half.flow.closed:
            return False
        live = half.flow
        session, live.session = live.session, None
        live.new_session()   # (nor is its stream session called any more)
        if session is None:
            return False   # its session failed: the flow is no longer dissected
        try:
            session.on_close(ts_ns)
        except Exception:
            self._stats.session_errors += 1
            log.warning("closing the session of %s failed", flow, exc_info=True)
        try:
            live.session = self._open_session(flow)
        except Exception:
            self._stats.session_errors += 1
            log.warning("opening a session for %s failed; the flow is not dissected", flow,
                        exc_info=True)
        return True

    def _flows(self) -> list[Flow]:
        """The flows of _order, in its order. Walked every second of capture time (expire):
        over an OrderedDict's iterator each step looks its key up in the dict, a cache miss
        per flow with tens of thousands of flows (perf: ~10% of a DNS capture's dissection
        time); a plain dict's iteration reads its entries in order, ~7x faster."""
        if self._moved:
            return list(self._order)
        return list(_DICT_KEYS(self._order))

    def live_sessions(self) -> list[Session]:
        """The sessions of the flows in the table, oldest flow first (a closed flow, or one
        whose session failed, has none): what a memory budget sums."""
        sessions: list[Session] = []
        for flow in self._order:
            session = flow.session
            if session is not None:
                sessions.append(session)
        return sessions

    def seq_of(self, flow: FlowInfo, direction: Direction, offset: int) -> int | None:
        """The TCP sequence number (mod 2**32) of stream offset `offset`; None for UDP or when
        that direction has not started or the flow is gone."""
        if flow.transport != "tcp":
            return None
        half = self._tcp_halves.get(flow_key(flow))
        if half is None:
            return None
        owner = half.flow
        if owner.info is not flow and owner.info != flow:
            return None
        base = (owner.client if direction == Direction.CLIENT_TO_SERVER else owner.server).base
        return None if base is None else (base + offset) & SEQ_MASK

    def seqs_of(self, flow: FlowInfo, swapped: bool, client_offset: int,
                server_offset: int | None, key: FlowKey = b"") -> tuple[int | None, int | None]:
        """seq_of of an exchange's two offsets with one lookup: the session's client offset
        and its server offset (None: none, and None back). `swapped`: the session's client is
        the assembler's server (the selector swapped guessed roles). `key`: flow_key(flow),
        when the caller keeps it (made here otherwise)."""
        if flow.transport != "tcp":
            return None, None
        half = self._tcp_halves.get(key or flow_key(flow))
        if half is None:
            return None, None
        owner = half.flow
        if owner.info is not flow and owner.info != flow:
            return None, None
        to_server, to_client = (owner.server, owner.client) if swapped else \
            (owner.client, owner.server)
        base = to_server.base
        client_seq = None if base is None else (base + client_offset) & SEQ_MASK
        if server_offset is None:
            return client_seq, None
        base = to_client.base
        return client_seq, None if base is None else (base + server_offset) & SEQ_MASK

    # -- flow table -------------------------------------------------------------------------
    def _starts_new_connection(self, half: Half, seq: int, syn_ack: int) -> bool:
        """A SYN on a known 4-tuple. A retransmission (same ISN) belongs to the flow, and so
        does the first SYN-ACK of a connection whose SYN we saw; any other SYN is a new
        connection (port reuse), unless the roles are anchored."""
        flow = half.flow
        if flow.closed:
            return True
        if flow.anchored:
            return False
        if half.base is None:
            return not syn_ack
        return half.base != (seq + 1) & SEQ_MASK

    def _remember_server(self, endpoint: tuple[int, bytes, int]) -> None:
        servers = self._known_servers
        if endpoint in servers:
            servers.move_to_end(endpoint)
            return
        servers[endpoint] = None
        if len(servers) > MAX_KNOWN_SERVERS:
            servers.popitem(last=False)

    def _mid_stream_roles(self, key: FlowKey) -> tuple[bool, bool]:
        """(sender is client, guessed) for a TCP flow first seen without its SYN (capture
        started late, or flows reset after a discontinuity): an endpoint seen accepting a
        connection before is the server; else the port hints; else a guess the selector may
        correct by content."""
        src, sport, dst, dport = key_parts(key)
        if (TCP, src, sport) in self._known_servers:
            return False, False
        if (TCP, dst, dport) in self._known_servers:
            return True, False
        return roles_from_ports(sport, dport)

    def _replace(self, old: Half | None, key: FlowKey, sender_client: bool, ts_ns: int) -> Half:
        if old is not None:
            self._close(old.flow, ts_ns)
            self._remove(old.flow)
        return self._new_flow(True, key, sender_client, False, ts_ns, handshake=True)

    def _new_flow(self, tcp: bool, key: FlowKey, sender_client: bool, guessed: bool, ts_ns: int,
                  handshake: bool = False) -> Half:
        """A flow for a packet with this key; returns the sender's half."""
        src, sport, dst, dport = key_parts(key)
        # Both assemblers' UDP flows too: an ICMP port unreachable refuses them (failure).
        facts = TcpFacts()
        transport = "tcp" if tcp else "udp"
        if sender_client:
            info = FlowInfo(transport, src, sport, dst, dport, guessed, handshake, facts)
            return self._install(info, key, ts_ns, False, reverse_key(key)).client
        info = FlowInfo(transport, dst, dport, src, sport, guessed, handshake, facts)
        return self._install(info, reverse_key(key), ts_ns, False, key).server

    def _install(self, info: FlowInfo, client_key: FlowKey, ts_ns: int,
                 anchored: bool = False, server_key: FlowKey | None = None) -> Flow:
        order = self._order
        while len(order) >= self._max_flows:
            self._evict_one(ts_ns)
        if info.facts is None and info.transport == "tcp":   # an anchored flow (detail view)
            info = replace(info, facts=TcpFacts())
        session: Session | None = None
        try:
            session = self._open_session(info)
        except Exception:
            self._stats.session_errors += 1
            log.warning("opening a session for %s failed; the flow is not dissected", info,
                        exc_info=True)
        flow = Flow(info, client_key, reverse_key(client_key) if server_key is None else server_key,
                    session, ts_ns, anchored)
        halves = self._tcp_halves if flow.is_tcp else self._udp_halves
        halves[client_key] = flow.client
        halves[flow.server_key] = flow.server
        order[flow] = None
        self._flows_total += 1
        self._flows_active += 1
        return flow

    def _evict_one(self, ts_ns: int) -> None:
        """Evict the least recently active flow (second chance: a flow active since it was
        queued goes to the back once)."""
        order = self._order
        while order:
            flow = next(iter(order))
            if not flow.closed and flow.last_ns > flow.queued_ns:
                flow.queued_ns = flow.last_ns
                order.move_to_end(flow)
                self._moved = True
                continue
            if not flow.closed:
                self._stats.flows_evicted += 1
                self._close(flow, ts_ns)
            self._remove(flow)
            return

    def _remove(self, flow: Flow) -> None:
        """Out of the table, for good (a closed flow; unlinked, so freed by reference counts).
        A flow removed before is left alone: anchor() may meet both halves of one flow."""
        order = self._order
        if flow not in order:
            return
        halves = self._tcp_halves if flow.is_tcp else self._udp_halves
        key = flow.key
        if halves.get(key) is flow.client:
            del halves[key]
        key = flow.server_key
        if halves.get(key) is flow.server:
            del halves[key]
        del order[flow]
        flow.unlink()

    def _close(self, flow: Flow, ts_ns: int) -> None:
        """Deliver what is buffered (holes become gaps) and close the session; the flow stays
        in the table, closed, until removed."""
        if flow.closed:
            return
        if flow.is_tcp:     # a UDP flow buffers nothing and has no FIN
            for half in (flow.client, flow.server):
                while half.pending:
                    self._skip_hole(half, ts_ns)
                if half.fin_offset is not None and half.delivered < half.fin_offset:
                    self._gap(half, half.fin_offset - half.delivered, ts_ns)
        flow.closed = True
        flow.last_ns = max(flow.last_ns, ts_ns)
        self._flows_active -= 1
        facts: TcpFacts | None = flow.info.facts
        failed = False
        if facts is not None and facts.failure is None and flow.is_tcp:
            # Known before the session closes, so that an exchange the RST cut can say so.
            facts.failure = facts.reset_failure()
            if facts.failure is None and self._syns_timed_out(flow, ts_ns):
                facts.failure = "timeout"
            failed = facts.failure is not None
        session, flow.session = flow.session, None
        flow.new_session()   # its stream session freed with it, not held while it lingers
        if session is not None:
            try:
                if isinstance(session, DatagramSession):   # a direct call, compiled
                    session.on_close(ts_ns)
                else:
                    session.on_close(ts_ns)
            except Exception:
                self._stats.session_errors += 1
                log.warning("closing the session of %s failed", flow.info, exc_info=True)
        if failed and self._on_failure is not None:
            self._on_failure(flow.info, facts, ts_ns)   # type: ignore[arg-type]

    def _unreachable(self, key: FlowKey, ts_ns: int, ref: PacketRef) -> None:
        """An ICMP port unreachable about a datagram of a UDP flow: nothing listens there. The
        flow is refused and ends now (its pending request comes out unanswered)."""
        half = self._udp_halves.get(key)
        if half is None or half.flow.closed:
            return
        flow = half.flow
        facts: TcpFacts = flow.info.facts
        if facts.failure is None:
            facts.failure, facts.rst_by, facts.rst_ns, facts.last_ref = \
                "refused", half.peer.direction, ts_ns, ref
            self._close(flow, ts_ns)
            if self._on_failure is not None:
                self._on_failure(flow.info, facts, ts_ns)

    def _abandoned(self, flow: Flow) -> bool:
        """A connection idle past its timeout that was established and then silent: no byte,
        FIN or RST from either side (marked so: its entry says so)."""
        facts: TcpFacts | None = flow.info.facts
        if not flow.is_tcp or facts is None or facts.failure is not None or facts.synack_ns is None \
                or facts.fin_by is not None or facts.rst_by is not None \
                or flow.client.delivered or flow.server.delivered:
            return False
        facts.failure = "abandoned"
        return True

    def _syns_timed_out(self, flow: Flow, now_ns: int) -> bool:
        facts: TcpFacts = flow.info.facts
        return facts.syn_ns is not None and facts.synack_ns is None and \
            now_ns - facts.syn_ns >= SYN_TIMEOUT_NS and not flow.client.delivered and \
            not flow.server.delivered

    def _check_syn_timeout(self, flow: Flow, now_ns: int) -> None:
        facts: TcpFacts = flow.info.facts
        if facts.failure is None and self._syns_timed_out(flow, now_ns):
            facts.failure = "timeout"
            if self._on_failure is not None:
                self._on_failure(flow.info, facts, now_ns)

    def _session_failed(self, flow: Flow, ts_ns: int) -> None:
        """A session raised: count it, close it, keep the flow without dissection."""
        self._stats.session_errors += 1
        log.warning("the session of %s failed; the flow is no longer dissected", flow.info,
                    exc_info=True)
        session, flow.session = flow.session, None
        flow.new_session()   # its stream session freed with it, not held while it lingers
        if session is not None:
            try:
                session.on_close(ts_ns)
            except Exception:
                self._stats.session_errors += 1

    # -- TCP --------------------------------------------------------------------------------
    def _syn(self, half: Half, flags: int, seq: int, ack: int, ts_ns: int, ref: PacketRef) -> int:
        """Start the stream(s) a SYN or SYN-ACK tells us about; returns the sequence number of
        the first data byte (the SYN takes one)."""
        facts: TcpFacts = half.flow.info.facts
        if flags & ACK:
            if facts.synack_ns is None:
                facts.synack_ns = ts_ns
        else:
            facts.syns += 1
            facts.last_ref = ref
            if facts.syn_ns is None:
                facts.syn_ns = ts_ns
        data_seq = (seq + 1) & SEQ_MASK
        if half.base is None:
            half.start_at(data_seq)
        if flags & ACK and half.peer.base is None:
            half.peer.start_at(ack & SEQ_MASK)
        return data_seq

    def _segment(self, half: Half, seq: int, payload: bytes, ts_ns: int, ref: PacketRef) -> None:
        """The slow path: a segment that is not simply the next bytes of the stream."""
        stats = self._stats
        assert half.next_seq is not None
        delta = seq_delta(seq, half.next_seq)
        size = len(payload)
        if delta < 0:
            facts: TcpFacts = half.flow.info.facts
            if -delta >= size:
                stats.retransmitted_bytes += size
                facts.retransmitted_bytes += size
                return
            stats.retransmitted_bytes += -delta
            facts.retransmitted_bytes += -delta
            stats.overlaps += 1
            payload = payload[-delta:]
            size += delta
            delta = 0
            if not half.pending:
                self._deliver(half, payload, ts_ns, ref)
                return
        pending = half.pending
        if isinstance(pending, tuple):
            pending = []
            half.pending = pending
        stored = insert(pending, half.delivered + delta, payload, ref)
        if stored < size:
            stats.retransmitted_bytes += size - stored
            half.flow.info.facts.retransmitted_bytes += size - stored
            if stored:
                stats.overlaps += 1
        if not stored:
            return
        flow = half.flow
        flow.buffered += stored
        stats.buffered_bytes += stored
        if delta == 0:
            self._drain(half, ts_ns)
            return
        stats.out_of_order_packets += 1
        if flow.buffered > self._max_flow_buffer or stats.buffered_bytes > self._max_total_buffer:
            self._shed(flow, half, ts_ns)

    def _deliver(self, half: Half, data: bytes, ts_ns: int, ref: PacketRef) -> None:
        size = len(data)
        offset = half.delivered
        half.delivered = offset + size
        half.next_seq = (half.next_seq + size) & SEQ_MASK  # type: ignore[operator]  # TCP only
        self._delivered += size
        flow = half.flow
        if flow.session is not None:
            try:
                flow.session.on_data(half.direction, data, offset, ts_ns, ref)
            except Exception:
                self._session_failed(flow, ts_ns)

    def _drain(self, half: Half, ts_ns: int) -> None:
        """Deliver the buffered bytes that now continue the stream, as one chunk."""
        pending = half.pending
        if isinstance(pending, tuple):   # NO_PIECES: nothing was ever buffered
            return
        run = take_run(pending, half.delivered)
        if run is None:
            return
        data, ref = run
        size = len(data)
        half.flow.buffered -= size
        self._stats.buffered_bytes -= size
        self._deliver(half, data, ts_ns, ref)

    def _gap(self, half: Half, length: int, ts_ns: int) -> None:
        offset = half.delivered
        half.delivered = offset + length
        if half.next_seq is not None:
            half.next_seq = (half.next_seq + length) & SEQ_MASK
        self._stats.gaps += 1
        self._stats.gap_bytes += length
        flow = half.flow
        if flow.session is not None:
            try:
                flow.session.on_gap(half.direction, offset, length, ts_ns)
            except Exception:
                self._session_failed(flow, ts_ns)

    def _skip_hole(self, half: Half, ts_ns: int) -> None:
        """Give up on the hole before the first buffered piece: a gap, then the data after."""
        self._gap(half, half.pending[0][0] - half.delivered, ts_ns)
        self._drain(half, ts_ns)

    def _shed(self, flow: Flow, half: Half, ts_ns: int) -> None:
        """Over a buffer bound: skip the oldest holes of this flow until back under."""
        stats = self._stats
        while flow.buffered > self._max_flow_buffer or stats.buffered_bytes > self._max_total_buffer:
            target = half if half.pending else half.peer
            if not target.pending:
                return
            stats.buffer_evictions += 1
            self._skip_hole(target, ts_ns)

    def _acked_beyond(self, half: Half, acked: int, ts_ns: int) -> None:
        """The peer acknowledged `acked` bytes past what we have of `half`: the capture lost
        them. Everything up to there becomes gaps and buffered data."""
        limit = half.delivered + acked
        if half.fin_offset is not None:
            limit = min(limit, half.fin_offset)   # the FIN takes a sequence number, not a byte
        elif acked == 1:
            return   # probably the ACK of a FIN we did not see
        while half.delivered < limit:
            if half.pending and half.pending[0][0] < limit:
                self._skip_hole(half, ts_ns)
            else:
                self._gap(half, limit - half.delivered, ts_ns)
                self._drain(half, ts_ns)

    def _fin_or_rst(self, half: Half, flags: int, seq: int, size: int, ts_ns: int,
                    ref: PacketRef) -> None:
        flow = half.flow
        facts: TcpFacts = flow.info.facts
        if flags & RST:
            facts.rst_by, facts.rst_ns, facts.last_ref = half.direction, ts_ns, ref
            self._close(flow, ts_ns)
            return
        if facts.fin_by is None:
            facts.fin_by = half.direction
        if half.fin_offset is None:
            expected = half.next_seq
            if expected is None:
                half.start_at(seq)
                expected = seq
            half.fin_offset = half.delivered + seq_delta((seq + size) & SEQ_MASK, expected)
        if half.peer.fin_offset is not None:
            self._close(flow, ts_ns)
