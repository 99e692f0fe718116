"""Per-connection TCP facts on entries, and failed connections as entries (worker/connections.py)."""

from __future__ import annotations

import json

from factories import LINKTYPE_ETHERNET, TcpSegments, tcp_packet
from shark import kfl
from worker.connections import SYN_TIMEOUT_NS
from worker.dissection import Dissection

REQUEST = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
MS = 1_000_000


def dissect(frames: list[tuple[int, bytes]], close: bool = True) -> list[dict]:
    """The entries, made both ways rows are taken (numbered at the take, and numbered as made,
    as the in-thread pipeline does): failed connections' entries too must be the same."""
    taken = []
    for numbered in (False, True):
        dissection = Dissection("n", numbered=numbered)
        dissection.feed([((0, i), LINKTYPE_ETHERNET, ts, frame, len(frame))
                         for i, (ts, frame) in enumerate(frames)])
        if close:
            dissection.close_all()
        taken.append(dissection.take_rows())
    assert taken[0] == taken[1]
    return [json.loads(row.entry_json) for row in taken[0]]


def test_facts_of_a_connection_are_on_its_entries():
    tcp = TcpSegments(server=("10.0.0.2", 8080))
    entries = dissect([
        (0, tcp.syn()), (2 * MS, tcp.syn_ack()),
        (3 * MS, tcp.client(0, REQUEST)),
        (4 * MS, tcp.client(0, REQUEST)),                                  # retransmitted
        (5 * MS, tcp.server(0, RESPONSE)),
        (6 * MS, tcp_packet("10.0.0.1", "10.0.0.2", 40000, 8080, seq=1001 + len(REQUEST),
                            ack=5001 + len(RESPONSE), window=0)),          # zero window
        (7 * MS, tcp.client(len(REQUEST), flags="FA")),
        (8 * MS, tcp.server(len(RESPONSE), flags="FA")),
    ])
    (entry,) = entries
    assert entry["protocol"] == "http" and entry["complete"]
    # The entry is emitted when its response ends: the facts so far (no FIN yet).
    assert entry["tcp"] == {"handshake_ms": 2.0, "syns": 1, "retransmitted_bytes": len(REQUEST),
                            "zero_windows": 0, "closed_by": None, "rst": None, "failure": None}
    for query in ("tcp.handshake_ms == 2", "tcp.retransmitted_bytes > 0", "tcp.rst == null",
                  "http and tcp.failure == null"):
        assert kfl.compile(query)(entry), query


def test_facts_as_the_flow_closes_and_zero_windows():
    tcp = TcpSegments(server=("10.0.0.2", 9999))
    entries = dissect([
        (0, tcp.syn()), (1 * MS, tcp.syn_ack()),
        (2 * MS, tcp.client(0, b"\x00\x01binary")),
        (3 * MS, tcp_packet("10.0.0.2", "10.0.0.1", 9999, 40000, seq=5001, ack=1009, window=0)),
        (4 * MS, tcp.server(0, flags="FA")),
        (5 * MS, tcp.client(8, flags="FA")),
    ])
    (entry,) = entries             # the generic entry, emitted at the close
    assert entry["protocol"] == "tcp"
    assert entry["tcp"]["zero_windows"] == 1 and entry["tcp"]["closed_by"] == "server"


def test_unanswered_syns_become_a_timeout_entry_after_the_syn_timeout():
    tcp = TcpSegments(server=("10.0.0.2", 5432))
    second = 1_000_000_000
    frames = [(0, tcp.syn()), (1 * second, tcp.syn()), (3 * second - 1, tcp.syn())]
    assert dissect(frames, close=False) == []            # not yet SYN_TIMEOUT_NS after the first
    # Capture time passes (another flow's packet) beyond the timeout: reported while live.
    later = tcp_packet("10.0.0.7", "10.0.0.8", 1234, 9, flags="S")
    (entry,) = dissect(frames + [(SYN_TIMEOUT_NS + 2 * second, later)], close=False)
    assert entry["protocol"] == "tcp" and entry["dst"]["port"] == 5432
    assert entry["summary"] == "connection timed out: 10.0.0.2:5432"
    assert entry["notes"] == ["connection timed out (3 SYNs unanswered)"]
    assert entry["tcp"]["failure"] == "timeout" and entry["tcp"]["syns"] == 3
    assert entry["elapsed_ms"] is None and not entry["complete"]
    assert kfl.compile('tcp.failure == "timeout"')(entry)


def test_a_client_reset_after_completed_exchanges_is_no_failure():
    tcp = TcpSegments(server=("10.0.0.2", 8080))
    entries = dissect([
        (0, tcp.syn()), (1 * MS, tcp.syn_ack()),
        (2 * MS, tcp.client(0, REQUEST)), (3 * MS, tcp.server(0, RESPONSE)),
        (4 * MS, tcp.client(len(REQUEST), flags="FA")),
        (5 * MS, tcp.client(len(REQUEST) + 1, flags="R")),
    ])
    assert [e["protocol"] for e in entries] == ["http"]


def test_a_client_reset_mid_response_is_carried_by_the_cut_exchange():
    tcp = TcpSegments(server=("10.0.0.2", 8080))
    entries = dissect([
        (0, tcp.syn()), (1 * MS, tcp.syn_ack()),
        (2 * MS, tcp.client(0, REQUEST)),
        (3 * MS, tcp.server(0, RESPONSE[:20])),
        (4 * MS, tcp.client(len(REQUEST), flags="R")),
    ])
    (entry,) = entries
    assert entry["protocol"] == "http" and not entry["complete"]
    assert "connection reset by client mid-response" in entry["notes"]
    assert entry["tcp"]["rst"] == "client" and entry["tcp"]["failure"] == "reset"


def test_an_established_connection_silent_past_the_idle_timeout_is_abandoned():
    second = 1_000_000_000
    tcp = TcpSegments(server=("10.0.0.2", 6379))
    handshake = [(0, tcp.syn()), (1 * MS, tcp.syn_ack()), (2 * MS, tcp.client(0, flags="A"))]
    assert dissect(handshake, close=False) == []
    # another flow's packet 130 s later: past the 120 s TCP idle timeout of the silent one
    later = tcp_packet("10.0.0.7", "10.0.0.8", 1234, 9, flags="S")
    (entry,) = dissect(handshake + [(130 * second, later)], close=False)
    assert entry["protocol"] == "tcp" and entry["summary"] == "connection abandoned: 10.0.0.2:6379"
    assert entry["notes"] == ["connection abandoned (established, then nothing from either side for 130 s: half-open)"]
    assert entry["tcp"]["failure"] == "abandoned" and entry["tcp"]["handshake_ms"] == 1.0
    assert not entry["complete"] and entry["elapsed_ms"] is None
    assert kfl.compile('tcp.failure == "abandoned"')(entry)
    # a silent connection the capture ended on is not called abandoned: it may have gone on
    assert dissect(handshake) == []
    # nor is one that carried bytes and then went quiet: its exchange says what it lacks
    talked = handshake + [(3 * MS, tcp.client(0, REQUEST)), (130 * second, later)]
    (http,) = dissect(talked, close=False)
    assert http["protocol"] == "http" and http["tcp"]["failure"] is None and not http["complete"]
