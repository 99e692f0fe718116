"""The worker-wide memory budget of dissection: over it, the sessions holding the most are cut.

Real packets through a real Dissection (assembler, selector, HTTP/1 and HTTP/2 sessions): each
flow holds a large unfinished HTTP/1 head or HTTP/2 header block, what a session keeps while
it waits for the rest.
"""

from __future__ import annotations

import json

import pytest
from hpack import Encoder

from factories import LINKTYPE_ETHERNET, TcpSegments, tcp_conversation
from worker.dissection import Dissection, MemoryBudget
from worker.dissectors.http2 import PREFACE

START = 1_700_000_000_000_000_000
NOTE = "cut: memory budget: "


def h1_head(n: int, pad: int) -> bytes:
    """A request head still missing its blank line: the session holds all of it."""
    return b"GET /big/%d HTTP/1.1\r\nHost: shop\r\nX-Pad: " % n + b"a" * pad


def h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_open_block(n: int, pad: int) -> bytes:
    """The preface, SETTINGS and a HEADERS frame without END_HEADERS: a header block the
    session keeps until its CONTINUATION comes."""
    block = Encoder().encode([(":method", "GET"), (":path", f"/h2/{n}"), (":scheme", "http"),
                              (":authority", "shop"), ("x-pad", "b" * pad)])
    return PREFACE + h2_frame(4, 0, 0, b"") + h2_frame(1, 0, 1, block)


def request(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: shop\r\n\r\n" % path.encode()


RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Feeder:
    """Feeds frames to a Dissection as the pipeline does, batch by batch, with refs in order."""

    def __init__(self, budget: int | None) -> None:
        self.dissection = Dissection("n", memory=None if budget is None else MemoryBudget(budget))
        self.refs = 0
        self.entries: list[dict] = []

    def feed(self, packets: list[tuple[int, bytes, int]]) -> None:
        batch = []
        for ts, frame, wirelen in packets:
            batch.append(((0, self.refs), LINKTYPE_ETHERNET, ts, frame, wirelen))
            self.refs += 1
        self.dissection.feed(batch)
        self.entries += [json.loads(row.entry_json) for row in self.dissection.take_rows()]

    def close(self) -> None:
        self.dissection.close_all()
        self.entries += [json.loads(row.entry_json) for row in self.dissection.take_rows()]

    @property
    def memory(self) -> MemoryBudget:
        assert self.dissection.memory is not None
        return self.dissection.memory


def open_flow(port: int, data: bytes, server_port: int = 80, at: int = 0,
              mss: int = 1400) -> list[tuple[int, bytes, int]]:
    return tcp_conversation([data], [], client=("10.0.0.1", port), server=("10.0.0.2", server_port),
                            close=None, start_ns=START + at, mss=mss)


def noted(entries: list[dict]) -> list[dict]:
    return [e for e in entries if any(note.startswith(NOTE) for note in e["notes"])]


def held_of(entry: dict) -> int:
    note = next(note for note in entry["notes"] if note.startswith(NOTE))
    return int(note.split(" held ")[1].split(" bytes")[0])


def test_over_the_budget_the_largest_sessions_are_cut_and_their_entries_say_so():
    feeder = Feeder(200_000)
    packets = []
    for n in range(10):   # each in one segment: 75 packets, one check (after the batch)
        packets += open_flow(41000 + n, h1_head(n, 5000 + 4000 * n), at=n * 1000, mss=60_000)
    for n in range(5):
        packets += open_flow(42000 + n, h2_open_block(n, 20000 + 4000 * n), 8080, at=n * 1000 + 500,
                             mss=60_000)
    packets.sort(key=lambda p: p[0])
    feeder.feed(packets)
    assert feeder.memory.checks == 1
    memory = feeder.memory
    assert memory.peak > 200_000 and memory.sessions == 15
    assert memory.held <= memory.low_water
    cut = noted(feeder.entries)
    assert len(cut) == memory.cut_sessions > 0
    assert {e["protocol"] for e in cut} == {"http", "http2"}
    assert all(not e["complete"] for e in cut)
    assert sum(held_of(e) for e in cut) == memory.cut_bytes
    assert memory.peak - memory.cut_bytes == memory.held
    # largest first: whatever was cut held more than whatever was left
    feeder.close()
    kept = [e for e in feeder.entries if e not in cut]
    smallest_cut = min(held_of(e) for e in cut)
    sizes = {f"/big/{n}": 5000 + 4000 * n for n in range(10)}
    cut_paths = {e["request"].get("path") for e in cut}
    for entry in kept:
        path = entry["request"].get("path")
        if path in sizes:
            assert path not in cut_paths and sizes[path] < smallest_cut
    assert feeder.dissection.cut == {"memory budget": len(cut)}


def test_the_total_stays_under_the_budget_as_flows_come_in():
    budget = 300_000
    feeder = Feeder(budget)
    biggest_batch = 0
    for n in range(60):
        packets = open_flow(41000 + n, h1_head(n, 20_000 + 300 * n), at=n * 1_000_000)
        biggest_batch = max(biggest_batch, sum(len(frame) for _, frame, _ in packets))
        feeder.feed(packets)
        assert feeder.memory.held <= budget
    memory = feeder.memory
    # between two checks it grows by at most what a batch delivers (the selector keeps
    # undecided bytes twice)
    assert budget < memory.peak <= budget + 2 * biggest_batch
    # a cut session emits what it had: an HTTP/1 head, or the bytes of the rest of it that
    # detection held when it was cut again (a generic entry)
    cut = noted(feeder.entries)
    assert memory.cut_sessions >= len(cut) >= 60 - budget // 20_000
    assert feeder.dissection.cut == {"memory budget": len(cut)}
    # later traffic on another flow is dissected as ever
    feeder.feed(tcp_conversation([request("/after")], [RESPONSE], client=("10.0.0.3", 50000),
                                 start_ns=START + 10**9))
    after = [e for e in feeder.entries if e["request"].get("path") == "/after"]
    assert len(after) == 1 and after[0]["complete"] and after[0]["status"] == 200
    assert after[0]["notes"] == []


def test_within_one_large_batch_it_is_checked_every_256_packets():
    budget = 300_000
    feeder = Feeder(budget)
    packets = []
    for n in range(40):
        packets += open_flow(41000 + n, h1_head(n, 30_000), at=n * 1000)
    packets.sort(key=lambda p: p[0])
    feeder.feed(packets)   # over 1,000 packets in one call
    memory = feeder.memory
    most = max(sum(len(frame) for _, frame, _ in packets[i:i + 256]) for i in range(len(packets)))
    assert len(packets) > 4 * 256 and memory.checks >= len(packets) // 256 // 2
    assert budget < memory.peak <= budget + 2 * most
    assert memory.held <= budget and memory.cut_sessions > 0


def test_a_cut_flow_is_read_on_from_its_next_message():
    feeder = Feeder(40_000)
    conn = TcpSegments(client=("10.0.0.1", 40000), server=("10.0.0.2", 80))
    head = h1_head(1, 50_000)   # alone over the budget
    ts = iter(range(START, START + 10**9, 1000))
    feeder.feed([(next(ts), frame, len(frame)) for frame in
                 (conn.syn(), conn.syn_ack(), conn.client(0, head))])
    assert feeder.memory.cut_sessions == 1 and feeder.memory.held == 0
    [cut] = noted(feeder.entries)
    assert cut["request"]["path"] == "/big/1" and not cut["complete"]
    rest = b"\r\n\r\n"
    second = request("/next")
    frames = [conn.client(len(head), rest), conn.server(0, RESPONSE),
              conn.client(len(head) + len(rest), second), conn.server(len(RESPONSE), RESPONSE)]
    feeder.feed([(next(ts), frame, len(frame)) for frame in frames])
    feeder.close()
    [after] = [e for e in feeder.entries if e["request"].get("path") == "/next"]
    assert after["complete"] and after["status"] == 200 and not noted([after])
    # the flow went on, not a new one: its roles and its handshake are still known
    assert (after["src"]["port"], after["dst"]["port"]) == (40000, 80)
    assert after["tcp"]["handshake_ms"] is not None
    # the end of the cut head and its response came as after a gap
    assert [e["summary"] for e in feeder.entries] == \
        ["GET /big/1", "200 OK (request not captured)", "GET /next"]
    assert feeder.memory.cut_sessions == 1


def test_without_a_budget_nothing_is_cut():
    feeder = Feeder(None)
    for n in range(20):
        feeder.feed(open_flow(41000 + n, h1_head(n, 30_000), at=n * 1000))
    feeder.close()
    assert len(feeder.entries) == 20 and not noted(feeder.entries)
    assert feeder.dissection.cut == {}


def test_a_budget_is_at_least_one_byte():
    with pytest.raises(ValueError, match="memory budget 0"):
        MemoryBudget(0)
