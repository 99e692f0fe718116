"""One request's memory does not grow with the store: /entries reads and sends by pages, /stream
replays a Last-Event-ID by pages,
/pcap?q= reads each flow's merged packet ranges once and keeps no set of packets seen."""

from __future__ import annotations

import asyncio
import re
import tracemalloc
from types import SimpleNamespace

from factories import tcp_packet
from shark.model import Endpoint, Entry, encode
# Imported here, not within the traced replay: the worker loads it at its first /stream.
from sse_starlette import ServerSentEvent
from worker.api.app import _entries_page, _entry_lines, _events
from worker.api.export import collect_spans, span_packets
from worker.broadcast import Broadcaster
from worker.store.index import IndexRow, open_index
from worker.store.segments import SegmentTail, SegmentWriter

T0 = 1_700_000_000_000_000_000


def row(seq: int, first: tuple[int, int], last: tuple[int, int], client_port: int = 40000,
        pad: int = 0) -> IndexRow:
    entry = Entry(id=f"n:{seq}", node="n", protocol="http", ts=1.7e9 + seq,
                  src=Endpoint(ip="10.0.0.1", port=client_port),
                  dst=Endpoint(ip="10.0.0.2", port=80), summary=f"GET /{seq}" + "x" * pad)
    return IndexRow(seq=seq, ts=1.7e9 + seq, protocol="http", entry_json=encode(entry),
                    first_seg=first[0], first_off=first[1], last_seg=last[0], last_off=last[1],
                    transport="tcp", client_ip="10.0.0.1", client_port=client_port,
                    server_ip="10.0.0.2", server_port=80, client_offset=0, server_offset=0,
                    client_seq=None, server_seq=None)


def big_index(path):
    """An index of 20k rows of ~1 KB each (~22 MB), written 5000 at a time."""
    index, _ = open_index(path)
    rows = [row(seq, (1, 24), (1, 24), pad=1000) for seq in range(1, 20_001)]
    for start in range(0, len(rows), 5000):
        index.add(rows[start:start + 5000], None)
    return index


def test_stream_replay_from_zero_reads_the_index_by_pages(tmp_path):
    index = big_index(tmp_path / "index.sqlite")
    runtime = SimpleNamespace(broadcaster=Broadcaster(), index=index,
                              options=SimpleNamespace(node="n"))

    async def first_events(count: int) -> tuple[list[str], int]:
        events = _events(runtime, lambda _row: True, (None, 0))
        seen = []
        tracemalloc.start()
        try:
            async for event in events:   # a ServerSentEvent, or entry events encoded together
                assert isinstance(event, (bytes, ServerSentEvent))
                ids = [m.decode() for m in re.findall(rb"^id: (\d+)\r$", event, re.M)] \
                    if isinstance(event, bytes) else [event.id]
                seen += ids
                if len(seen) >= count:
                    break
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            await events.aclose()
        return seen, peak

    ids, peak = asyncio.run(first_events(1 + 600))   # hello, then more than one page
    assert ids[1:4] == ["1", "2", "3"] and ids[600] == "600"
    assert peak < 4_000_000, peak     # reading all 20k rows at once takes ~30 MB
    index.close()


def test_pcap_of_overlapping_entries_reads_each_packet_once_in_bounded_memory(tmp_path):
    # One connection with 40k packets and a second one interleaved; 4000 entries on the first
    # whose ranges overlap pairwise (multiplexed streams), as HTTP/2 makes them.
    store = tmp_path / "store"
    with SegmentWriter(store, 64_000_000) as writer:
        for start in range(0, 40_000, 4000):
            batch = []
            for n in range(start, start + 4000):
                client = n % 2 == 0
                batch.append((T0 + 2 * n, tcp_packet(*(("10.0.0.1", "10.0.0.2", 40000, 80) if client else
                                                        ("10.0.0.2", "10.0.0.1", 80, 40000)),
                                                      seq=n, payload=n.to_bytes(4, "big") * 8), 0))
                batch.append((T0 + 2 * n + 1, tcp_packet("10.0.0.3", "10.0.0.2", 41000, 80, seq=n), 0))
            writer.append(1, batch)
    tail = SegmentTail(store)
    refs = []
    while packets := tail.read(10_000):
        refs += [packet[0] for packet in packets if packet[2] % 2 == 0]   # the first flow's
    tail.close()
    rows = [row(seq, refs[10 * seq], refs[min(10 * seq + 19, len(refs) - 1)])
            for seq in range(4000)]
    spans = collect_spans(reversed(rows), lambda _row: True, 100_000)
    del rows, refs
    tracemalloc.start()
    try:
        timestamps = []
        count = 0
        last_ts = 0
        for _linktype, ts_ns, _data, _wirelen in span_packets(store, spans):
            assert ts_ns > last_ts          # store order, no packet twice
            last_ts = ts_ns
            count += 1
            if count % 10_000 == 0:
                timestamps.append(ts_ns)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 40_000                 # every packet of the first flow, once
    assert peak < 3_000_000, peak          # a set of 40k packets seen alone takes ~5 MB


def test_entries_are_read_and_sent_by_pages(tmp_path):
    index = big_index(tmp_path / "index.sqlite")
    even = lambda r: r.seq % 2 == 0      # noqa: E731 - a query that skips rows

    async def body(limit: int) -> tuple[list[int], int]:
        tracemalloc.start()
        try:
            first = _entries_page(index, even, 0, None, None, None, min(500, limit))
            seqs = []
            async for chunk in _entry_lines(index, even, 0, None, None, limit, first):
                seqs += [int(m) for m in re.findall(rb'"id":"n:(\d+)"', chunk)]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return seqs, peak

    seqs, peak = asyncio.run(body(100_000))
    assert seqs == list(range(20_000, 0, -2))           # every match, newest first, none twice
    assert peak < 8_000_000, peak       # about 4.6 MB; all 10k matching rows read at once: 34 MB
    seqs, _ = asyncio.run(body(1234))
    assert seqs == list(range(20_000, 20_000 - 2 * 1234, -2))
    index.close()
