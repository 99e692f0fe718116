"""A shard's read of the store (worker.shard_filter, worker.flow_table): the table's fast path
reads every frame as packet.flow_key() does, flows are spread evenly and forgotten by packet
time alike, and a shard that keeps only its own packets and the stand-ins its clock needs makes
exactly the rows, keys included, that one dissection of everything makes for its flows."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from factories import tcp_packet, udp_packet
from test_dissect_shards import icmp_unreachable, write_mixed_store
from worker import flow_table
from worker.dissection import EXPIRED, Dissection, OrderKey, unpacked_key
from worker.flow_table import ACTIVE_NS, FORGET_NS, FlowTable, reverse_key
from worker.packet import (FOREIGN, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2,
                           LINKTYPE_LOOP, LINKTYPE_NULL, LINKTYPE_RAW, TCP, UDP, StoredPacket,
                           flow_key)
from worker.shard_filter import ShardFilter
from worker.store.segments import SegmentTail


def _relinked(frame: bytes) -> list[tuple[int, bytes]]:
    """An Ethernet frame as each link layer FlowTable reads at fixed offsets (and some it
    leaves to flow_key) carries its IP packet."""
    ethertype, ip = frame[12:14], frame[14:]
    family = 2 if ethertype == b"\x08\x00" else 30
    return [
        (LINKTYPE_ETHERNET, frame),
        (LINKTYPE_ETHERNET, frame[:12] + b"\x81\x00\x00\x05" + frame[12:]),   # VLAN 5
        (LINKTYPE_LINUX_SLL, b"\x00\x00\x00\x01\x00\x06" + frame[6:12] + b"\x00\x00" + ethertype + ip),
        (LINKTYPE_LINUX_SLL2, ethertype + b"\x00\x00" + b"\x00\x00\x00\x02" + b"\x00\x01\x00\x06"
         + frame[6:12] + b"\x00\x00" + ip),
        (LINKTYPE_RAW, ip),
        (LINKTYPE_NULL, struct.pack("<I", family) + ip),
        (LINKTYPE_LOOP, struct.pack("!I", family) + ip),
    ]


def _variants(frame: bytes) -> list[bytes]:
    """The frame, and the same flow's IP header made unusual: options, a fragment, DF."""
    if frame[12:14] != b"\x08\x00":
        hop_by_hop = bytes([frame[20], 0, 0, 0, 0, 0, 0, 0])     # IPv6: an extension header
        return [frame, frame[:20] + b"\x00" + frame[21:54] + hop_by_hop + frame[54:]]
    ihl6 = frame[:14] + b"\x46" + frame[15:34] + b"\x01\x01\x01\x01" + frame[34:]   # NOPs
    more_fragments = frame[:20] + b"\x20\x00" + frame[22:]
    later_fragment = frame[:20] + b"\x00\x10" + frame[22:]
    no_df = frame[:20] + b"\x00\x00" + frame[22:]
    reserved = frame[:20] + b"\xc0\x00" + frame[22:]
    return [frame, ihl6, more_fragments, later_fragment, no_df, reserved]


def _frames() -> list[tuple[int, bytes]]:
    frames = []
    for number, (client, server) in enumerate((("10.0.0.1", "10.0.0.2"), ("192.168.7.9", "10.1.0.3"),
                                                ("fd00::1", "fd00::2"), ("2001:db8::9", "fe80::1"))):
        v6 = ":" in client
        query = udp_packet(client, server, 40000 + number, 53, b"q")
        for frame in (tcp_packet(client, server, 50000 + number, 5432, flags="S", payload=b"x" * 30),
                      tcp_packet(server, client, 5432, 50000 + number, flags="SA"),
                      query, udp_packet(server, client, 53, 40000 + number, b"a"),
                      icmp_unreachable(query, v6)):
            for variant in _variants(frame):
                frames += _relinked(variant)
    frames.append((LINKTYPE_ETHERNET, b"\xff" * 12 + b"\x08\x06" + b"\0" * 28))   # ARP
    frames.append((9999, b"\0" * 60))                                              # unknown link
    return frames


def _slow_owner(table: FlowTable, linktype: int, frame: bytes) -> int:
    """FlowTable through packet.flow_key() alone: what the fast path must agree with. (A
    function, not a subclass: compiled, FlowTable takes no interpreted subclass.)"""
    found = flow_key(linktype, frame)
    return 0 if found is None else table._route(*found)


@pytest.mark.parametrize("shards", [1, 2, 3, 5])
def test_the_tables_fast_path_reads_every_frame_as_flow_key(shards: int) -> None:
    fast, slow = FlowTable(shards), FlowTable(shards)
    owners = set()
    for linktype, frame in _frames():
        # Cut at every length, and lying in a buffer between other bytes: the table reads
        # nothing outside buf[start:stop].
        for end in range(len(frame) + 1):
            cut = frame[:end]
            buf = b"\x45\x86\xdd" * 7 + cut + b"\x45\x00\x11" * 30
            start = 21
            expected = _slow_owner(slow, linktype, cut)
            assert fast.owner(linktype, buf, start, start + end) == expected, (linktype, cut.hex())
            owners.add(expected)
    assert owners == set(range(shards))
    assert fast.packets == slow.packets and len(fast) == len(slow)
    assert fast.live(TCP) == slow.live(TCP) and fast.live(UDP) == slow.live(UDP)


def _owner(table: FlowTable, frame: bytes) -> int:
    return table.owner(LINKTYPE_ETHERNET, frame, 0, len(frame))


@pytest.mark.parametrize("connections", [2, 4, 16])
def test_few_connections_split_evenly_after_a_short_one(connections: int) -> None:
    """pgbench's and redis-benchmark's shape: a connection that asks a question and closes,
    then the clients' connections, which the shards share evenly (a hash of their ports gave
    one shard both of pgbench's two)."""
    table = FlowTable(2)
    setup = [tcp_packet("127.0.0.1", "127.0.0.1", 39000, 5432, flags="S"),
             tcp_packet("127.0.0.1", "127.0.0.1", 5432, 39000, flags="SA"),
             tcp_packet("127.0.0.1", "127.0.0.1", 39000, 5432, flags="PA", payload=b"q" * 40),
             tcp_packet("127.0.0.1", "127.0.0.1", 39000, 5432, flags="FA"),
             tcp_packet("127.0.0.1", "127.0.0.1", 5432, 39000, flags="FA")]
    assert len({_owner(table, frame) for frame in setup}) == 1
    assert table.live(TCP) == [0, 0]   # it ended: it counts no more
    owners = [_owner(table, tcp_packet("127.0.0.1", "127.0.0.1", 40100 + 7 * n, 5432, flags="S"))
              for n in range(connections)]
    assert owners.count(0) == owners.count(1) == connections // 2
    assert table.live(TCP) == [connections // 2] * 2
    # The setup connection's late packets still go where it went.
    assert _owner(table, setup[2]) == _owner(table, setup[0])


def test_idle_flows_are_forgotten_by_packet_time_only() -> None:
    table = FlowTable(2)
    t0 = 1_700_000_000_000_000_000
    busy = tcp_packet("10.0.0.1", "10.0.0.2", 40000, 80, flags="S")
    busy_back = tcp_packet("10.0.0.2", "10.0.0.1", 80, 40000, flags="A")
    quiet = tcp_packet("10.0.0.1", "10.0.0.2", 40001, 80, flags="S")
    query = udp_packet("10.0.0.1", "10.0.0.3", 5353, 53, b"q")
    first = [_owner(table, frame) for frame in (busy, quiet, query)]
    assert first[:2] == [0, 1] and table.live(UDP) == [1, 0]
    table.sweep(t0)
    # Only one direction of `busy` goes on; both stay known. UDP is forgotten sooner.
    for second in range(1, 300):
        _owner(table, busy_back)
        table.sweep(t0 + second * 1_000_000_000)
        if second == FORGET_NS[UDP] // 1_000_000_000 - 1:
            assert len(table) == 6   # idle for less than FORGET_NS: kept (not counted live)
        if second == FORGET_NS[TCP] // 1_000_000_000 - 1:
            assert len(table) == 4
    assert table.live(UDP) == [0, 0] and table.live(TCP) == [1, 0]
    assert _owner(table, busy) == first[0]
    # `quiet` was forgotten: it is a new flow now, given to the shard with fewer live flows
    assert _owner(table, quiet) == 1 and table.live(TCP) == [1, 1]
    assert len(table) == 4   # two keys per flow, no more


def _client(port: int, flags: str = "PA") -> bytes:
    return tcp_packet("127.0.0.1", "127.0.0.1", port, 3306, flags=flags, payload=b"q" * 40)


@pytest.mark.parametrize("idle", [True, False])
def test_an_idle_old_flow_does_not_weigh_on_its_shard(idle: bool) -> None:
    """A pool's shape (mysqlslap's setup connection, or any pool's idle connections): an old
    flow, busy at first, then open but quiet. Idle for ACTIVE_NS it counts no more, and four
    new busy clients split 2/2; still busy, it counts, and they split 3/1 against it."""
    table = FlowTable(2)
    t0 = 1_700_000_000_000_000_000
    second = 1_000_000_000
    old = _client(39000, "S")
    assert _owner(table, old) == 0
    for n in range(200):   # busy for 4 s
        _owner(table, _client(39000))
        table.sweep(t0 + n * second // 50)
    now = t0 + 4 * second
    while now < t0 + 4 * second + ACTIVE_NS + 2 * second:   # then idle, or still busy
        now += second // 2
        if not idle:
            _owner(table, _client(39000))
        table.sweep(now)
    assert table.live(TCP) == ([0, 0] if idle else [1, 0])
    owners = [_owner(table, _client(40000 + n, "S")) for n in range(4)]
    assert sorted(owners) == ([0, 0, 1, 1] if idle else [0, 1, 1, 1])
    # Its next packet counts it again, on the shard it had.
    assert _owner(table, _client(39000)) == 0
    assert table.live(TCP) == ([3, 2] if idle else [2, 3])
    # The new flows' packets keep them live; idle again, all stop counting.
    for _ in range(3):
        now += second
        for n in range(4):
            _owner(table, _client(40000 + n))
        table.sweep(now)
    assert table.live(TCP) == ([3, 2] if idle else [2, 3])
    table.sweep(now + ACTIVE_NS + second)
    assert table.live(TCP) == [0, 0] and len(table) == 10


def test_reverse_key() -> None:
    v4 = bytes(range(12))
    assert reverse_key(v4) == v4[4:8] + v4[0:4] + v4[10:12] + v4[8:10]
    v6 = bytes(range(36))
    assert reverse_key(reverse_key(v6)) == v6 and reverse_key(v6)[:16] == v6[16:32]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mixed golden captures, 5 copies 300 s apart (flows expire between them), in
    segments of 512 KiB."""
    return write_mixed_store(tmp_path_factory.mktemp("store"))


def _keyed(dissection: Dissection) -> list[tuple[OrderKey, bytes]]:
    """The rows made since the last take: their OrderKeys and entries (without their ids)."""
    return [(unpacked_key(row[0]), row[3]) for row in dissection.take_wire_report()[1]]


def _one_dissection(store: Path) -> tuple[list[tuple[OrderKey, bytes]], int, tuple[int, int]]:
    tail, dissection, rows = SegmentTail(store), Dissection("n1"), []
    while batch := tail.read(2048):
        dissection.feed(batch)
        rows += _keyed(dissection)
    dissection.close_all()
    assert tail.position is not None
    return rows + _keyed(dissection), tail.packets_read, tail.position


@pytest.mark.parametrize(("shards", "read_batch"), [(2, 2048), (3, 100), (2, 7)])
def test_filtered_shards_make_the_one_dissections_rows(store: Path, shards: int,
                                                       read_batch: int) -> None:
    single, packets, last = _one_dissection(store)
    assert any(key[2] == EXPIRED for key, _json in single)   # the clock closes flows
    merged: list[tuple[OrderKey, bytes]] = []
    for index in range(shards):
        tail, keep, dissection = SegmentTail(store), ShardFilter(index, shards), Dissection("n1")
        stand_ins = 0
        while batch := tail.read(read_batch, keep):
            assert len(batch) <= read_batch
            stand_ins += sum(1 for p in batch if p[1] == FOREIGN)
            assert all(p[3] == b"" for p in batch if p[1] == FOREIGN)
            assert batch[-1][0] == tail.position   # the last record read ends every batch
            dissection.feed(batch)
            merged += _keyed(dissection)
            if read_batch == 7:
                assert dissection._current_ref == tail.position
        dissection.close_all()
        merged += _keyed(dissection)
        assert tail.packets_read == packets and tail.position == last
        assert keep.foreign > 0 and stand_ins < keep.foreign / 2   # most cost no object
    # In the merge's order (by key; a key's last field counts the entries its own dissection
    # made), the entries of the one dissection, each where the one makes it.
    merged.sort(key=lambda keyed: keyed[0])
    assert [json for _key, json in merged] == [json for _key, json in single]
    assert [key[:7] for key, _json in merged] == [key[:7] for key, _json in single]


def test_a_shard_of_one_keeps_everything(store: Path) -> None:
    tail, keep = SegmentTail(store), ShardFilter(0, 1)
    every: list[StoredPacket] = []
    while batch := tail.read(1000, keep):
        every += batch
    assert keep.foreign == 0 and all(p[1] != FOREIGN for p in every)
    plain = SegmentTail(store)
    assert every == [p for batch in iter(lambda: plain.read(1000), []) for p in batch]


def test_a_filter_names_its_shard() -> None:
    with pytest.raises(ValueError, match="shard 2 of 2"):
        ShardFilter(2, 2)
    with pytest.raises(ValueError, match="shards 0"):
        FlowTable(0)


def test_a_flood_of_new_flows_swaps_generations_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow_table, "GENERATION_KEYS", 8)
    table = FlowTable(2)
    kept = tcp_packet("10.0.0.1", "10.0.0.2", 40000, 80, flags="S")
    owner = _owner(table, kept)
    for n in range(100):
        _owner(table, tcp_packet("10.0.0.1", "10.0.0.2", 41000 + n, 80, flags="S"))
        _owner(table, kept)   # seen all along: it keeps its owner
    assert len(table) <= 2 * 8 + 2
    assert _owner(table, kept) == owner
    assert sum(table.live(TCP)) <= 8   # the forgotten ones count no more


@pytest.mark.parametrize("generation_keys", [8, 2 * 65536])
def test_the_fast_path_agrees_with_flow_key_across_sweeps_and_swaps(
        monkeypatch: pytest.MonkeyPatch, generation_keys: int) -> None:
    """Packets of many flows (more than the recent-keys slots, so slots are shared and
    overwritten), in runs and interleaved, with sweeps over several FORGET_NS: compiled, the
    fast path finds most keys in its slots, which must give what `current` gives (a key moved
    to `previous` by a swap is found again through the dicts, a forgotten flow starts anew)."""
    import random
    monkeypatch.setattr(flow_table, "GENERATION_KEYS", generation_keys)
    fast, slow = FlowTable(3), FlowTable(3)
    rng = random.Random(17)
    flows = [(f"10.0.{n % 7}.{n % 251}", f"10.1.0.{n % 5}", 30000 + n, 80 if n % 3 else 53,
              n % 4 == 0) for n in range(600)]
    now = 1_700_000_000_000_000_000
    for step in range(6000):
        client, server, sport, dport, udp = flows[min(int(rng.expovariate(1 / 40)), 599)]
        repeat = rng.choice((1, 1, 2, 5))
        for _ in range(repeat):
            back = rng.random() < 0.5
            src, dst, s, d = ((server, client, dport, sport) if back
                              else (client, server, sport, dport))
            if udp:
                frame = udp_packet(src, dst, s, d, b"x")
            else:
                flags = rng.choice(("A", "A", "A", "PA", "S", "F", "R", "SA"))
                frame = tcp_packet(src, dst, s, d, flags=flags)
            assert _owner(fast, frame) == _slow_owner(slow, LINKTYPE_ETHERNET, frame), step
        if step % 50 == 0:
            now += rng.choice((1, 3, 20, 40)) * 1_000_000_000
            fast.sweep(now)
            slow.sweep(now)
            assert fast.packets == slow.packets and len(fast) == len(slow), step
            assert fast.live(TCP) == slow.live(TCP) and fast.live(UDP) == slow.live(UDP), step
