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
by bytes at fixed offsets, anything else goes through packet.flow_key(). The module is compiled
(shark.compiled): each byte read is then a native load, and worker.shard_filter calls
owner_fixed() directly with the linktype's row looked up once per read. A flow's entry and a
shard's counts are objects of native fields (a packet counted is a native add), and each
protocol keeps a small cache of the IPv4 keys it found in its current generation, compared as
three native ints in place: consecutive packets of a few busy connections (redis, postgres)
find their entry there without the key's slice and the dict's hash and compare.
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import i64

from worker.packet import (_RAW_IP_LINKTYPES, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LOOP,
                           LINKTYPE_NULL, TCP, UDP, flow_key)
from worker.records import NATIVE

# How long a flow idle in packet time keeps its owner: longer than the assembler keeps an idle
# flow open (worker.assembler: TCP 120 s, UDP 30 s) plus one expiry step (1 s), so that a
# flow forgotten here is closed in its owner's assembler too. A flow is forgotten between
# FORGET_NS and twice that after its last packet (two generations of keys, swapped whole).
FORGET_NS: Final = {TCP: 125_000_000_000, UDP: 35_000_000_000}
# Keys one generation of a protocol holds at most (two per flow: as many flows as the
# assembler's max_flows). A new flow past it swaps generations early, forgetting the flows not
# seen since the last swap: a flood of new flows bounds the table (~30 MB per shard at most)
# and, being counted in packets, still does so alike in every shard. (Not Final: a test lowers
# it; a table reads it when it is made.)
GENERATION_KEYS = 2 * 65536
# How long a flow without a packet still counts as live for balancing: between ACTIVE_NS and
# that plus one sweep interval (worker.dissection.EXPIRE_EVERY_NS, 1 s, or the gap to the
# next packet). Long enough that a request/response connection thinking between requests
# still counts; short against a pool's connections idle for minutes.
ACTIVE_NS: Final = 5_000_000_000
_FIN_SYN_RST: Final = 0x07
_ACK: Final = 0x10
# A flow's state: live (counted in its shard's live flows of its protocol), live but idle (not
# counted), ended (FIN, RST), forgotten.
_LIVE: Final = 1
_IDLE: Final = 2
_ENDED: Final = 0
_FORGOTTEN: Final = -1
# The recent-keys cache of a protocol: direct-mapped, by a mix of the key's three ints.
_SLOTS: Final = 256

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


def _u32(buf: bytes, at: i64) -> i64:
    """The big-endian u32 at buf[at:at + 4]. Compiled, each byte an i64: a tagged int's shift
    is a call."""
    b0: i64 = buf[at]
    b1: i64 = buf[at + 1]
    b2: i64 = buf[at + 2]
    b3: i64 = buf[at + 3]
    return b0 << 24 | b1 << 16 | b2 << 8 | b3


class _Shard:
    """A shard's counts. Native fields: a list[int] item's `+= 1` went through boxed ints
    (~230 instructions a packet, callgrind)."""

    __slots__ = ("number", "packets", "tcp", "udp")

    def __init__(self, number: int) -> None:
        self.number = number
        self.packets: i64 = 0   # packets of its flows so far
        self.tcp: i64 = 0       # its live flows of each protocol
        self.udp: i64 = 0

    def live(self, proto: int) -> i64:
        return self.tcp if proto == TCP else self.udp

    def add_live(self, proto: int, change: i64) -> None:
        if proto == TCP:
            self.tcp += change
        else:
            self.udp += change


class _Flow:
    """The entry both directions of a flow share: its owner (and that shard's counts), its
    state (_LIVE ...), the epoch of its last packet, its protocol."""

    __slots__ = ("owner", "shard", "state", "epoch", "proto")

    def __init__(self, shard: _Shard, epoch: i64, proto: int) -> None:
        self.owner = shard.number
        self.shard = shard
        self.state: i64 = _LIVE
        self.epoch: i64 = epoch
        self.proto = proto


class _Slot:
    """One IPv4 key of the recent-keys cache (addresses and ports as u32s) and its entry."""

    __slots__ = ("src", "dst", "ports", "flow")

    def __init__(self, flow: _Flow) -> None:
        self.src: i64 = 0
        self.dst: i64 = 0
        self.ports: i64 = -1    # no key: ports are never negative
        self.flow = flow


class _Keys:
    """One protocol's keys: key -> entry, both directions sharing it. Those seen since the last
    swap are in `current`, those of the generation before in `previous` (see _swap). The slots
    cache keys found in `current`: a key there stays there, with its entry, until the next swap
    (the keys of current and previous together hold both directions of each flow, so a new
    flow's two keys are in neither), and the swap empties the slots."""

    __slots__ = ("current", "previous", "swapped_ns", "slots", "_none")

    def __init__(self, none: _Flow) -> None:
        self.current: dict[bytes, _Flow] = {}
        self.previous: dict[bytes, _Flow] = {}
        self.swapped_ns: i64 = 0
        self._none = none
        self.slots = [_Slot(none) for _ in range(_SLOTS)]

    def empty_slots(self) -> None:
        for slot in self.slots:
            slot.ports = -1
            slot.flow = self._none


class FlowTable:
    """owner(linktype, buf, start, stop) of the frame at buf[start:stop]; sweep(ts_ns) at the
    packets where the dissection's clock expires flows (worker.shard_filter)."""

    __slots__ = ("shards", "_shards", "_tcp", "_udp", "_generation_keys", "_epoch", "_recent",
                 "_epochs")

    def __init__(self, shards: int) -> None:
        if shards < 1:
            raise ValueError(f"shards {shards}: expected at least 1")
        self.shards = shards
        self._shards = [_Shard(number) for number in range(shards)]
        none = _Flow(self._shards[0], -1, 0)   # what an empty slot holds
        self._tcp = _Keys(none)
        self._udp = _Keys(none)
        self._generation_keys = GENERATION_KEYS
        # Sweeps so far (an epoch is the time between two), the entries first seen in this
        # epoch, and those of the epochs before, still within ACTIVE_NS: (the time the epoch
        # ended, its number, its entries). A flow is touched once per epoch, so finding idle
        # flows costs a sweep the flows of one old epoch, not the whole table.
        self._epoch: i64 = 0
        self._recent: list[_Flow] = []
        self._epochs: list[tuple[int, int, list[_Flow]]] = []

    @property
    def packets(self) -> list[int]:
        """Per shard, the packets of its flows so far."""
        return [shard.packets for shard in self._shards]

    def __len__(self) -> int:
        """Keys held (two per flow seen in both directions)."""
        return sum(len(keys.current) + len(keys.previous) for keys in (self._tcp, self._udp))

    def live(self, proto: int) -> list[int]:
        """Per shard, its flows of `proto` that are live and not idle (what _new weighs)."""
        return [shard.live(proto) for shard in self._shards]

    def _keys(self, proto: int) -> _Keys:
        return self._tcp if proto == TCP else self._udp

    def owner(self, linktype: int, buf: bytes, start: int, stop: int) -> int:
        link = _FIXED_LINKS.get(linktype)
        if link is None:
            return self._slow(linktype, buf, start, stop)
        return self.owner_fixed(link, linktype, buf, start, stop)

    def owner_fixed(self, link: tuple[int, int, int, int], linktype: int, buf: bytes,
                    start: i64, stop: i64) -> int:
        """owner() with the linktype's row of _FIXED_LINKS looked up once by the caller (a
        shard's filter reads segments of one linktype). Compiled, offsets and bytes are i64:
        each buf[i] is a native load and each shift native, no slice but a missed key's."""
        ip: i64 = link[3]
        ip += start
        if ip + 24 > stop:     # shorter than IPv4 and the ports: flow_key() says
            return self._slow(linktype, buf, start, stop)
        at: i64 = link[0]
        at += start
        first: i64 = buf[ip]
        if first == 0x45:
            if at != ip:
                high: i64 = buf[at]
                low: i64 = buf[at + 1]
                if high << 8 | low != link[1]:
                    return self._slow(linktype, buf, start, stop)
            # Not a fragment (MF clear, offset 0: the DF and reserved bits may be set).
            fragment: i64 = buf[ip + 6]
            offset: i64 = buf[ip + 7]
            if fragment & 0x3F or offset:
                return self._slow(linktype, buf, start, stop)
            proto: i64 = buf[ip + 9]
            if proto == TCP:
                keys = self._tcp
                if ip + 34 <= stop:
                    flags: i64 = buf[ip + 33]
                    if flags & _FIN_SYN_RST:
                        return self._route(TCP, buf[ip + 12:ip + 24], flags)
            elif proto == UDP:
                keys = self._udp
            else:
                return self._slow(linktype, buf, start, stop)
            if NATIVE:
                return self._known(keys, proto, buf, ip)
            # Interpreted, the slice and the dict cost less than the slots' byte loads and
            # arithmetic (the store read of redis.pcap took 1.8 times as long with them).
            key = buf[ip + 12:ip + 24]
            found = keys.current.get(key)
            return self._absent(proto, keys, key, 0) if found is None else self._count(found, 0)
        if first >> 4 == 6 and ip + 44 <= stop:
            if at != ip:
                high = buf[at]
                low = buf[at + 1]
                if high << 8 | low != link[2]:
                    return self._slow(linktype, buf, start, stop)
            proto = buf[ip + 6]
            if proto == TCP:
                return self._route(TCP, buf[ip + 8:ip + 44],
                                   buf[ip + 53] if ip + 54 <= stop else 0)
            if proto == UDP:
                return self._route(UDP, buf[ip + 8:ip + 44], 0)
        return self._slow(linktype, buf, start, stop)

    def _known(self, keys: _Keys, proto: i64, buf: bytes, ip: i64) -> int:
        """The owner of an IPv4 packet without FIN, SYN or RST whose key is at buf[ip + 12:
        ip + 24]: from the slots or `current` (the common case), else by _route."""
        src = _u32(buf, ip + 12)
        dst = _u32(buf, ip + 16)
        ports = _u32(buf, ip + 20)
        mixed = src ^ dst << 1 ^ ports * 0x9E37
        slot = keys.slots[(mixed ^ mixed >> 7 ^ mixed >> 17) & (_SLOTS - 1)]
        if slot.ports == ports and slot.src == src and slot.dst == dst:
            flow = slot.flow
        else:
            key = buf[ip + 12:ip + 24]
            found = keys.current.get(key)
            if found is None:
                return self._absent(proto, keys, key, 0)
            flow = found
            slot.src = src
            slot.dst = dst
            slot.ports = ports
            slot.flow = flow
        if flow.epoch != self._epoch:   # its first packet in this epoch
            self._touch(flow)
        flow.shard.packets += 1
        return flow.owner

    def _slow(self, linktype: int, buf: bytes, start: int, stop: int) -> int:
        found = flow_key(linktype, buf[start:stop])
        return 0 if found is None else self._route(*found)

    def _route(self, proto: int, key: bytes, flags: int) -> int:
        keys = self._keys(proto)
        entry = keys.current.get(key)
        if entry is None:
            return self._absent(proto, keys, key, flags)
        return self._count(entry, flags)

    def _absent(self, proto: int, keys: _Keys, key: bytes, flags: int) -> int:
        """_route of a key not in `current` (as _known found it): from `previous`, or new."""
        entry = keys.previous.pop(key, None)
        if entry is None:
            entry = self._new(proto, keys, key)
        else:
            keys.current[key] = entry
        return self._count(entry, flags)

    def _count(self, entry: _Flow, flags: int) -> int:
        """A packet of the entry's flow: counted, and a TCP connection's end or start noted."""
        if entry.epoch != self._epoch:
            self._touch(entry)
        shard = entry.shard
        shard.packets += 1
        if flags & _FIN_SYN_RST:
            if flags & 0x05:          # FIN or RST: the connection ends; it keeps its owner
                if entry.state == _LIVE:
                    entry.state = _ENDED
                    shard.tcp -= 1
            elif entry.state == _ENDED and not flags & _ACK:   # a new connection on the same ports
                entry.state = _LIVE
                shard.tcp += 1
        return entry.owner

    def _touch(self, entry: _Flow) -> None:
        """Note a flow's first packet in this epoch; an idle flow counts as live again."""
        entry.epoch = self._epoch
        self._recent.append(entry)
        if entry.state == _IDLE:
            entry.state = _LIVE
            entry.shard.add_live(entry.proto, 1)

    def _new(self, proto: int, keys: _Keys, key: bytes) -> _Flow:
        if len(keys.current) >= self._generation_keys:
            self._swap(proto)
        shards = self._shards
        # The fewest live flows, then the fewest packets, then the lowest number (min()'s
        # first of equals), without a key tuple per shard.
        best = shards[0]
        fewest = best.live(proto)
        for number in range(1, len(shards)):
            shard = shards[number]
            live = shard.live(proto)
            if live < fewest or (live == fewest and shard.packets < best.packets):
                best, fewest = shard, live
        best.add_live(proto, 1)
        entry = _Flow(best, self._epoch, proto)
        self._recent.append(entry)
        current = keys.current
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
                if entry.epoch == epoch and entry.state == _LIVE:
                    entry.state = _IDLE
                    entry.shard.add_live(entry.proto, -1)
        for proto, forget in FORGET_NS.items():
            keys = self._keys(proto)
            if ts_ns - keys.swapped_ns >= forget:
                keys.swapped_ns = ts_ns
                self._swap(proto)

    def _swap(self, proto: int) -> None:
        """Forget the keys not seen since the last swap (but those whose other direction was),
        and start a new generation."""
        keys = self._keys(proto)
        current = keys.current
        for key, entry in keys.previous.items():
            if reverse_key(key) in current:   # the other direction is still active
                current[key] = entry
            elif entry.state != _FORGOTTEN:
                if entry.state == _LIVE:
                    entry.shard.add_live(proto, -1)
                entry.state = _FORGOTTEN   # its other direction, later in this loop, too
        keys.previous = current
        keys.current = {}
        keys.empty_slots()
