"""Packets in, index rows out: decode -> assembler -> dissector chosen by content -> Entry.

The one path every packet takes, live (worker.pipeline follows the store with it) or offline
(tests, golden files and benchmarks feed it a capture file).
"""

from __future__ import annotations

import gc
import struct
import weakref
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from shark.model import ENCODER, Endpoint, Size, TcpInfo, UdpInfo, encode
from worker.assembler import Assembler
from worker.assembler.flows import flow_key
from worker.connections import UNREACHABLE_NOTE, TcpFacts, failure_exchange, reset_note
from worker.dissectors import fallback, registry
from worker.dissectors.base import (DatagramSession, Detect, Direction, Dissector, Exchange,
                                    FlowInfo, Session)
from worker.dissectors.dns import DnsDissector, DnsSession
from worker.dissectors.select import CHECKPOINTS, DETECT_LIMIT, SelectingSession, open_session
from worker.dissectors.ways import Registered, Way, hinted, registered
from worker.names import Name, NameTable
from worker.packet import FOREIGN, NOTHING, PacketRef, StoredPacket, decode_fields, ip_text
from worker.redact import NOT_TEXT_KEYS, SUMMARY_READ, UNTOUCHED, Redactor
from worker.redact_scan import message_left_alone
from worker.sources.ebpf.synth import MARK, mark_offset
from worker.store.index import NO_VALUE, IndexRow, IndexValues, row_from_values
# Re-exported: these Structs were defined here before the module was compiled.
from worker.dissection_structs import (LOW_WATER, DissectionCounters, IndexedEntry,  # noqa: F401
                                       MemoryBudget)

EXPIRE_EVERY_NS: Final = 1_000_000_000
# Between two checks what sessions hold grows by at most about twice the bytes delivered (the
# selector keeps undecided bytes twice): the next check comes once that could reach the
# budget, and at least every 1/16 of the budget delivered. A check sums every session (1-2 us
# each: 138-177 ms with 65,536 flows), so it is never per packet; every 10 s of capture time one
# comes anyway, for what grows faster than the bytes that made it (decoded HPACK entries).
GROWTH_PER_BYTE: Final = 2
MIN_CHECK_SHARE: Final = 16
CHECK_AT_LEAST_EVERY_NS: Final = 10_000_000_000
# Whether a check is due is asked every this many packets of a batch and after it, so the
# total passes the budget by at most what 256 packets deliver (x2) before it is cut back.
CHECK_EVERY_PACKETS: Final = 256
# How a dissector notes what a per-session cap cut: "cut: <what>: <detail>" (counted by what).
CUT: Final = "cut: "
# The two things a UDP entry can say of its flow, made and encoded once (entries never change
# them).
_UDP_INFO: Final = {None: UdpInfo(), "refused": UdpInfo(failure="refused")}
_UDP_JSON: Final = {failure: msgspec.Raw(encode(info)) for failure, info in _UDP_INFO.items()}
# Below this many nanoseconds the double ns / 1e6 is within 1e-7 of the exact quotient, closer
# than any millisecond value off a tie is to a rounding boundary (elapsed_ms).
_EXACT_BELOW_NS: Final = 10**15
_NO_TAGS: Final[tuple[str, ...]] = ()
_NOT_NAMED: Final[tuple[Name | None, Name | None]] = (None, None)
_NO_JSON: Final = msgspec.Raw(b"")
# Server endpoints' JSON kept (Dissection.server_json): a node's busy servers are tens to
# hundreds; a scan of many only empties the cache now and then.
SERVER_JSON_CACHE: Final = 4096
# Sizes of lone messages (no response: WebSocket's, MQTT's QoS 0) kept by request size: such a
# protocol's sizes vary past the last two (_make_entry); a Size made and freed per entry was
# ~0.9k instructions, a lookup ~0.15k. At most this many, then emptied.
LONE_SIZE_CACHE: Final = 2048
# What every entry reads of other modules, as this module's Final names: compiled, those are
# C statics, where an imported name is a lookup in the module's dict at each use (4-6 per
# entry), and the bound methods are called without looking the method up again.
_ENTRY: Final = IndexedEntry
_SIZE: Final = Size
_TCP_INFO: Final = TcpInfo
_UNTOUCHED: Final = UNTOUCHED
_SUMMARY_READ: Final = SUMMARY_READ
_NOT_TEXT_KEYS: Final = NOT_TEXT_KEYS
_NO_VALUE: Final = NO_VALUE
_ENCODE_INTO: Final = ENCODER.encode_into
_RAW: Final = msgspec.Raw
_COPY: Final = bytearray.copy

# Where an entry was made, in the order one dissection makes them: (segment, offset) of the
# packet being processed, the phase, a time for the phases that have one, the assembler (0,
# or 1 for eBPF TLS cleartext), the (segment, offset) of the packet that opened the entry's
# flow, and a running count. Shards dissecting disjoint flows of the same packets make the
# same keys for the same entries, so their merge by key is the order of one dissection
# (docs/OPERATIONS.md, "Dissection shards").
OrderKey = tuple[int, int, int, int, int, int, int, int]
# An OrderKey as bytes that compare as the tuple does (big-endian, fixed widths; the phase and the
# assembler in a byte each), and a shard's watermark (an OrderKey's first four fields) as the
# prefix they start with: the merge of the shards (worker.sharded) sorts and cuts the rows by
# these with memcmp, and a shard sends one bytes object per key instead of eight ints.
_PACKED_KEY = struct.Struct(">QQBQBQQQ")
_PACKED_WATERMARK = struct.Struct(">QQBQ")
_PACK_KEY: Final = _PACKED_KEY.pack
# The same bytes in three parts (">" has no padding): the current packet's and phase's five
# fields, kept while they stand (a segment of MQTT or Redis makes several entries), the flow's
# first packet, kept per flow (FlowEntries.packed_ref), and the running count: one int boxed
# and packed per entry instead of eight.
_PACK_HEAD: Final = struct.Struct(">QQBQB").pack
_PACK_REF: Final = struct.Struct(">QQ").pack
_PACK_PARTS: Final = struct.Struct(">26s16sQ").pack
# What a flow's rows share, as a shard's report sends it once (worker.shard.ShardReport.flows):
# IndexRow's protocol, transport, client_ip, server_ip, server_port. Not the client's port: then
# consecutive flows from one client address to one server (a DNS query each, from a port of its
# own) share one WireFlow in a report.
WireFlow = tuple[str, str, str, str, int]
# A row as a dissection shard sends it to the merge (worker.shard -> worker.sharded): IndexRow's
# fields in order, but in the seq's place its packed OrderKey, in protocol's the index of its
# WireFlow in the report's flows, in entry_json's the JSON after the empty id
# (`,"node":...}`), None (nil: one byte) for the WireFlow's other four, and NO_VALUE for None in
# the optional columns (the merge binds them as they come: worker.store.index). The merge
# decodes it as a list and makes that list the index's row in place (resolve_flows, then
# numbered_values): per row, the flow's 4 strings and server port were 5 of the 17 objects
# decoded (and encoded) between the processes, and the numbered row a second 17-tuple.
WireRow = tuple[bytes, float, int, bytes, int, int, int, int, None, None, int, None, None,
                int, int, int, int]
# The phases of one packet's position: its own processing, the capture-time expiry after it,
# then (while no newer packet is there) expiry by the wall clock and close-all at a
# discontinuity, both stamped with a strictly increasing time, and the close-all at the end.
PACKET: Final = 1
EXPIRED: Final = 2
IDLE: Final = 3
END: Final = 4
DONE: Final = 5
# An entry encoded before its seq is known (dissection shards): the merge gives it its id.
UNNUMBERED_ID: Final = ""
_UNNUMBERED_PREFIX: Final = b'{"id":""'

# Dissection allocates and frees many small containers per packet (flows, sessions, exchanges,
# entries). At CPython's default gen0 threshold (700 allocations) the collector ran every few
# packets and walked every young flow; 100,000 lets it run ~140x less often, for at most that
# many objects of cyclic garbage held meanwhile (a few MB). Measured: DNS -30% CPU (issue 17,
# docs/BENCHMARKS.md).
GC_GEN0_THRESHOLD: Final = 100_000


def tune_gc_for_dissection() -> None:
    """For a process whose main work is dissection: what is loaded so far (modules, tables)
    is never garbage, so it leaves every collection (gc.freeze), and young collections come
    after GC_GEN0_THRESHOLD allocations."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def _held(item: tuple[int, FlowSession]) -> int:
    return item[0]


def count_cuts(counts: dict[str, int], notes: Iterable[str]) -> None:
    """Add the caps an exchange's notes say were reached ("...cut: what: detail")."""
    for note in notes:
        at = note.find(CUT)
        if at >= 0:
            what = note[at + len(CUT):].partition(":")[0]
            counts[what] = counts.get(what, 0) + 1


def elapsed_ms(start_ns: int | float, end_ns: int | float) -> float:
    """round(max(0, end_ns - start_ns) / 1e6, 3), the same float, without round(): rounding a
    float to digits formats and parses its decimal (2 us, a fifth of what making an entry
    cost). Off a tie (ns ending in 500) the double ns / 1e6 rounds as the exact quotient does,
    so the integer's rounding is the same number, and int / int gives its nearest double, as
    round() does."""
    ns = end_ns - start_ns
    if ns < 0:
        ns = 0
    if type(ns) is int and ns < _EXACT_BELOW_NS and ns % 1000 != 500:
        return (ns + 500) // 1000 / 1000
    return round(ns / 1e6, 3)


def _endpoint_json(ip: str, port: int, named: Name | None) -> msgspec.Raw:
    if named is None:
        return msgspec.Raw(encode(Endpoint(ip, port)))
    return msgspec.Raw(encode(Endpoint(ip, port, *named)))  # type: ignore[arg-type]


# An unnamed endpoint's JSON around its port, as msgspec encodes Endpoint(ip, port): the head
# up to the port is kept per address (Dissection.endpoint_json), the tail is the same for all.
_UNNAMED: Final = encode(Endpoint("", 0))
# (As text: msgspec.Raw writes a str's UTF-8, and one f-string of head, port and tail is one
# object made where the bytes' concatenations and the port's encode were four.)
_UNNAMED_TAIL: Final = _UNNAMED[_UNNAMED.index(b',"name":'):].decode()


def unnamed_head(ip: str) -> str:
    """The JSON of Endpoint(ip, port) up to the port."""
    return '{"ip":' + encode(ip).decode() + ',"port":'


class FlowEntries:
    """One session's emit, and what the entries of its flow share, made once per flow.

    An object rather than a closure: a closure over the flow's context was a function and 6
    cells per flow, a quarter of the GC-tracked objects a DNS flow leaves; this is one. It
    keeps the flow's endpoints encoded for as long as the names they were made with stand.
    """

    __slots__ = ("dissection", "flow", "tls", "first_ref", "selector", "entry_flow",
                 "client_ip", "server_ip", "named", "names_seen", "endpoints", "info",
                 "info_json", "claimed", "swapped", "session_flow", "key", "packed_ref",
                 "wire_take", "wire_flow", "wire_protocol", "ports_flow", "client_port",
                 "server_port")

    def __init__(self, dissection: Dissection, flow: FlowInfo, tls: bool,
                 first_ref: PacketRef) -> None:
        self.dissection = dissection
        self.flow = flow              # the assembler's
        self.tls = tls
        self.first_ref = first_ref    # the packet that opened the flow
        # The flow's selector, weakly: it holds this object (its emit, and its session's), so
        # a strong reference back would make every flow a cycle for the garbage collector.
        self.selector: weakref.ref[SelectingSession] | None = None
        # What the entries say of the flow, made for the first and kept while it holds: the
        # flow as the session sees it, address texts, names and endpoints JSON.
        self.entry_flow: FlowInfo | None = None
        self.client_ip = ""
        self.server_ip = ""
        self.named: tuple[Name | None, Name | None] | None = None   # what endpoints were made of
        # The name table's snapshot `named` was looked up in (NameTable.now): the same
        # snapshot gives the same names, so the lookups are made again only when it changed.
        self.names_seen: object = None
        self.endpoints = (_NO_JSON, _NO_JSON)
        self.info: TcpInfo | None = None      # the TcpInfo last encoded, and its JSON
        self.info_json = _NO_JSON
        # What the selector says of the flow once its session emits (claimed): its roles
        # (swapped) and the flow as the session sees them; fixed from the claim on (a cut
        # flow's new session gets a new FlowEntries). Read once, not per exchange.
        self.claimed = False
        self.swapped = False
        self.session_flow = flow
        # The assembler's key of the flow (flows.flow_key), made once for its seqs_of.
        self.key = b""
        self.packed_ref = b""         # first_ref as its OrderKeys pack it, made at the first
        # Its WireFlow's index in the dissection's flows of take wire_take, for rows of
        # protocol wire_protocol (a flow's protocol can change: an upgrade).
        self.wire_take = 0
        self.wire_flow = 0
        self.wire_protocol = ""
        # The ports of ports_flow (the flow as the session sees it) as objects, for its rows
        # (Dissection._numbered_row).
        self.ports_flow: FlowInfo | None = None
        self.client_port: object = 0
        self.server_port: object = 0

    def __call__(self, exchange: Exchange) -> None:
        self.dissection._emit(self, exchange)

    def endpoints_json(self, flow: FlowInfo,
                       identities: NameTable | None) -> tuple[msgspec.Raw, msgspec.Raw]:
        """src and dst of `flow` (the flow as the session sees it), named as the hub's names
        are now (they can change between two entries of a flow)."""
        if flow is not self.entry_flow:   # the flow's first entry
            self.entry_flow, self.named = flow, None
            dissection = self.dissection
            self.client_ip = dissection.address(flow.client_ip)
            self.server_ip = dissection.address(flow.server_ip)
        if identities is None:
            named = _NOT_NAMED
        else:
            # One read of the table's snapshot (it is replaced whole, never changed): the
            # same one as the last entry's gives the same names.
            snapshot = identities.now
            if snapshot is self.names_seen and self.named is not None:
                return self.endpoints
            dissection = self.dissection
            named = (dissection.identity(identities, snapshot, self.client_ip),
                     dissection.identity(identities, snapshot, self.server_ip))
            self.names_seen = snapshot
        if named is not self.named and named != self.named:
            self.named = named
            # The server's from the dissection's cache: many flows go to one server (a new
            # flow per DNS query), each from a port of its own.
            dissection = self.dissection
            self.endpoints = (dissection.endpoint_json(self.client_ip, flow.client_port,
                                                       named[0]),
                              dissection.server_json(self.server_ip, flow.server_port,
                                                     named[1]))
        return self.endpoints

    def tcp_json(self, info: TcpInfo) -> msgspec.Raw:
        # TcpFacts.info returns one object until a fact changes.
        if info is not self.info:
            self.info, self.info_json = info, msgspec.Raw(encode(info))
        return self.info_json


# What FirstDatagram decides alone: a first datagram shorter than this (the selector decides
# such a one on its own, as FirstDatagram does; a longer one goes through its checkpoints).
_DECIDES_BELOW: Final = min(CHECKPOINTS[0], DETECT_LIMIT + 1)
_MATCH: Final = Detect.MATCH


class FirstDatagram(DatagramSession):
    """The session of a new UDP flow (Dissection._open_session): the selector's decision on
    the flow's first datagram, compiled, for the case most UDP flows are (a DNS query each):
    the way the selector asks first (a learned server hint's, else the first in order) says
    MATCH with the roles as they are. Then its dissector's session gets the flow, as the
    selector's _claim would make it (the hint learned, no recording, nothing skipped), and
    every later call is passed to it. Anything else (another answer, a swapped way, a first
    datagram the selector would record, a gap, a close before any data) makes the selector
    open_session would have made, which gets that call and every later one: it asks the
    first way again and decides as always (content on any port, fallback, ignore).

    Not the selector itself, interpreted, per flow: its objects, calls and the _claim's
    rebinding were ~30% of a DNS flow's instructions (docs/BENCHMARKS.md, "DNS: a new flow's
    set-up" and "the first datagram compiled")."""

    def __init__(self, dissection: Dissection, flow: FlowInfo, entries: FlowEntries,
                 shared: Registered, ways: tuple[Way, ...]) -> None:
        self.dissection = dissection
        self.flow = flow
        self.entries = entries
        self.shared = shared
        self.ways = ways
        # As SelectingSession.__init__ computes it (a hint can be learned before the flow's
        # first datagram when that is not its first packet).
        hints = shared.hints
        self.hint = hinted(ways, flow, hints) if hints._table else -1
        self.session: Session | None = None        # the claimed session (fast claim)
        # The same session when it is DNS's (the common case): called directly, compiled,
        # instead of by the method's name with its arguments boxed (~0.7k instructions a
        # datagram).
        self.dns: DnsSession | None = None
        self.dissector: Dissector | None = None
        self.selector: SelectingSession | None = None   # otherwise the selector

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        dns = self.dns
        if dns is not None:
            dns.on_data(direction, data, offset, ts_ns, ref)
            return
        session = self.session
        if session is not None:
            session.on_data(direction, data, offset, ts_ns, ref)
            return
        selector = self.selector
        if selector is None:
            if not data:
                return          # the selector ignores it too (and stays undecided)
            if len(data) < _DECIDES_BELOW and not (
                    direction == Direction.SERVER_TO_CLIENT and offset == 0 and
                    self.flow.handshake):
                dissector, swapped = self.ways[self.hint if self.hint >= 0 else 0]
                verdict: Detect | None = None
                if swapped:
                    pass
                elif isinstance(dissector, DnsDissector):   # a direct call, compiled
                    verdict = dissector.detect(data, b"") if direction == \
                        Direction.CLIENT_TO_SERVER else dissector.detect(b"", data)
                else:
                    verdict = dissector.detect(data, b"") if direction == \
                        Direction.CLIENT_TO_SERVER else dissector.detect(b"", data)
                if verdict is _MATCH:
                    session = self._claim(dissector)
                    dns = self.dns
                    if dns is not None:
                        dns.on_data(direction, data, offset, ts_ns, ref)
                    else:
                        session.on_data(direction, data, offset, ts_ns, ref)
                    return
            selector = self._selector()
        selector.on_data(direction, data, offset, ts_ns, ref)

    def _claim(self, dissector: Dissector) -> Session:
        """SelectingSession._claim of an unswapped way with nothing recorded or skipped."""
        flow = self.flow
        if isinstance(dissector, DnsDissector):     # a direct call, compiled
            dns = dissector.session(flow, self.entries, 0)
            self.dns = dns
            session: Session = dns
        else:
            session = dissector.session(flow, self.entries, 0)
            if type(session) is DnsSession:
                self.dns = session
        self.shared.hints.learn((flow.transport, flow.server_ip, flow.server_port), dissector)
        self.dissector, self.session = dissector, session
        # What _emit reads of a selector at its first exchange: the roles as they are.
        self.entries.claimed = True
        return session

    def _selector(self) -> SelectingSession:
        dissection, entries = self.dissection, self.entries
        shared = self.shared
        selector = self.selector = open_session(
            self.flow, entries, shared.dissectors, fallback=dissection._fallback,
            on_closed=dissection._closed, hints=shared.hints, shared=shared)
        entries.selector = weakref.ref(selector)
        return selector

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        session = self.session
        if session is not None:
            session.on_gap(direction, offset, length, ts_ns)
        else:
            (self.selector or self._selector()).on_gap(direction, offset, length, ts_ns)

    def on_close(self, ts_ns: int) -> None:
        dns = self.dns
        if dns is not None:
            dns.on_close(ts_ns)
            self.dissection.count_skipped(self.dissector, dns.skipped_bytes)
            return
        session = self.session
        if session is None:
            (self.selector or self._selector()).on_close(ts_ns)
            return
        session.on_close(ts_ns)
        # As a selector's on_closed counts them (SelectingSession.session_skipped_bytes,
        # unswapped).
        self.dissection.count_skipped(self.dissector, getattr(session, "skipped_bytes", 0))

    def held_bytes(self) -> int:
        session = self.session
        if session is not None:
            return session.held_bytes()
        return 0 if self.selector is None else self.selector.held_bytes()


# The session the assemblers' flows hold (Dissection._open_session).
FlowSession = SelectingSession | FirstDatagram


def packed_key(key: OrderKey) -> bytes:
    return _PACKED_KEY.pack(*key)


def unpacked_key(packed: bytes) -> OrderKey:
    """packed_key's OrderKey back."""
    return _PACKED_KEY.unpack(packed)


def packed_watermark(mark: tuple[int, int, int, int]) -> bytes:
    """A watermark as the prefix of the packed keys: a key below it packs below it."""
    return _PACKED_WATERMARK.pack(*mark)


# The entry JSON is joined into a bytearray: sqlite3 binds a bytearray as a blob directly, a
# bytes only after looking for an adapter (~0.6 us per row). The index stores the same bytes.
_join_blob: Final = bytearray().join


def resolve_flows(rows: list[list[Any]], flows: list[Any]) -> None:
    """A report's rows, decoded as lists (worker.shard), given their flows' values from the
    report's WireFlows, in place (a row waits in the merge after its report is gone)."""
    for row in rows:
        flow: tuple[Any, ...] = flows[row[2]]
        row[2] = flow[0]
        row[8] = flow[1]
        row[9] = flow[2]
        row[11] = flow[3]
        row[12] = flow[4]


def numbered_values(rows: list[list[Any]], first_seq: int, id_prefix: bytes) -> list[list[Any]]:
    """Shards' rows (WireRows decoded as lists, their flows resolved: resolve_flows) in their
    merged order made the index's values in place, numbered from first_seq: the seq in the
    packed OrderKey's place, the entry JSON given its id. The writer binds them as they are (a
    list binds as a tuple does): no second row is made. Compiled, as the merge is serial."""
    seq = first_seq
    for row in rows:
        row[0] = seq
        row[3] = _join_blob((id_prefix, str(seq).encode(), b'"', row[3]))
        seq += 1
    return rows


def id_prefix_for(node: str) -> bytes:
    """The encoded start of an entry up to its seq: {"id":"<node>:"""
    return b'{"id":' + encode(f"{node}:")[:-1]


class Dissection:
    """One dissection of a sequence of stored packets. A dissection shard feeds it its own
    flows' packets and, for the clock, FOREIGN stand-ins of some of the others' (worker.
    shard_filter): those are timed and placed like any packet, and not dissected."""

    def __init__(self, node: str, first_seq: int = 1,
                 dissectors: list[Dissector] | None = None, identities: NameTable | None = None,
                 redactor: Redactor | None = None, memory: MemoryBudget | None = None,
                 position: PacketRef = (0, 0), numbered: bool = False) -> None:
        self._node = node
        self._id_prefix = id_prefix_for(node)
        self._id_head = f"{node}:"       # a numbered entry's id before its seq
        # numbered (the in-thread pipeline): each row is made numbered, as take_values gives
        # it (its entry encoded with its id, no OrderKey), instead of a WireRow numbered at the
        # take (numbered_values: a second tuple and a second copy of the JSON per row).
        self._numbered = numbered
        self._values: list[IndexValues] = []
        # Each exchange becomes its row (a WireRow, unnumbered) as it is emitted, while its
        # objects are still in the CPU's caches (made a batch later, ~12,000 exchanges of a
        # 2048-packet batch of mqtt.pcap were read back from memory, and the garbage collector
        # walked them meanwhile: 22% of a shard's CPU there). A shard sends them as they are;
        # the in-thread pipeline and take_rows number them (numbered_values).
        self._wire: list[WireRow] = []
        # The WireFlows the rows since the last take point into, and the take they are of
        # (a FlowEntries keeps its flow's index for the take it was made in: wire_take).
        self._flows: list[WireFlow] = []
        self._take = 1
        # The last WireFlow added, field by field: a new flow with the same values (the next
        # DNS query's, from another port) shares it, compared without a tuple made or hashed.
        self._last_protocol = self._last_transport = self._last_client = self._last_server = ""
        self._last_port = -1
        # The redactor's bound entry(), made once (a method call from here looks the method up
        # each time).
        self._redact = None if redactor is None else redactor.entry
        # What message_left_alone needs of the redactor: its field names in quotes.
        self._quoted_names: tuple[str, ...] | None = \
            None if redactor is None else redactor.quoted_names
        self._identities = identities
        self._next_seq = first_seq
        # Tuples: open_session keys what every flow over them shares by the tuple (a list
        # would be copied into one for each new flow).
        self._dissectors = tuple(registry() if dissectors is None else dissectors)
        self._fallback = fallback()
        self._assembler = Assembler(self._open_session, on_failure=self._failed)
        # Cleartext from the eBPF TLS probes shares 5-tuples with the encrypted packets on
        # the wire: its marked packets get an assembler of their own (docs/TLS.md).
        self._tls_assembler = Assembler(lambda flow: self._open_session(flow, tls=True))
        # TLS cleartext is what TLS carries, never TLS again (whose port hints would claim
        # it first and wait for a handshake that never comes).
        self._cleartext_dissectors = tuple(d for d in self._dissectors if d.name != "tls")
        # What open_session looks up by these tuples for every flow, looked up once.
        self._shared = registered(self._dissectors)
        self._cleartext_shared = registered(self._cleartext_dissectors)
        self._names: dict[bytes, str] = {}
        self._server_json: dict[tuple[str, int, Name | None], msgspec.Raw] = {}
        self._unnamed_heads: dict[str, str] = {}     # unnamed_head by address
        # identities.get's answers for the snapshot they were looked up in (identity): a flow's
        # first entry looked up both its addresses, interpreted, though most flows share them
        # (a new flow per DNS query, from one client to one server).
        self._identity_snapshot: object = None
        self._identity: dict[str, Name | None] = {}
        # The last two addresses' texts (address()), and the last server endpoint's JSON
        # (server_json): compared before any table is looked up (a new flow per DNS query
        # has the last one's addresses and server).
        self._address = self._other_address = b""
        self._address_text = self._other_text = ""
        self._server_endpoint: tuple[str, int, Name | None, msgspec.Raw] | None = None
        # The last two entries' Sizes (_make_entry), and which one was made last.
        self._size_a = self._size_b = _SIZE(0, 0)
        self._size_a_request = self._size_a_response = 0
        self._size_b_request = self._size_b_response = 0
        self._size_b_newer = True
        self._lone_sizes: dict[int, Size] = {}
        # Entries are encoded into this one buffer and copied out (_encoded): ENCODER.encode
        # starts each output small and grows it several times for an entry of 0.5-1 KB.
        self._json = bytearray(4096)
        self._current_ref: PacketRef = position
        self._phase = PACKET
        self._phase_t = 0
        self._made = 0                  # entries made: the last field of their OrderKey
        # The packed OrderKey's first five fields (_PACK_HEAD), and what they were made of.
        self._head = b""
        self._head_segment = self._head_offset = -1
        self._head_phase = self._head_phase_t = self._head_tls = -1
        self._last_expire_ns = 0
        self.last_ts = 0
        self.packets = 0
        self.not_tcp_udp = 0
        self.cut: dict[str, int] = {}   # per-session caps reached, by what (notes "cut: what: ...")
        # Bytes sessions passed over looking for a message start, by protocol (at flow end).
        self.skipped: dict[str, int] = {}
        # The memory budget (None: none). It sums the sessions of the flows in the assemblers'
        # tables (Assembler.live_sessions): a flow drops its session when it closes, so no
        # set of them is kept per flow (a WeakSet's add and discard, interpreted, per flow).
        self.memory = memory
        self._next_check = 0          # bytes delivered (both assemblers) at the next check
        self._checked_ns = 0          # capture time of the last check
        self._cut_note: str | None = None   # set while a session is cut for the budget
        self._restarting = False      # a cut flow gets a new session: its first ref stays

    def server_json(self, ip: str, port: int, named: Name | None) -> msgspec.Raw:
        """_endpoint_json of a server endpoint, kept for the next flows to it (at most
        SERVER_JSON_CACHE, then emptied: a bound, not an LRU)."""
        last = self._server_endpoint
        if last is not None and last[0] is ip and last[1] == port and last[2] is named:
            return last[3]
        key = (ip, port, named)
        found = self._server_json.get(key)
        if found is None:
            if len(self._server_json) >= SERVER_JSON_CACHE:
                self._server_json.clear()
            found = self._server_json[key] = self.endpoint_json(ip, port, named)
        self._server_endpoint = (ip, port, named, found)
        return found

    def address(self, ip: bytes) -> str:
        """ip_text(ip), kept (self._names); the last two addresses looked up are compared
        first (no hash of a new bytes object and lookup)."""
        if ip == self._address:
            return self._address_text
        if ip == self._other_address:
            return self._other_text
        names = self._names
        text = names.get(ip) or names.setdefault(ip, ip_text(ip))
        self._other_address, self._other_text = self._address, self._address_text
        self._address, self._address_text = ip, text
        return text

    def identity(self, identities: NameTable, snapshot: object, ip: str) -> Name | None:
        """identities.get(ip), kept while the table's snapshot is `snapshot` (at most
        SERVER_JSON_CACHE addresses, then emptied)."""
        known = self._identity
        if snapshot is not self._identity_snapshot or len(known) >= SERVER_JSON_CACHE:
            self._identity_snapshot = snapshot
            known.clear()
        if ip in known:
            return known[ip]
        named = known[ip] = identities.get(ip)
        return named

    def endpoint_json(self, ip: str, port: int, named: Name | None) -> msgspec.Raw:
        """_endpoint_json's bytes; unnamed (the common case: a new client port per flow), joined
        from the address's head kept (at most SERVER_JSON_CACHE, then emptied), the port's
        digits (an int's JSON is its str) and the tail, instead of an Endpoint encoded."""
        if named is not None:
            return _endpoint_json(ip, port, named)
        heads = self._unnamed_heads
        head = heads.get(ip)
        if head is None:
            if len(heads) >= SERVER_JSON_CACHE:
                heads.clear()
            head = heads[ip] = unnamed_head(ip)
        return _RAW(f"{head}{port}{_UNNAMED_TAIL}")

    @property
    def assembler_stats(self) -> dict:
        return msgspec.to_builtins(self._assembler.stats)

    def _open_session(self, flow: FlowInfo, tls: bool = False) -> Session:
        # The packet that opened the flow (its SYN, when seen): the connection's first
        # exchange starts its packet range there, so its pcap carries the handshake.
        first_ref = self._current_ref
        facts: TcpFacts | None = flow.facts
        if facts is not None:
            if self._restarting and facts.first_ref is not None:
                first_ref = facts.first_ref
            else:
                facts.first_ref = first_ref
        entries = FlowEntries(self, flow, tls, first_ref)
        shared = self._cleartext_shared if tls else self._shared
        if flow.transport == "udp":
            ways = shared.ways(flow)
            if ways:
                return FirstDatagram(self, flow, entries, shared, ways)
        selector = open_session(flow, entries, shared.dissectors, fallback=self._fallback,
                                on_closed=self._closed, hints=shared.hints, shared=shared)
        entries.selector = weakref.ref(selector)
        return selector

    def _emit(self, entries: FlowEntries, exchange: Exchange) -> None:
        """An exchange of the flow `entries` stands for, from its session."""
        flow, flow_first_ref = entries.flow, entries.first_ref
        if not entries.claimed:
            selected = entries.selector
            # Alive: the assembler's flow holds it while its session can emit.
            selector = selected() if selected is not None else None
            assert selector is not None
            entries.claimed = True
            entries.swapped, entries.session_flow = selector.swapped, selector.session_flow
            entries.key = flow_key(flow)
        swapped = entries.swapped
        if self._cut_note is not None:
            exchange.notes.insert(0, self._cut_note)
            exchange.complete = False
        # PacketRefs compared by their two ints (a tuple comparison boxes both tuples when
        # compiled): (segment, offset) in store order.
        first0, first1 = exchange.first_ref
        flow0, flow1 = flow_first_ref
        if exchange.client_offset == 0 and (flow0 < first0 or (flow0 == first0 and
                                                                flow1 < first1)):
            exchange.first_ref = flow_first_ref
            first0, first1 = flow0, flow1
        # No packet of an exchange comes before its flow's first or after the current one
        # (a dissector that left a ref unset must not point the index at nothing).
        if first0 < flow0 or (first0 == flow0 and first1 < flow1):
            exchange.first_ref = flow_first_ref
            first0, first1 = flow0, flow1
        last0, last1 = exchange.last_ref
        ref = self._current_ref
        now0, now1 = ref
        if not ((first0 < last0 or (first0 == last0 and first1 <= last1)) and
                (last0 < now0 or (last0 == now0 and last1 <= now1))):
            exchange.last_ref = ref
        client_seq: int | None = None
        server_seq: int | None = None
        if flow.transport == "tcp":
            # Offsets are per direction of the session; when the selector swapped the
            # assembler's guessed roles, its client is the assembler's server.
            client_seq, server_seq = (self._tls_assembler if entries.tls else self._assembler
                                      ).seqs_of(flow, swapped, exchange.client_offset,
                                                exchange.server_offset, entries.key)
        info: TcpInfo | UdpInfo | None = None
        facts: TcpFacts | None = flow.facts
        if facts is not None and flow.transport == "udp":
            if facts.failure == "refused":
                # Emitted as the ICMP port unreachable ended the flow: its request.
                exchange.notes.append(UNREACHABLE_NOTE)
                exchange.complete = False
                facts.carried = True
            info = _UDP_INFO[facts.failure]
        elif facts is not None:
            if facts.failure == "reset":
                # Emitted as the RST closed the flow: this entry carries the reset (and
                # says so when the reset cut it).
                if not exchange.complete:
                    exchange.notes.append(reset_note(facts, exchange, swapped))
                facts.carried = True
            info = facts.info(swapped)
        self._made += 1
        if self._numbered:
            self._values.append(self._numbered_row(entries, entries.session_flow, exchange,
                                                   client_seq, server_seq, info))
            return
        # The OrderKey (_key, inline: once per entry), packed from its kept parts.
        tls = 1 if entries.tls else 0
        phase, phase_t = self._phase, self._phase_t
        # (By value: compiled, a PacketRef is an unboxed pair, boxed anew for an `is`.)
        if now1 != self._head_offset or now0 != self._head_segment or \
                phase != self._head_phase or phase_t != self._head_phase_t or \
                tls != self._head_tls:
            self._head_segment, self._head_offset = now0, now1
            self._head_phase, self._head_phase_t, self._head_tls = phase, phase_t, tls
            self._head = _PACK_HEAD(now0, now1, phase, phase_t, tls)
        packed_ref = entries.packed_ref
        if not packed_ref:
            packed_ref = entries.packed_ref = _PACK_REF(flow0, flow1)
        self._wire.append(self._wire_row(
            entries, entries.session_flow, exchange, client_seq, server_seq, info,
            _PACK_PARTS(self._head, packed_ref, self._made)))

    def _closed(self, selector: SelectingSession) -> None:
        """A selector's on_closed (FirstDatagram.on_close counts its own claims)."""
        self.count_skipped(selector.dissector, selector.session_skipped_bytes)

    def count_skipped(self, dissector: Dissector | None, skipped: int) -> None:
        """Bytes a closed flow's session passed over looking for a message start, by its
        protocol (`skipped`, /status dissection.skipped)."""
        if skipped and dissector is not None:
            name = dissector.name
            self.skipped[name] = self.skipped.get(name, 0) + skipped

    def _failed(self, flow: FlowInfo, facts: TcpFacts, ts_ns: int) -> None:
        """A connection failed with no protocol entry to carry it: a `tcp` entry of its own."""
        client_reset = facts.failure == "reset" and facts.rst_by == Direction.CLIENT_TO_SERVER
        if facts.carried or client_reset:
            return   # a client's RST after its exchanges completed is how some clients close
        first_ref = facts.first_ref or self._current_ref
        exchange = failure_exchange(flow, facts, ts_ns, first_ref)
        info = facts.info() if flow.transport == "tcp" else _UDP_INFO[facts.failure]
        entries = FlowEntries(self, flow, False, first_ref)
        if self._numbered:
            self._made += 1
            self._values.append(self._numbered_row(entries, flow, exchange, None, None, info))
            return
        key = self._key(False, first_ref)
        self._wire.append(self._wire_row(entries, flow, exchange, None, None, info,
                                         packed_key(key)))

    def _key(self, tls: bool, flow_ref: PacketRef) -> OrderKey:
        self._made += 1
        ref = self._current_ref
        return (ref[0], ref[1], self._phase, self._phase_t, int(tls), flow_ref[0], flow_ref[1],
                self._made)

    def feed(self, batch: Iterable[StoredPacket]) -> None:
        """Packets in store order; flows idle for long in capture time are closed as we go
        (timed by every packet, dissected or not, so that every shard closes them alike)."""
        # The assemblers, not their bound `packet` methods: compiled, a method called on its
        # object is a direct call, a bound method goes through the argument-parsing wrapper.
        assembler, tls_assembler = self._assembler, self._tls_assembler
        last_expire = self._last_expire_ns
        count = not_ip = 0
        ts_ns = self.last_ts
        mark_linktype, mark_at, mark = -1, None, MARK   # MARK is another module's: a local
        mark_first = mark[0]
        budgeted = self.memory is not None
        for ref, linktype, ts_ns, data, _wirelen in batch:
            count += 1
            self._current_ref = ref
            if linktype != FOREIGN:
                # The fields, not a Decoded: compiled, they pass as native values (no tuple,
                # no int objects per packet).
                proto, key, sport, dport, flags, seq, payload, ack, window = \
                    decode_fields(linktype, data)
                if proto == NOTHING:
                    not_ip += 1
                else:
                    if linktype != mark_linktype:
                        mark_linktype, mark_at = linktype, mark_offset(linktype)
                    # startswith at an offset: no 6-byte slice made per packet; after a
                    # native look at the mark's first byte (startswith is a generic method
                    # call, ~600 instructions, for every unmarked packet).
                    if mark_at is not None and mark_at < len(data) and \
                            data[mark_at] == mark_first and data.startswith(mark, mark_at):
                        tls_assembler.packet_fields(ts_ns, ref, proto, key, sport, dport, flags,
                                                    seq, payload, ack, window)
                    else:
                        assembler.packet_fields(ts_ns, ref, proto, key, sport, dport, flags, seq,
                                                payload, ack, window)
            if ts_ns - last_expire > EXPIRE_EVERY_NS:
                self._phase = EXPIRED
                self._assembler.expire(ts_ns)
                self._tls_assembler.expire(ts_ns)
                self._phase = PACKET
                last_expire = ts_ns
            if not count % CHECK_EVERY_PACKETS and budgeted:
                self.keep_to_budget(ts_ns)   # a sum only when bytes delivered call for one
        self._last_expire_ns = last_expire
        self.last_ts = ts_ns
        self.packets += count
        self.not_tcp_udp += not_ip
        if budgeted:
            self.keep_to_budget(ts_ns)

    def expire(self, now_ns: int, at: int = 0) -> None:
        """Expiry by the wall clock (live and idle); `at` is its strictly increasing time
        in the entries' OrderKey."""
        self._phase, self._phase_t = IDLE, at
        self._assembler.expire(now_ns)
        self._tls_assembler.expire(now_ns)
        if self.memory is not None:
            self.keep_to_budget(now_ns)
        self._phase, self._phase_t = PACKET, 0

    def keep_to_budget(self, ts_ns: int, force: bool = False) -> None:
        """Sum what the sessions hold, once enough bytes came in since the last sum that they
        could have passed the budget, or 10 s of capture time passed (or when forced); over
        it, cut the sessions holding the most until all hold at most the low-water mark."""
        budget = self.memory
        assert budget is not None
        delivered = (self._assembler.stats.bytes_delivered
                     + self._tls_assembler.stats.bytes_delivered)
        if not force and delivered < self._next_check \
                and ts_ns - self._checked_ns < CHECK_AT_LEAST_EVERY_NS:
            return
        self._checked_ns = ts_ns
        holding = []
        total = live = 0
        # The sessions the assemblers' flows hold: this Dissection's selectors (_open_session).
        sessions: list[Any] = self._assembler.live_sessions()
        sessions += self._tls_assembler.live_sessions()
        for selector in sessions:
            live += 1
            held = selector.held_bytes()
            if held:
                total += held
                holding.append((held, selector))
        budget.checks += 1
        budget.sessions = live
        budget.peak = max(budget.peak, total)
        if total > budget.limit:
            holding.sort(key=_held, reverse=True)
            found, low_water = total, budget.low_water
            for held, selector in holding:
                if total <= low_water:
                    break
                self._cut(selector, held, found, ts_ns)
                total -= held
        budget.held = total
        self._next_check = delivered + max((budget.limit - total) // GROWTH_PER_BYTE,
                                           budget.limit // MIN_CHECK_SHARE)

    def _cut(self, selector: FlowSession, held: int, found: int, ts_ns: int) -> None:
        """The budget's cut of one flow: its session emits what it has, cut (noted), and the
        flow reads on with a new session from its next byte, as after a gap."""
        budget = self.memory
        assert budget is not None
        self._cut_note = (f"cut: memory budget: this flow's session held {held} bytes when all "
                          f"sessions held {found} (budget {budget.limit}); it was ended here and "
                          "the flow is read on from its next message")
        self._restarting = True
        try:
            # The flow is in one of the two (a FlowInfo is its flow's own object).
            if not self._assembler.restart_session(selector.flow, ts_ns):
                self._tls_assembler.restart_session(selector.flow, ts_ns)
        finally:
            self._cut_note = None
            self._restarting = False
        budget.cut_sessions += 1
        budget.cut_bytes += held

    def close_all(self, at: int | None = None) -> None:
        """End of capture (at None), or a discontinuity (at: its strictly increasing time in
        the entries' OrderKey): every flow ends, pending exchanges come out."""
        self._phase, self._phase_t = (END, 0) if at is None else (IDLE, at)
        self._assembler.close_all(self.last_ts)
        self._tls_assembler.close_all(self.last_ts)
        self._phase, self._phase_t = PACKET, 0

    def has_pending(self) -> bool:
        return bool(self._wire) or bool(self._values)

    def discard_pending(self) -> None:
        self._wire.clear()
        self._flows = []
        self._take += 1
        # Numbered rows dropped give their seqs back: the next row gets the first of them.
        self._next_seq -= len(self._values)
        self._values.clear()

    def take_wire_report(self) -> tuple[list[WireFlow], list[WireRow]]:
        """The rows of the exchanges finished since the last take, unnumbered, as a shard sends
        them to the merge (WireRow: its packed OrderKey in the seq's place, its flow an index
        into the WireFlows given with them)."""
        if self._numbered:
            raise ValueError("a numbered dissection's rows are taken with take_values")
        flows, self._flows = self._flows, []
        rows, self._wire = self._wire, []
        self._take += 1
        return flows, rows

    def take_values(self) -> list[IndexValues]:
        """The same as the index's values, numbered on from the last take (the seq given at
        the start: first_seq): the in-thread pipeline's rows, in the order they were made."""
        if self._numbered:
            values, self._values = self._values, []
            return values
        flows, wire = self.take_wire_report()
        rows = [list(row) for row in wire]
        resolve_flows(rows, flows)
        # Tuples, as the numbered rows are (the merge's lists bind alike).
        values = [tuple(row) for row in numbered_values(rows, self._next_seq, self._id_prefix)]
        self._next_seq += len(values)
        return values

    def take_rows(self) -> list[IndexRow]:
        """The same as IndexRows (with their entries)."""
        return [row_from_values(value) for value in self.take_values()]

    def _wire_row(self, entries: FlowEntries, flow: FlowInfo, exchange: Exchange,
                  client_seq: int | None, server_seq: int | None,
                  info: TcpInfo | UdpInfo | None, key: bytes) -> WireRow:
        """One exchange's WireRow, its OrderKey packed (packed_key), its flow's WireFlow added
        to this take's flows at its first row of the take."""
        # An unnumbered entry's JSON starts so (IndexedEntry.id): cut off.
        entry_json = self._encoded(self._make_entry(entries, flow, exchange, info),
                                   len(_UNNUMBERED_PREFIX))
        first, last = exchange.first_ref, exchange.last_ref
        server_offset = exchange.server_offset
        no_value = _NO_VALUE
        # The entry's ts and protocol are the exchange's (read so, not through the Struct's
        # Python attributes).
        protocol = exchange.protocol
        take = self._take
        if entries.wire_take != take or entries.wire_protocol != protocol:
            # (After _make_entry: it sets the address texts.)
            entries.wire_take, entries.wire_protocol = take, protocol
            transport, server_port = flow.transport, flow.server_port
            client_ip, server_ip = entries.client_ip, entries.server_ip
            flows = self._flows
            if not (flows and protocol == self._last_protocol and
                    transport == self._last_transport and client_ip == self._last_client and
                    server_ip == self._last_server and server_port == self._last_port):
                flows.append((protocol, transport, client_ip, server_ip, server_port))
                self._last_protocol, self._last_transport = protocol, transport
                self._last_client, self._last_server = client_ip, server_ip
                self._last_port = server_port
            entries.wire_flow = len(flows) - 1
        return (key, exchange.start_ns / 1e9, entries.wire_flow, entry_json,
                first[0], first[1], last[0], last[1], None, None, flow.client_port, None, None,
                exchange.client_offset, no_value if server_offset is None else server_offset,
                no_value if client_seq is None else client_seq,
                no_value if server_seq is None else server_seq)

    def _numbered_row(self, entries: FlowEntries, flow: FlowInfo, exchange: Exchange,
                      client_seq: int | None, server_seq: int | None,
                      info: TcpInfo | UdpInfo | None) -> IndexValues:
        """One exchange's row as numbered_values makes it of its WireRow: the next seq, the
        entry's JSON with its id (a bytearray, as numbered_values joins it: sqlite binds it
        directly)."""
        seq = self._next_seq
        self._next_seq = seq + 1
        buffer = self._json
        # (a concatenation: the f-string of node, ":" and seq built its text in ~0.4k
        # instructions, the concatenation ~0.15k)
        _ENCODE_INTO(self._make_entry(entries, flow, exchange, info, self._id_head + str(seq)),
                     buffer)
        first, last = exchange.first_ref, exchange.last_ref
        server_offset = exchange.server_offset
        no_value = _NO_VALUE
        if flow is not entries.ports_flow:
            # The flow's ports as the objects the row holds, made once per flow (compiled,
            # each read of a FlowInfo's int makes a new one: ~80 instructions).
            entries.ports_flow = flow
            entries.client_port, entries.server_port = flow.client_port, flow.server_port
        # (_COPY: bytearray.copy called as a function, not a method looked up by its name;
        # bytearray(buffer) goes through the buffer protocol, twice as slow for an entry's
        # 0.5-1 KB)
        return (seq, exchange.start_ns / 1e9, exchange.protocol, _COPY(buffer),
                first[0], first[1], last[0], last[1],
                flow.transport, entries.client_ip, entries.client_port,
                entries.server_ip, entries.server_port, exchange.client_offset,
                no_value if server_offset is None else server_offset,
                no_value if client_seq is None else client_seq,
                no_value if server_seq is None else server_seq)

    def _make_entry(self, entries: FlowEntries, flow: FlowInfo, exchange: Exchange,
                    info: TcpInfo | UdpInfo | None,
                    entry_id: str = UNNUMBERED_ID) -> IndexedEntry:
        """An exchange's entry (redacted), unnumbered unless given its id (a WireRow's is
        given with its seq: numbered_values)."""
        node = self._node
        if exchange.notes:
            count_cuts(self.cut, exchange.notes)
        src, dst = entries.endpoints_json(flow, self._identities)
        tcp = udp = None
        if type(info) is _TCP_INFO:
            tcp = entries.info_json if info is entries.info else entries.tcp_json(info)
        elif info is not None:
            udp = _UDP_JSON[info.failure]
        start_ns, end_ns = exchange.start_ns, exchange.end_ns
        if end_ns is None:
            elapsed = None
        elif type(end_ns) is int and type(start_ns) is int and \
                0 <= end_ns - start_ns < _EXACT_BELOW_NS and (end_ns - start_ns) % 1000 != 500:
            elapsed = (end_ns - start_ns + 500) // 1000 / 1000   # elapsed_ms, inline
        else:
            elapsed = elapsed_ms(start_ns, end_ns)
        protocol = exchange.protocol
        redact = self._redact
        # The redactor (interpreted: ~10k instructions a WebSocket entry) only for an entry it
        # could change: one of SUMMARY_READ's, or a side message_left_alone does not pass.
        if redact is not None and protocol not in _UNTOUCHED and (
                protocol in _SUMMARY_READ or not (
                    message_left_alone(exchange.request, _NOT_TEXT_KEYS, self._quoted_names) and
                    message_left_alone(exchange.response, _NOT_TEXT_KEYS, self._quoted_names))):
            redacted = True
            request: dict[str, Any] | msgspec.Raw = exchange.request
            response: dict[str, Any] | msgspec.Raw | None = exchange.response
        else:
            # The request's and response's JSON when the dissector has them (the redactor,
            # which changes the dicts, is not called, or changes nothing: UNTOUCHED).
            redacted = False
            request_json = exchange.request_json
            request = exchange.request if request_json is None else request_json
            response_json = exchange.response_json
            response = exchange.response if response_json is None else response_json
        # The Size of one of the last two entries' sizes when it is the same (a protocol's
        # messages repeat a few sizes; MQTT's QoS 0 and 1 alternate): a Size made (a Python
        # call of the Struct) and freed per entry was ~0.45k instructions. Never changed.
        request_size, response_size = exchange.request_size, exchange.response_size
        if request_size == self._size_a_request and response_size == self._size_a_response:
            size = self._size_a
        elif request_size == self._size_b_request and response_size == self._size_b_response:
            size = self._size_b
        else:       # in the place of the older one
            lone = self._lone_sizes.get(request_size) if response_size == 0 else None
            if lone is not None:
                size = lone
            else:
                size = _SIZE(request_size, response_size)
                if response_size == 0:
                    if len(self._lone_sizes) >= LONE_SIZE_CACHE:
                        self._lone_sizes.clear()
                    self._lone_sizes[request_size] = size
            if self._size_b_newer:
                self._size_a, self._size_a_request = size, request_size
                self._size_a_response = response_size
            else:
                self._size_b, self._size_b_request = size, request_size
                self._size_b_response = response_size
            self._size_b_newer = not self._size_b_newer
        # Positional: the Entry's fields in order (IndexedEntry); msgspec takes a dozen
        # keywords and more several times slower than positions.
        entry = _ENTRY(
            entry_id, node, protocol,
            start_ns / 1e9, src, dst, exchange.summary, elapsed,
            exchange.status, request, response, size, entries.tls, _NO_TAGS,
            exchange.complete, exchange.notes, tcp, udp)
        # Before the entry is indexed or streamed; not for a protocol it never changes.
        if redacted and redact is not None:
            redact(entry)   # type: ignore[arg-type]   # (its request and response: the dicts)
        return entry

    def _encoded(self, entry: IndexedEntry, cut: int) -> bytes:
        """The entry's JSON without its first `cut` bytes."""
        # Into the reused buffer, then one copy out: cheaper than encode()'s growing output
        # (and, cut, than slicing that again); the bytes are the same. Deleting a bytearray's
        # head only moves its start.
        buffer = self._json
        _ENCODE_INTO(entry, buffer)
        if cut:
            del buffer[:cut]
        return bytes(buffer)
