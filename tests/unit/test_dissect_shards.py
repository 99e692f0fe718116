"""Dissection sharded by flow (--dissect-shards): the same index as one dissection, and a
shard that dies is seen in the stats and started again while the worker goes on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from factories import tcp_packet, udp_packet
from support.golden import GOLDEN
from worker.broadcast import Broadcaster
from worker.dissection import MemoryBudget, packed_key, packed_watermark
from worker.options import default_dissect_shards
from worker.flow_table import FlowTable
from worker.packet import UNREACHABLE, decode
from worker.pipeline import DissectionStats, Pipeline
from worker.redact import Redactor
from worker import sharded
from worker.shard import ReportReader, ShardReport, ShardState, ShardStats
from worker.sharded import ShardedPipeline
from worker.sources import open_file_source
from worker.store.index import NO_VALUE, EntryIndex, IndexRow
from worker.store.segments import SegmentWriter, list_segments

# Copies of the mixed capture, each later by more than the TCP idle timeout (its flows end
# between copies): the store then spans several segments.
COPIES = 5
COPY_SHIFT_NS = 300 * 1_000_000_000
LIMIT = 4 * 1024 * 1024   # segments of 512 KiB
TIMEOUT_S = 60.0


def mixed_packets() -> list[tuple[int, bytes, int]]:
    """Every golden capture (all Ethernet), each moved to start 7 ms after the previous one,
    merged by time: their flows interleave."""
    packets: list[tuple[int, int, int, bytes, int]] = []
    for number, path in enumerate(sorted(GOLDEN.rglob("*.pcap"))):
        source = open_file_source(path)
        assert source.linktype == 1, f"{path}: linktype {source.linktype}, expected Ethernet"
        base = None
        order = 0
        while not source.finished:
            for ts_ns, data, wirelen in source.read_batch(4096):
                base = ts_ns if base is None else base
                packets.append((ts_ns - base + number * 7_000_000, number, order, data, wirelen))
                order += 1
        source.close()
    packets.sort(key=lambda p: p[:3])
    start = 1_700_000_000 * 1_000_000_000
    return [(start + copy * COPY_SHIFT_NS + ts, data, wirelen)
            for copy in range(COPIES) for ts, _n, _o, data, wirelen in packets]


def write_mixed_store(directory: Path) -> Path:
    """`mixed_packets` stored in segments of 512 KiB (several)."""
    writer = SegmentWriter(directory, LIMIT)
    packets = mixed_packets()
    for at in range(0, len(packets), 500):
        writer.append(1, packets[at:at + 500])
    writer.close()
    assert len(list_segments(directory)) >= 2
    return directory


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mixed_store(tmp_path_factory.mktemp("store"))


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class RecordingBroadcaster(Broadcaster):
    """A broadcaster with one live subscriber that takes every row."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[IndexRow] = []

    @property
    def count(self) -> int:
        return 1

    def publish(self, rows: list[IndexRow]) -> None:
        self.published.extend(rows)


def indexed(store: Path, index_path: Path, shards: int, cursor: tuple[int, int] | None = None,
            broadcaster: Broadcaster | None = None) -> tuple[list[IndexRow], DissectionStats]:
    """The rows `shards` shards index from the store (from after `cursor`), and their stats."""
    broadcaster = broadcaster or Broadcaster()
    index = EntryIndex(index_path)
    if cursor is not None:
        index.add([], cursor)
    redactor = Redactor("k" * 32)
    if shards == 1:
        pipeline: Pipeline | ShardedPipeline = Pipeline(store, index, "n1", broadcaster,
                                                        lambda: True, redactor,
                                                        memory=MemoryBudget(64 * 1024 * 1024))
    else:
        pipeline = ShardedPipeline(store, index, "n1", broadcaster, lambda: True, redactor,
                                   shards=shards, memory_limit=64 * 1024 * 1024)
    # The hub's names, given before the shards start, are stamped by them as in-thread.
    pipeline.names.replace({"127.0.0.1": ("web-1", "shop", "pod")})
    pipeline.start()
    try:
        wait_for(lambda: pipeline.ended, f"{shards} shards to index the store")
        assert pipeline.stats.errors == 0, pipeline.stats.last_error
        return index.newer_than(0), pipeline.stats
    finally:
        pipeline.stop()
        index.close()


@pytest.mark.parametrize("shards", [2, 3])
def test_sharded_index_is_the_single_one(store: Path, tmp_path: Path, shards: int) -> None:
    single, single_stats = indexed(store, tmp_path / "single.sqlite", 1)
    sharded, sharded_stats = indexed(store, tmp_path / "sharded.sqlite", shards)
    protocols = {row.protocol for row in single}
    assert {"http", "dns", "redis", "kafka", "postgres", "mysql", "mqtt", "tls"} <= protocols
    assert len(single) > 300
    assert any(b'"name":"web-1"' in row.entry_json for row in single)
    assert [row.entry_json for row in sharded] == [row.entry_json for row in single]
    assert sharded == single   # seq (the id), packet refs, flows: every column
    # and the counters /status shows, summed over the shards
    for name in ("packets", "not_tcp_udp", "entries", "cut", "skipped", "discontinuities"):
        assert getattr(sharded_stats, name) == getattr(single_stats, name), name
    assert sharded_stats.memory is not None and single_stats.memory is not None
    assert sharded_stats.memory.limit == single_stats.memory.limit // shards * shards
    assert sharded_stats.memory.cut_sessions == single_stats.memory.cut_sessions == 0


EXCHANGES = 25


def few_connections(connections: int) -> list[tuple[int, bytes, int]]:
    """redis-benchmark's and pgbench's shape: a connection that asks once and closes, then
    `connections` keep-alive HTTP clients taking turns, EXCHANGES exchanges each."""
    t0 = 1_700_000_000 * 1_000_000_000
    frames: list[bytes] = []
    request = b"GET /n HTTP/1.1\r\nHost: a\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    ports = [39000] + [41000 + 13 * n for n in range(connections)]
    seqs = {port: [1, 1] for port in ports}

    def exchange(port: int) -> None:
        sent, received = seqs[port]
        frames.append(tcp_packet("10.7.0.1", "10.7.0.2", port, 80, seq=sent, ack=received,
                                 flags="PA", payload=request))
        frames.append(tcp_packet("10.7.0.2", "10.7.0.1", 80, port, seq=received, ack=sent + len(request),
                                 flags="PA", payload=response))
        seqs[port] = [sent + len(request), received + len(response)]

    def handshake(port: int) -> None:
        frames.append(tcp_packet("10.7.0.1", "10.7.0.2", port, 80, seq=0, flags="S"))
        frames.append(tcp_packet("10.7.0.2", "10.7.0.1", 80, port, seq=0, ack=1, flags="SA"))
        frames.append(tcp_packet("10.7.0.1", "10.7.0.2", port, 80, seq=1, ack=1, flags="A"))

    handshake(ports[0])
    exchange(ports[0])
    sent, received = seqs[ports[0]]
    frames.append(tcp_packet("10.7.0.1", "10.7.0.2", ports[0], 80, seq=sent, ack=received, flags="FA"))
    frames.append(tcp_packet("10.7.0.2", "10.7.0.1", 80, ports[0], seq=received, ack=sent + 1,
                             flags="FA"))
    for port in ports[1:]:
        handshake(port)
    for _ in range(EXCHANGES):
        for port in ports[1:]:
            exchange(port)
    return [(t0 + n * 100_000, frame, len(frame)) for n, frame in enumerate(frames)]


@pytest.mark.parametrize(("connections", "shards"), [(2, 2), (4, 2), (16, 2), (4, 4), (16, 4)])
def test_few_connections_are_shared_evenly_in_the_single_index(tmp_path: Path, connections: int,
                                                               shards: int) -> None:
    """Issue 17: with 2, 4 or 16 busy connections each shard dissects its share of them (a
    hash of the ports gave pgbench's two connections to one shard), and the index is the one
    a single dissection makes."""
    writer = SegmentWriter(tmp_path / "store", LIMIT)
    writer.append(1, few_connections(connections))
    writer.close()
    single, _stats = indexed(tmp_path / "store", tmp_path / "single.sqlite", 1)
    sharded, stats = indexed(tmp_path / "store", tmp_path / "sharded.sqlite", shards)
    assert len(single) == 1 + connections * EXCHANGES
    assert sharded == single
    per_shard = sorted(state.entries for state in stats.shards)
    share = connections // shards * EXCHANGES
    assert per_shard == [share] * (shards - 1) + [share + 1], per_shard   # +1: the short one


@pytest.mark.parametrize("shards", [1, 2])
def test_live_stream_gets_the_rows_indexed(store: Path, tmp_path: Path, shards: int) -> None:
    """Rows cross from the shards as bare values: the live stream still gets them as the
    IndexRows the index holds, numbered, in order."""
    live = RecordingBroadcaster()
    rows, _stats = indexed(store, tmp_path / "index.sqlite", shards, broadcaster=live)
    assert len(rows) > 300
    assert live.published == rows


def test_shards_shed_an_evicted_segment_as_one_dissection_does(store: Path, tmp_path: Path) -> None:
    """The index cursor points into a segment evicted since: every shard skips to the next
    one, counts what it lost, and the index is still the single dissection's."""
    shedding = tmp_path / "store"
    shutil.copytree(store, shedding)
    first = list_segments(shedding)[0]
    first.path.unlink()
    single, single_stats = indexed(shedding, tmp_path / "single.sqlite", 1, cursor=(first.id, 24))
    sharded, sharded_stats = indexed(shedding, tmp_path / "sharded.sqlite", 2, cursor=(first.id, 24))
    assert len(single) > 100
    assert sharded == single
    for stats in (single_stats, sharded_stats):
        assert (stats.shed_segments, stats.discontinuities) == (1, 1)
    assert [s.shard for s in sharded_stats.shards] == [0, 1]
    assert all(s.restarts == 0 for s in sharded_stats.shards)


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("50000 100000\n", 1), ("100000 100000\n", 1), ("max 100000\n", None), ("garbage\n", None)])
def test_default_shards_follow_the_cpu_quota(tmp_path: Path, cpu_max: str, expected: int | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    cpus = len(os.sched_getaffinity(0))
    assert default_dissect_shards(path) == (expected or cpus)
    assert default_dissect_shards(tmp_path / "missing") == cpus


def icmp_unreachable(datagram_frame: bytes, v6: bool) -> bytes:
    """An ICMP port unreachable from the datagram's destination back to its source, quoting
    it (IP header on), as a kernel sends one."""
    quoted = datagram_frame[14:]
    if v6:
        src, dst = quoted[24:40], quoted[8:24]
        icmp = bytes([1, 4, 0, 0, 0, 0, 0, 0]) + quoted
        header = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 64, src, dst)
        return datagram_frame[:12] + b"\x86\xdd" + header + icmp
    src, dst = quoted[16:20], quoted[12:16]
    icmp = bytes([3, 3, 0, 0, 0, 0, 0, 0]) + quoted
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, src, dst)
    return datagram_frame[:12] + b"\x08\x00" + header + icmp


@pytest.mark.parametrize("shards", [2, 3, 5])
def test_a_flow_has_one_shard_in_both_directions_and_flows_are_balanced(shards: int) -> None:
    table = FlowTable(shards)

    def owner(frame: bytes) -> int:
        return table.owner(1, frame, 0, len(frame))
    tcp_owners, udp_owners = [], []
    for number in range(40):
        port = 40000 + 2 * number
        for client, server in (("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")):
            v6 = ":" in client
            forward = tcp_packet(client, server, port, 5432, flags="S")
            backward = tcp_packet(server, client, 5432, port, flags="SA")
            tcp_owners.append(owner(forward))
            assert owner(backward) == tcp_owners[-1]
            query = udp_packet(client, server, port, 53, b"q")
            answer = udp_packet(server, client, 53, port, b"a")
            refused = icmp_unreachable(query, v6)
            assert decode(1, refused) is not None and decode(1, refused).proto == UNREACHABLE
            udp_owners.append(owner(query))
            assert owner(answer) == owner(refused) == udp_owners[-1]
    # 80 live flows of each protocol: every shard has its share, to one
    for owners in (tcp_owners, udp_owners):
        counts = [owners.count(shard) for shard in range(shards)]
        assert max(counts) - min(counts) <= 1, counts
    assert owner(b"\xff" * 12 + b"\x08\x06" + b"\0" * 28) == 0   # ARP: shard 0


def test_a_shard_dying_again_soon_after_a_restart_waits_before_the_next(
        store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sharded, "RESTART_BACKOFF_S", 1.0)
    index = EntryIndex(tmp_path / "index.sqlite")
    pipeline = ShardedPipeline(store, index, "n1", Broadcaster(), lambda: False, shards=2)
    pipeline.start()
    try:
        def shard_one() -> ShardState:
            return pipeline.stats.shards[1] if pipeline.stats.shards else ShardState(shard=1)

        wait_for(lambda: pipeline.stats.caught_up, "the shards to catch up")
        first = shard_one().pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: shard_one().restarts == 1 and shard_one().running, "a restart at once")
        assert "killed by SIGKILL; started again after packet" in shard_one().last_failure
        second = shard_one().pid
        assert second != first
        os.kill(second, signal.SIGKILL)   # within CRASH_LOOP_S of its start
        wait_for(lambda: shard_one().restarts == 2, "the second failure")
        assert shard_one().running is False
        assert "started again in 1s" in shard_one().last_failure
        assert pipeline.stats.shards[0].running   # the other shard goes on
        wait_for(lambda: shard_one().running, "the restart after the wait")
        assert shard_one().pid not in (first, second)
        entries = index.count()
        assert entries > 300 and pipeline.stats.errors == 0
    finally:
        pipeline.stop()
        index.close()


def test_a_shard_killed_mid_store_resyncs_every_shard_without_doubling_entries(
        store: Path, tmp_path: Path) -> None:
    """The restarted shard's flow table starts empty, so every shard starts again after the
    last packet indexed: no flow gets two owners (no entry twice) and the store is indexed to
    its end."""
    single, _stats = indexed(store, tmp_path / "single.sqlite", 1)
    index = EntryIndex(tmp_path / "index.sqlite")
    pipeline = ShardedPipeline(store, index, "n1", Broadcaster(), lambda: True, shards=2)
    pipeline._read_batch = 64   # slow enough to be killed half way ...
    # ... and the index's count a measure of the way: releases put while the writer is busy
    # would otherwise join one write of up to MAX_WRITE_ROWS, all of this store at once
    pipeline._writes._max_write_rows = 64
    pipeline.start()
    try:
        wait_for(lambda: bool(pipeline.stats.shards) and index.count() > 50, "entries indexed")
        before = [state.pid for state in pipeline.stats.shards]
        assert not pipeline.ended
        os.kill(before[1], signal.SIGKILL)
        wait_for(lambda: pipeline.ended, "the store indexed to its end")
        assert pipeline.stats.resyncs == 1
        states = pipeline.stats.shards
        assert [state.restarts for state in states] == [1 if i == 1 else 0 for i in range(2)]
        assert all(state.running and state.pid not in before for state in states)
        rows = index.newer_than(0)
    finally:
        pipeline.stop()
        index.close()
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
    def places(rows: list[IndexRow]) -> list[tuple[object, ...]]:
        return [(row.protocol, row.first_seg, row.first_off, row.last_seg, row.last_off,
                 row.client_port, row.client_offset) for row in rows]
    assert len(set(places(single))) == len(single)
    assert len(set(places(rows))) == len(rows)   # no exchange indexed twice
    assert len(rows) > len(single) * 0.9     # only the exchanges in progress were lost


def _http_halves() -> tuple[list[tuple[int, bytes, int]], list[tuple[int, bytes, int]]]:
    """An HTTP exchange recorded long ago: the handshake and request, then the response."""
    client, server = ("10.9.0.1", 41000), ("10.9.0.2", 80)
    t0 = 1_600_000_000 * 1_000_000_000
    request = b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def c2s(seq: int, ack: int, flags: str, payload: bytes = b"") -> bytes:
        return tcp_packet(client[0], server[0], client[1], server[1], seq=seq, ack=ack,
                          flags=flags, payload=payload)

    def s2c(seq: int, ack: int, flags: str, payload: bytes = b"") -> bytes:
        return tcp_packet(server[0], client[0], server[1], client[1], seq=seq, ack=ack,
                          flags=flags, payload=payload)
    first = [c2s(0, 0, "S"), s2c(0, 1, "SA"), c2s(1, 1, "A"), c2s(1, 1, "PA", request)]
    second = [s2c(1, 1 + len(request), "PA", response)]
    return ([(t0 + n * 1000, frame, len(frame)) for n, frame in enumerate(first)],
            [(t0 + 10_000_000 + n * 1000, frame, len(frame)) for n, frame in enumerate(second)])


@pytest.mark.parametrize("shards", [1, 2])
def test_a_replay_waiting_for_the_rest_of_its_file_does_not_expire_flows_by_the_wall_clock(
        tmp_path: Path, shards: int) -> None:
    # Replaying a file, dissection may catch up with the capture before the file is read to
    # its end: its packets' times are long past, so expiring idle flows by the wall clock then
    # closed every open flow mid-exchange (and made a sharded index's order depend on timing).
    store = tmp_path / "store"
    writer = SegmentWriter(store, LIMIT)
    first, second = _http_halves()
    writer.append(1, first)
    finished = False
    index = EntryIndex(tmp_path / "index.sqlite")
    pipeline: Pipeline | ShardedPipeline
    if shards == 1:
        pipeline = Pipeline(store, index, "n1", Broadcaster(), lambda: finished, replay=True)
    else:
        pipeline = ShardedPipeline(store, index, "n1", Broadcaster(), lambda: finished,
                                   shards=shards, replay=True)
    pipeline.start()
    try:
        wait_for(lambda: pipeline.stats.caught_up, "dissection to catch up with the capture")
        time.sleep(2.5)   # idle past EXPIRE_EVERY_NS, twice
        writer.append(1, second)
        writer.close()
        finished = True
        wait_for(lambda: pipeline.ended, "the replay to end")
        rows = index.newer_than(0)
        assert len(rows) == 1, [row.entry_json for row in rows]
        entry = json.loads(rows[0].entry_json)
        assert (entry["request"]["path"], entry["status"], entry["complete"]) == ("/slow", 200, True)
    finally:
        pipeline.stop()
        index.close()


def test_packed_keys_sort_as_the_keys_and_a_watermark_as_their_prefix() -> None:
    keys = [(0, 0, 1, 0, 0, 0, 0, 1), (0, 24, 1, 0, 0, 0, 24, 2), (0, 24, 2, 0, 0, 0, 24, 3),
            (0, 24, 3, 1_764_150_000_000_000_000, 1, 0, 24, 4), (1, 0, 1, 0, 0, 0, 24, 5),
            (1, 2 ** 40, 5, 0, 0, 1, 2 ** 33, 2 ** 62)]
    assert sorted(keys, key=packed_key) == sorted(keys)
    for mark in [(0, 24, 1, 0), (0, 24, 3, 1_764_150_000_000_000_000), (1, 0, 1, 0), (2, 0, 0, 0)]:
        assert [packed_key(k) < packed_watermark(mark) for k in keys] == [k < mark for k in keys]


def test_report_reader_reads_reports_whole_however_they_arrive() -> None:
    """Reports larger than the socket's buffer (read in pieces) and than the reader's first
    buffer, between small ones, as Connection.send_bytes frames them; EOFError at the end.
    Each row comes as a list holding its flow's values (the report's WireFlows) where it was
    sent their index and four Nones."""
    import multiprocessing

    ours, theirs = multiprocessing.Pipe()
    flows = [("redis", "tcp", "10.0.0.1", "10.0.0.2", 6379),
             ("http", "tcp", "10.0.0.3", "10.0.0.4", 80)]

    def report(rows: int, size: int) -> ShardReport:
        return ShardReport((1, 2, 1, 0), flows, [
            (packed_key((1, 2, 1, 0, 0, 1, 2, n)), 1.5, n % 2, b"x" * size, 1, 2, 1, 3,
             None, None, 40000 + n, None, None, 0, NO_VALUE, NO_VALUE, 7) for n in range(rows)],
            ShardStats(packets=rows))

    def resolved(sent: ShardReport) -> ShardReport:
        def row(wire: tuple) -> list:
            protocol, transport, client_ip, server_ip, server_port = flows[wire[2]]
            return [*wire[:2], protocol, *wire[3:8], transport, client_ip, wire[10],
                    server_ip, server_port, *wire[13:]]
        return ShardReport(sent.watermark, sent.flows, [row(each) for each in sent.rows],
                           sent.stats)

    sent = [report(1, 10), report(3_000, 700), report(0, 0), report(2, 5)]
    encoder = msgspec.msgpack.Encoder()

    def send() -> None:
        for each in sent:
            theirs.send_bytes(encoder.encode(each))
        theirs.close()

    sender = threading.Thread(target=send)
    sender.start()
    reader = ReportReader()
    try:
        assert [reader.read(ours) for _ in sent] == [resolved(each) for each in sent]
        with pytest.raises(EOFError):
            reader.read(ours)
    finally:
        sender.join()
        ours.close()
