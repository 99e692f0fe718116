"""What a dissection shard reads of the store: the packets of its own flows, and of the other
shards' packets only those that its dissection's clock needs.

A shard reads every record of the store, but a record of another shard's flow should cost it as
little as can be: its owner comes from the bytes where it lies in the read buffer
(worker.flow_table, the balanced assignment every shard makes alike), no bytes are sliced out
and no StoredPacket is made for it. What such a record still means to the dissection is its
time: Dissection.feed expires idle flows at the first packet more than EXPIRE_EVERY_NS after
the packet of the last expiry, counting every packet of the store, so that all shards (and one
in-thread dissection) expire at the same packets and give their entries the same OrderKeys. The
filter applies the same rule to every record it reads, from the same start (0: a shard's filter
and dissection are made together), and keeps a foreign record, as a FOREIGN StoredPacket
without its bytes, exactly when the rule fires on it; the dissection, seeing the same times at
every packet it would have expired at, fires at the same ones. The flow table forgets idle
flows at those same packets. The last record read in a call is kept too: after a batch the
dissection's place and time are those of the last packet read, as when it read them all.
"""

from __future__ import annotations

from mypy_extensions import i64

from shark.pcap import NS, RECORD_HEADER_SIZE, FileHeader, Stop
from worker.dissection import EXPIRE_EVERY_NS
from worker.flow_table import _FIXED_LINKS, FlowTable
from worker.packet import FOREIGN, StoredPacket
from worker.records import NATIVE, u32le


# Compiled (records.NATIVE), sixteen byte loads beat struct's tuple of four ints (0.29 against
# 0.66 us per foreign record on redis.pcap); interpreted, they cost more than the tuple does
# (1.6 against 0.97 us), so SHARK_PURE_PYTHON (or a failed build) reads headers with struct.


class ShardFilter:
    """SegmentTail.read's `keep` for shard `index` of `count` (a store.segments.RecordFilter)."""

    def __init__(self, index: int, count: int) -> None:
        if not 0 <= index < count:
            raise ValueError(f"shard {index} of {count}: expected 0 <= index < count")
        self.index = index
        # A shard of one (the in-thread pipeline) owns every record: no owner to find, no
        # flow table to keep; what it still does is decode_records' work, compiled.
        self._all = count == 1
        self.table = FlowTable(count)
        self._last_expire_ns = 0
        self.foreign = 0          # records of other shards' flows read

    def records(self, segment: int, buf: bytes, pos: i64, header: FileHeader, max_records: int,
                out: list[StoredPacket], base: int) -> tuple[int, Stop, int]:
        # shark.pcap.decode_records, with the owner of each record told before it is sliced.
        unpack = header.record.unpack_from
        # The time in i64 (as worker.records): a tagged int's product is native only while both
        # factors are below 2**31, and a record's seconds are above it since 2004, so
        # `sec * NS` went through a generic multiply (boxed ints) at every record: ~800 of the
        # ~2,800 instructions a record cost a shard of one (callgrind, redis.pcap). A record's time
        # (u32 seconds, a fraction below a second) fits an i64 in ns.
        mult: i64 = header.ts_multiplier
        # shark.pcap is not compiled: its constants would be looked up in its module's dict at
        # each use (three per record, ~130 instructions each), so they are read once here.
        ns: i64 = NS
        header_size: i64 = RECORD_HEADER_SIZE
        limit: i64 = header.snaplen
        linktype = header.linktype
        table = self.table
        link = _FIXED_LINKS.get(linktype)   # one linktype per segment: looked up once
        index = self.index
        last_expire: i64 = self._last_expire_ns
        every: i64 = EXPIRE_EVERY_NS
        end: i64 = len(buf)
        read = foreign = 0
        kept_last = True
        stopped = Stop.FULL
        at = wirelen = 0
        ts_ns: i64 = 0
        sec: i64
        frac: i64
        incl: i64
        little = NATIVE and not header.big_endian
        every_record = self._all
        while read < max_records:
            if pos + header_size > end:
                stopped = Stop.MORE
                break
            if little:   # the store's own byte order, compiled: byte loads, no tuple
                sec = u32le(buf, pos)
                frac = u32le(buf, pos + 4)
                incl = u32le(buf, pos + 8)
                wirelen = u32le(buf, pos + 12)
            else:
                sec, frac, incl, wirelen = unpack(buf, pos)
            if incl > limit:
                stopped = Stop.TOO_LONG
                break
            start = pos + header_size
            stop = start + incl
            if stop > end:
                stopped = Stop.MORE
                break
            ts_ns = sec * ns + frac * mult
            at = base + pos
            if every_record:
                out.append(((segment, at), linktype, ts_ns, buf[start:stop], wirelen))
                read += 1
                pos = stop
                continue
            owner = (table.owner_fixed(link, linktype, buf, start, stop) if link is not None
                     else table.owner(linktype, buf, start, stop))
            if owner == index:
                out.append(((segment, at), linktype, ts_ns, buf[start:stop], wirelen))
                kept_last = True
                if ts_ns - last_expire > every:
                    last_expire = ts_ns
                    table.sweep(ts_ns)
            else:
                foreign += 1
                kept_last = ts_ns - last_expire > every
                if kept_last:
                    last_expire = ts_ns
                    table.sweep(ts_ns)
                    out.append(((segment, at), FOREIGN, ts_ns, b"", wirelen))
            read += 1
            pos = stop
        if not kept_last:
            out.append(((segment, at), FOREIGN, ts_ns, b"", wirelen))
        self._last_expire_ns = last_expire
        self.foreign += foreign
        return pos, stopped, read
