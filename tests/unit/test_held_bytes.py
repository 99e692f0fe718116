"""Session.held_bytes: what a session holds of its flow, for a worker-wide memory budget."""

from __future__ import annotations

import struct

from hpack import Encoder

from worker.dissectors import registry
from worker.dissectors.base import Direction, FlowInfo
from worker.dissectors.http2 import Http2Dissector, PREFACE
from worker.dissectors.postgres import PostgresDissector
from worker.dissectors.select import open_session

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 5432)
HEAD = b"GET /a HTTP/1.1\r\nHost: shop\r\n"


def test_a_partial_message_is_held_until_it_is_whole():
    session = PostgresDissector().session(FLOW, lambda e: None)
    query = b"Q" + struct.pack(">I", 4 + 9) + b"SELECT 1\x00"
    session.on_data(C2S, query[:7], 0, 1, (0, 0))
    assert session.held_bytes() == 7
    session.on_data(C2S, query[7:], 7, 2, (0, 1))
    assert session.held_bytes() == 0


def test_a_skipped_body_holds_only_its_head():
    session = PostgresDissector().session(FLOW, lambda e: None)
    row = b"D" + struct.pack(">I", 4 + 100_000) + bytes(30_000)   # a DataRow, kept: 0 bytes
    session.on_data(S2C, row, 0, 1, (0, 0))
    assert session.held_bytes() == 0


def test_bodies_kept_for_the_detail_view_count_until_the_exchange_is_emitted():
    emitted = []
    http = open_session(FLOW, emitted.append, registry(), body_limit=1 << 20)
    request = b"POST /a HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000\r\n\r\n" + bytes(1000)
    http.on_data(C2S, request, 0, 1, (0, 0))
    head = len("/a") + len("host") + len("shop") + len("content-length") + len("1000")
    assert http.held_bytes() == 1000 + head   # the request body and head, awaiting the response
    http.on_data(S2C, b"HTTP/1.1 204 No Content\r\n\r\n", 0, 2, (0, 1))
    assert emitted and http.held_bytes() == 0


def test_undecided_bytes_are_held_by_the_selector():
    flow = FlowInfo("tcp", FLOW.client_ip, 40000, FLOW.server_ip, 9999)
    selector = open_session(flow, lambda e: None, registry())
    selector.on_data(C2S, HEAD, 0, 1, (0, 0))    # no blank line yet: HTTP/1 says MORE
    assert selector.session is None
    # kept twice: the calls to replay to the winner, and the detection window
    assert selector.held_bytes() == 2 * len(HEAD)


def test_hpack_tables_count():
    session = Http2Dissector().session(FLOW, lambda e: None)
    block = Encoder().encode([(":method", "GET"), (":path", "/a"), (":scheme", "http"),
                              (":authority", "shop"), ("x-token", "t" * 100)])
    headers = len(block).to_bytes(3, "big") + bytes([1, 5]) + (1).to_bytes(4, "big") + block
    session.on_data(C2S, PREFACE + headers, 0, 1, (0, 0))
    # the decoder's dynamic table: every literal with incremental indexing (RFC 7541 4.1)
    assert session.held_bytes() >= 32 + len("x-token") + 100
    session.on_close(2)


def test_every_session_holds_nothing_after_its_flow_closed():
    for dissector in registry():
        for transport in sorted(dissector.transports):
            flow = FlowInfo(transport, FLOW.client_ip, 40000, FLOW.server_ip, 5432)
            session = dissector.session(flow, lambda e: None)
            for data in (HEAD, b"\x00" * 3, bytes(range(256)) * 4):
                session.on_data(C2S, data, 0, 1, (0, 0))
                session.on_data(S2C, data, 0, 1, (0, 0))
            session.on_close(2)
            assert session.held_bytes() == 0, (dissector.name, transport)


def test_heads_of_requests_awaiting_responses_count():
    http = open_session(FLOW, lambda e: None, registry())
    pipelined = b"".join(b"GET /p/%d HTTP/1.1\r\nHost: shop\r\nX-Pad: %s\r\n\r\n" % (n, b"a" * 1000)
                         for n in range(10))
    http.on_data(C2S, pipelined, 0, 1, (0, 0))
    # ten parsed heads, each its target and its fields' names and values
    assert http.held_bytes() == 10 * (len("/p/0") + len("host") + len("shop") + len("x-pad") + 1000)
    http.on_close(2)
    assert http.held_bytes() == 0


def test_decoded_headers_of_an_open_http2_stream_count():
    session = Http2Dissector().session(FLOW, lambda e: None)
    block = Encoder().encode([(":method", "GET"), (":path", "/a"), (":scheme", "http"),
                              (":authority", "shop"), ("x-pad", "p" * 3000)], huffman=False)
    headers = len(block).to_bytes(3, "big") + bytes([1, 5]) + (1).to_bytes(4, "big") + block
    session.on_data(C2S, PREFACE + headers, 0, 1, (0, 0))
    table = 32 + len("x-pad") + 3000 + 32 + len(":authority") + len("shop")   # HPACK entries
    assert session.held_bytes() >= table + len("x-pad") + 3000
    session.on_close(2)
    assert session.held_bytes() == 0
