"""Which dissection shard owns a flow: a balanced assignment that every shard makes alike.

Every shard reads the very same packets of the store in the same order, so each runs this
table over them and all agree on every owner without talking. A flow seen for the first time
(its key, in either direction, not in the table) goes to the shard with the fewest live flows
of its protocol, then the fewest packets so far, then the lowest number; both directions of
the flow then map to that shard. A TCP flow stops counting as live at its first FIN or RST
(and counts again at a SYN on the same addresses and ports), but keeps its owner: the last
packets of a connection go where the rest went. A flow also stops counting as live while it
is idle: no packet for ACTIVE_NS of packet time (counted again at its next packet). So a
pool's idle connections do not weigh on their shards; a busy old flow still counts. Flows
are found idle at the packets where the dissection's clock expires flows (sweep), like all
else here the same packets in every shard. A flow is forgotten once it was idle, in
packet time, longer than the assembler keeps such a flow (FORGET_NS): its owner has closed it
by then, as one in-thread dissection has, so whichever shard its next packet goes to starts
it as one dissection would -- the sharded index stays the single one (OrderKeys do not depend
on the owner). Packets that have no flow (not TCP or UDP, fragments) go to shard 0.

A shard that does not see the same packets as the others (it shed segments its peers read,
or it was started again mid-store) would not agree with them: worker.sharded then starts all
the shards again from one place (a resync), where their tables start empty alike.

The cost per packet matters (every shard looks at every packet): the common frames are told
by bytes at fixed offsets and looked up by the one slice of addresses then ports, as they lie
in the read buffer; anything else goes through packet.flow_key(). The module is compiled
(shark.compiled): each byte read is then a native load, and worker.shard_filter calls
owner_fixed() directly with the linktype's row looked up once per read.
"""

from __future__ import annotations

from typing import Final

from worker.packet import (_RAW_IP_LINKTYPES, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LOOP,
                           LINKTYPE_NULL, TCP, UDP, flow_key)

# How long a flow idle in packet time keeps its owner: longer than the assembler keeps an idle
# flow open (worker.assembler: TCP 120 s, UDP 30 s) plus one expiry step (1 s), so that a
# flow forgotten here is closed in its owner's assembler too. A flow is forgotten between
# FORGET_NS and twice that after its last packet (two generations of keys, swapped whole).
FORGET_NS: Final = {TCP: 125_000_000_000, UDP: 35_000_000_000}
# Keys one generation of a protocol holds at most (two per flow: as many flows as the
# assembler's max_flows). A new flow past it swaps generations early, forgetting the flows not
# seen since the last swap: a flood of new flows bounds the table (~30 MB per shard at most)
# and, being counted in packets, still does so alike in every shard. (Not Final: a test lowers
# it; compiled, it is read from the module's dict at each new flow.)
GENERATION_KEYS = 2 * 65536
# How long a flow without a packet still counts as live for balancing: between ACTIVE_NS and
# that plus one sweep interval (worker.dissection.EXPIRE_EVERY_NS, 1 s, or the gap to the
# next packet). Long enough that a request/response connection thinking between requests
# still counts; short against a pool's connections idle for minutes.
ACTIVE_NS: Final = 5_000_000_000
_FIN_SYN_RST: Final = 0x07
_ACK: Final = 0x10
# An entry is [owner, state, epoch of its last packet, protocol]. Its state: 1 live (counted
# in _live), 2 live but idle (not counted), 0 ended (FIN, RST), -1 forgotten.
_IDLE: Final = 2
_FORGOTTEN: Final = -1

# Per linktype: (where the link layer's EtherType is, what it reads for IPv4, what it reads for
# IPv6, where the IP header is), offsets from the frame's start. Raw IP and loopback have no
# EtherType (its place is the IP header's): the IP version nibble alone says it, and IPv4
# without options is a first byte of 0x45. Anything else (VLAN tags, Linux cooked v2 whose
# EtherType is not next to the IP header) goes through packet.flow_key().
_FIXED_LINKS: dict[int, tuple[int, int, int, int]] = {
    LINKTYPE_ETHERNET: (12, 0x0800, 0x86DD, 14),
    LINKTYPE_LINUX_SLL: (14, 0x0800, 0x86DD, 16),
    **{linktype: (0, 0, 0, 0) for linktype in _RAW_IP_LINKTYPES},
    LINKTYPE_NULL: (4, 0, 0, 4), LINKTYPE_LOOP: (4, 0, 0, 4),
}


def reverse_key(key: bytes) -> bytes:
    """The key of the other direction: addresses swapped, ports swapped."""
    size = (len(key) - 4) // 2
    return key[size:2 * size] + key[:size] + key[-2:] + key[-4:-2]


class FlowTable:
    """owner(linktype, buf, start, stop) of the frame at buf[start:stop]; sweep(ts_ns) at the
    packets where the dissection's clock expires flows (worker.shard_filter)."""

    __slots__ = ("shards", "_current", "_previous", "_swapped_ns", "_live", "packets", "_tcp",
                 "_udp", "_epoch", "_recent", "_epochs")

    def __init__(self, shards: int) -> None:
        if shards < 1:
            raise ValueError(f"shards {shards}: expected at least 1")
        self.shards = shards
        # key -> entry (see _IDLE): both directions share the one list. Keys seen since the last
        # swap are in _current, those of the generation before in _previous.
        self._current: dict[int, dict[bytes, list[int]]] = {TCP: {}, UDP: {}}
        self._previous: dict[int, dict[bytes, list[int]]] = {TCP: {}, UDP: {}}
        self._swapped_ns = {TCP: 0, UDP: 0}
        self._live = {TCP: [0] * shards, UDP: [0] * shards}
        self.packets = [0] * shards     # packets of each shard's flows so far
        # _current[TCP] and _current[UDP] as attributes (owner_fixed's per-packet lookup)
        self._tcp, self._udp = self._current[TCP], self._current[UDP]
        # Sweeps so far (an epoch is the time between two), the entries first seen in this
        # epoch, and those of the epochs before, still within ACTIVE_NS: (the time the epoch
        # ended, its number, its entries). A flow is touched once per epoch, so finding idle
        # flows costs a sweep the flows of one old epoch, not the whole table.
        self._epoch = 0
        self._recent: list[list[int]] = []
        self._epochs: list[tuple[int, int, list[list[int]]]] = []

    def __len__(self) -> int:
        """Keys held (two per flow seen in both directions)."""
        return sum(len(keys) for keys in (*self._current.values(), *self._previous.values()))

    def live(self, proto: int) -> list[int]:
        """Per shard, its flows of `proto` that are live and not idle (what _new weighs)."""
        return list(self._live[proto])

    def owner(self, linktype: int, buf: bytes, start: int, stop: int) -> int:
        link = _FIXED_LINKS.get(linktype)
        if link is None:
            return self._slow(linktype, buf, start, stop)
        return self.owner_fixed(link, linktype, buf, start, stop)

    def owner_fixed(self, link: tuple[int, int, int, int], linktype: int, buf: bytes,
                    start: int, stop: int) -> int:
        """owner() with the linktype's row of _FIXED_LINKS looked up once by the caller (a
        shard's filter reads segments of one linktype). Compiled, each buf[i] is a native
        load: no slice but the key's."""
        at, v4, v6, ip = link
        ip += start
        if ip + 24 > stop:     # shorter than IPv4 and the ports: flow_key() says
            return self._slow(linktype, buf, start, stop)
        at += start
        first = buf[ip]
        if first == 0x45 and (at == ip or buf[at] << 8 | buf[at + 1] == v4):
            # Not a fragment (MF clear, offset 0: the DF and reserved bits may be set).
            if not buf[ip + 6] & 0x3F and not buf[ip + 7]:
                proto = buf[ip + 9]
                if proto == TCP:
                    flags = buf[ip + 33] if ip + 34 <= stop else 0
                    current = self._tcp
                elif proto == UDP:
                    flags = 0
                    current = self._udp
                else:
                    return self._slow(linktype, buf, start, stop)
                key = buf[ip + 12:ip + 24]
                # The common case inline: a known flow, no FIN, SYN or RST.
                entry = current.get(key)
                if entry is None or flags & _FIN_SYN_RST:
                    return self._route(proto, key, flags)
                owner = entry[0]
                if entry[2] != self._epoch:   # its first packet in this epoch
                    self._touch(entry)
                self.packets[owner] += 1
                return owner
        elif first >> 4 == 6 and ip + 44 <= stop and (at == ip or buf[at] << 8 | buf[at + 1] == v6):
            proto = buf[ip + 6]
            if proto == TCP:
                return self._route(TCP, buf[ip + 8:ip + 44],
                                   buf[ip + 53] if ip + 54 <= stop else 0)
            if proto == UDP:
                return self._route(UDP, buf[ip + 8:ip + 44], 0)
        return self._slow(linktype, buf, start, stop)

    def _slow(self, linktype: int, buf: bytes, start: int, stop: int) -> int:
        found = flow_key(linktype, buf[start:stop])
        return 0 if found is None else self._route(*found)

    def _route(self, proto: int, key: bytes, flags: int) -> int:
        current = self._current[proto]
        entry = current.get(key)
        if entry is None:
            entry = self._previous[proto].pop(key, None)
            if entry is None:
                entry = self._new(proto, key)
            else:
                current[key] = entry
        if entry[2] != self._epoch:
            self._touch(entry)
        owner = entry[0]
        self.packets[owner] += 1
        if flags & _FIN_SYN_RST:
            if flags & 0x05:          # FIN or RST: the connection ends; it keeps its owner
                if entry[1] == 1:
                    entry[1] = 0
                    self._live[TCP][owner] -= 1
            elif not entry[1] and not flags & _ACK:   # a new connection on the same ports
                entry[1] = 1
                self._live[TCP][owner] += 1
        return owner

    def _touch(self, entry: list[int]) -> None:
        """Note a flow's first packet in this epoch; an idle flow counts as live again."""
        entry[2] = self._epoch
        self._recent.append(entry)
        if entry[1] == _IDLE:
            entry[1] = 1
            self._live[entry[3]][entry[0]] += 1

    def _new(self, proto: int, key: bytes) -> list[int]:
        if len(self._current[proto]) >= GENERATION_KEYS:
            self._swap(proto)
        live, packets = self._live[proto], self.packets
        # The fewest live flows, then the fewest packets, then the lowest number (min()'s
        # first of equals), without a key tuple per shard.
        owner = 0
        for shard in range(1, self.shards):
            if live[shard] < live[owner] or (live[shard] == live[owner]
                                             and packets[shard] < packets[owner]):
                owner = shard
        live[owner] += 1
        entry = [owner, 1, self._epoch, proto]
        self._recent.append(entry)
        current = self._current[proto]
        current[key] = entry
        current[reverse_key(key)] = entry
        return entry

    def sweep(self, ts_ns: int) -> None:
        """Forget the flows idle for FORGET_NS of packet time (called at packets of the
        dissection's expiry clock, after the packet was routed: the same on every shard), and
        stop counting as live the flows without a packet for ACTIVE_NS."""
        self._epochs.append((ts_ns, self._epoch, self._recent))
        self._epoch += 1
        self._recent = []
        epochs = self._epochs
        while epochs and ts_ns - epochs[0][0] >= ACTIVE_NS:
            _, epoch, entries = epochs.pop(0)
            for entry in entries:
                # Not touched since that epoch (else it is in a later one), and counted.
                if entry[2] == epoch and entry[1] == 1:
                    entry[1] = _IDLE
                    self._live[entry[3]][entry[0]] -= 1
        for proto, forget in FORGET_NS.items():
            if ts_ns - self._swapped_ns[proto] >= forget:
                self._swapped_ns[proto] = ts_ns
                self._swap(proto)

    def _swap(self, proto: int) -> None:
        """Forget the keys not seen since the last swap (but those whose other direction was),
        and start a new generation."""
        current, live = self._current[proto], self._live[proto]
        for key, entry in self._previous[proto].items():
            if reverse_key(key) in current:   # the other direction is still active
                current[key] = entry
            elif entry[1] != _FORGOTTEN:
                if entry[1] == 1:
                    live[entry[0]] -= 1
                entry[1] = _FORGOTTEN   # its other direction, later in this loop, too
        self._previous[proto] = current
        self._current[proto] = {}
        self._tcp, self._udp = self._current[TCP], self._current[UDP]
