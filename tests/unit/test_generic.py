"""The generic fallback: one tcp/udp entry per flow no dissector claims."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from factories import LINKTYPE_ETHERNET, tcp_conversation, udp_packet
from worker.dissection import Dissection
from worker.dissectors import fallback, registry
from worker.dissectors.base import Direction, Exchange, FlowInfo
from worker.dissectors.generic import GenericDissector, format_bytes
from worker.dissectors.select import DETECT_LIMIT, open_session

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 9999)
BINARY = b"\xde\xad\xbe\xef" + bytes(range(256))


def run(flow: FlowInfo, calls: list[tuple]) -> list[Exchange]:
    out: list[Exchange] = []
    session = GenericDissector().session(flow, out.append)
    for n, call in enumerate(calls, 1):
        if call[0] == "gap":
            session.on_gap(call[1], call[2], call[3], 1000 * n)
        else:
            session.on_data(call[0], call[1], call[2], 1000 * n, (3, n))
    session.on_close(10**9)
    return out


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 999, 1000, 1234, 9999, 34_000, 999_499, 999_500,
                                      12_345_678, 3 * 10**12)] == [
        "0 B", "999 B", "1.0 KB", "1.2 KB", "10 KB", "34 KB", "999 KB", "1.0 MB", "12 MB",
        "3.0 TB"]


def test_tcp_flow_counts_and_summary():
    (ex,) = run(FLOW, [(C2S, BINARY[:200], 0), (C2S, BINARY[200:], 200), (S2C, b"x" * 34_000, 0)])
    assert ex.protocol == "tcp"
    assert ex.summary == "tcp 10.0.0.1:40000 → 10.0.0.2:9999 260 B / 34 KB"
    assert ex.request == {"bytes": 260, "segments": 2, "first_bytes_hex": BINARY[:32].hex()}
    assert ex.response == {"bytes": 34_000, "segments": 1, "first_bytes_hex": (b"x" * 32).hex()}
    assert (ex.request_size, ex.response_size) == (260, 34_000)
    assert (ex.start_ns, ex.end_ns) == (1000, 3000)
    assert (ex.first_ref, ex.last_ref) == ((3, 1), (3, 3))
    assert (ex.client_offset, ex.server_offset) == (0, 0)
    assert ex.complete and ex.notes == [] and ex.status is None


def test_first_bytes_collect_across_small_chunks():
    calls = [(C2S, BINARY[i:i + 5], i) for i in range(0, 60, 5)]
    (ex,) = run(FLOW, calls)
    assert ex.request["first_bytes_hex"] == BINARY[:32].hex() and ex.request["segments"] == 12
    assert ex.response == {"bytes": 0, "segments": 0, "first_bytes_hex": None}
    assert ex.server_offset is None


def test_gaps_make_it_incomplete_with_a_note():
    (ex,) = run(FLOW, [(C2S, b"abc", 0), ("gap", S2C, 0, 1460), (S2C, b"tail", 1460)])
    assert not ex.complete
    assert ex.notes == ["gap: 1460 bytes not captured (client 0, server 1460)"]
    assert ex.server_offset == 1460 and ex.response["bytes"] == 4


def test_udp_counts_datagrams_and_ipv6_is_bracketed():
    flow = FlowInfo("udp", b"\xfd" + bytes(14) + b"\x01", 5000, b"\xfd" + bytes(14) + b"\x02", 7)
    (ex,) = run(flow, [(C2S, b"ping", 0), (S2C, b"pong!", 0), (C2S, b"ping", 4)])
    assert ex.protocol == "udp"
    assert ex.summary == "udp [fd00::1]:5000 → [fd00::2]:7 8 B / 5 B"
    assert ex.request["datagrams"] == 2 and ex.response["datagrams"] == 1


def test_a_flow_without_payload_gives_no_entry():
    assert run(FLOW, []) == []


def test_close_twice_emits_once():
    out: list[Exchange] = []
    session = GenericDissector().session(FLOW, out.append)
    session.on_data(C2S, b"x", 0, 1, (0, 1))
    session.on_close(2)
    session.on_close(3)
    assert len(out) == 1


def test_the_selector_hands_unclaimed_flows_to_the_fallback():
    out: list[Exchange] = []
    selector = open_session(FLOW, out.append, registry(), fallback=fallback())
    selector.on_data(C2S, BINARY, 0, 1, (0, 1))
    selector.on_data(S2C, b"\xca\xfe" * 10, 0, 2, (0, 2))
    selector.on_data(C2S, b"more", len(BINARY), 3, (0, 3))
    selector.on_close(4)
    (ex,) = out
    assert ex.protocol == "tcp" and ex.request["bytes"] == len(BINARY) + 4


def test_a_big_first_chunk_reaches_the_fallback_whole():
    out: list[Exchange] = []
    selector = open_session(FLOW, out.append, registry(), fallback=fallback())
    selector.on_data(C2S, BINARY, 0, 1, (0, 1))
    selector.on_data(S2C, b"\xca\xfe" * DETECT_LIMIT, 0, 2, (0, 2))
    selector.on_close(3)
    (ex,) = out
    assert ex.complete and ex.response["bytes"] == 2 * DETECT_LIMIT


def _dissect(packets) -> list:
    dissection = Dissection("t")
    dissection.feed(((0, n), LINKTYPE_ETHERNET, ts, frame, wirelen)
                    for n, (ts, frame, wirelen) in enumerate(packets))
    dissection.close_all()
    return [row for row in dissection.take_rows()]


def test_dissection_emits_tcp_and_udp_entries_for_unknown_traffic():
    tcp = tcp_conversation([BINARY], [b"\xca\xfe" * 700], server=("10.0.0.2", 9999))
    udp = [(2_000_000_000_000_000_000 + n, udp_packet(sport=5000, dport=7777,
                                                      payload=b"\xff" + bytes(n)), 0)
           for n in range(3)]
    rows = _dissect(tcp + [(ts, frame, len(frame)) for ts, frame, _ in udp])
    protocols = sorted(row.protocol for row in rows)
    assert protocols == ["tcp", "udp"]
    tcp_row = next(r for r in rows if r.protocol == "tcp")
    assert tcp_row.client_port == 40000 and tcp_row.server_port == 9999
    assert b'"summary":"tcp 10.0.0.1:40000 \xe2\x86\x92 10.0.0.2:9999 260 B / 1.4 KB"' in \
        tcp_row.entry_json


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=80)), max_size=12))
def test_counts_do_not_depend_on_chunking(chunks):
    offsets = [0, 0]
    calls, joined = [], [b"", b""]
    for to_server, data in chunks:
        d = C2S if to_server else S2C
        calls.append((d, data, offsets[d]))
        offsets[d] += len(data)
        joined[d] += data
    merged = [(d, joined[d], 0) for d in (C2S, S2C) if joined[d]]
    a, b = run(FLOW, calls), run(FLOW, merged)
    assert len(a) == len(b) <= 1
    if a:
        assert (a[0].request_size, a[0].response_size) == (b[0].request_size, b[0].response_size)
        assert a[0].request["first_bytes_hex"] == b[0].request["first_bytes_hex"]
        assert a[0].summary == b[0].summary
