"""HTTP/2 and gRPC dissector: frames, HPACK per direction, stream pairing, losses, mid-connection
starts and gRPC messages, driven by session calls. Traffic comes from the h2 library's client
and server state machines (real frames and HPACK) or from frames built by hand."""

from __future__ import annotations


import h2.config
import h2.connection
import h2.events
import pytest
from hpack import Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import sessions
from worker.dissectors.base import Detect, Direction, Exchange, FlowInfo
from worker.dissectors.http1 import HttpSession
from worker.dissectors.http2 import PREFACE, Http2Dissector, Http2Session, detect
from worker.dissectors.protobuf import decode_message
from worker.dissectors.upgrades import upgrade_session

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\xd5\x00\x01", 40000, b"\x0a\xd5\x00\x02", 50051)
Chunks = list[tuple[Direction, bytes]]


# -- traffic makers ----------------------------------------------------------------------

class H2Pair:
    """An h2 client and server talking through memory; every write is recorded as a chunk."""

    def __init__(self) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, validate_inbound_headers=False))
        self.chunks: Chunks = []
        self.client.initiate_connection()
        self.flush()
        self.server.initiate_connection()
        self.flush()

    def flush(self) -> None:
        for conn, direction, peer in ((self.client, C2S, self.server),
                                      (self.server, S2C, self.client)):
            data = conn.data_to_send()
            if data:
                self.chunks.append((direction, data))
                peer.receive_data(data)

    def request(self, sid: int, method: str = "GET", path: str = "/", body: bytes = b"",
                extra: list[tuple[str, str]] | None = None) -> None:
        headers = [(":method", method), (":path", path), (":authority", "shop"),
                   (":scheme", "http"), ("user-agent", "t/1"), *(extra or [])]
        self.client.send_headers(sid, headers, end_stream=not body)
        if body:
            self.client.send_data(sid, body, end_stream=True)
        self.flush()

    def respond(self, sid: int, status: int = 200, body: bytes = b"",
                extra: list[tuple[str, str]] | None = None,
                trailers: list[tuple[str, str]] | None = None) -> None:
        self.server.send_headers(sid, [(":status", str(status)), *(extra or [])],
                                 end_stream=not body and not trailers)
        if body:
            self.server.send_data(sid, body, end_stream=not trailers)
        if trailers:
            self.server.send_headers(sid, trailers, end_stream=True)
        self.flush()


def frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") \
        + payload


def grpc_messages(*messages: bytes) -> bytes:
    return b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in messages)


def grpc_call(sid: int, path: str, requests: list[bytes], responses: list[bytes],
              status: int = 0, message: str = "", enc: tuple[Encoder, Encoder] | None = None,
              split_data: bool = False) -> Chunks:
    """One gRPC call as hand-made frames (HPACK from real encoders, one per direction)."""
    cenc, senc = enc or (Encoder(), Encoder())
    chunks: Chunks = [(C2S, frame(1, 4, sid, cenc.encode([
        (":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "svc:50051"),
        ("content-type", "application/grpc"), ("te", "trailers")])))]
    body = grpc_messages(*requests)
    if split_data and len(body) > 3:
        chunks.append((C2S, frame(0, 0, sid, body[:3])))
        chunks.append((C2S, frame(0, 1, sid, body[3:])))
    else:
        chunks.append((C2S, frame(0, 1, sid, body)))
    trailers = [("grpc-status", str(status))] + ([("grpc-message", message)] if message else [])
    if responses:
        chunks.append((S2C, frame(1, 4, sid, senc.encode([
            (":status", "200"), ("content-type", "application/grpc")]))))
        chunks.append((S2C, frame(0, 0, sid, grpc_messages(*responses))))
        chunks.append((S2C, frame(1, 5, sid, senc.encode(trailers))))
    else:   # trailers-only response
        chunks.append((S2C, frame(1, 5, sid, senc.encode([
            (":status", "200"), ("content-type", "application/grpc"), *trailers]))))
    return chunks


def preface() -> Chunks:
    return [(C2S, PREFACE + frame(4, 0, 0, b"")), (S2C, frame(4, 0, 0, b""))]


class Conv(sessions.Conv):
    def __init__(self, body_limit: int = 0, session: object | None = None) -> None:
        super().__init__(lambda emit: session or Http2Session(FLOW, emit, body_limit))


def run(chunks: Chunks, body_limit: int = 0) -> list[Exchange]:
    return Conv(body_limit).feed(chunks).close()


def summaries(exchanges: list[Exchange]) -> list[str]:
    return [e.summary for e in exchanges]


def comparable(exchanges: list[Exchange]) -> list[dict]:
    return [sessions.comparable(exchange) for exchange in exchanges]


# -- detection ---------------------------------------------------------------------------

def test_detect_preface_and_prefix() -> None:
    assert detect(PREFACE, b"") is Detect.MATCH
    assert detect(PREFACE[:5], b"") is Detect.MORE
    assert detect(b"GET / HTTP/1.1\r\n\r\n", b"") is Detect.NO
    assert detect(b"\x16\x03\x01\x02\x00", b"") is Detect.NO
    assert detect(b"*1\r\n$4\r\nPING\r\n", b"") is Detect.NO


def test_detect_mid_connection_frame_chain() -> None:
    pair = H2Pair()
    pair.request(1, path="/a")
    pair.respond(1, body=b"x" * 10)
    later = b"".join(d for direction, d in pair.chunks[2:] if direction == C2S)
    server = b"".join(d for direction, d in pair.chunks[2:] if direction == S2C)
    assert detect(later, b"") is Detect.MATCH
    assert detect(b"", server) is Detect.MATCH
    assert detect(later[:5], b"") is Detect.MORE          # a header not complete yet
    assert detect(b"\x00\x00\x10\x07\x00\x00\x00\x00\x01", b"") is Detect.NO  # GOAWAY on stream 1
    assert Http2Dissector().detect(PREFACE, b"") is Detect.MATCH


# -- pairing and fields ------------------------------------------------------------------

def test_get_and_post_with_h2_library() -> None:
    pair = H2Pair()
    pair.request(1, path="/api/orders?page=2&x=")
    pair.request(3, method="POST", path="/api/orders", body=b'{"n": 1}',
                 extra=[("content-type", "application/json"), ("cookie", "a=1"), ("cookie", "b=2")])
    pair.respond(3, 201, b'{"id": 9}', extra=[("content-type", "application/json")])
    pair.respond(1, 200, b"hello", extra=[("content-type", "text/plain"),
                                           ("set-cookie", "s=1"), ("set-cookie", "t=2")])
    out = run(pair.chunks)
    assert summaries(out) == ["POST /api/orders", "GET /api/orders?page=2&x="]
    post, get = out
    assert post.protocol == "http2" and post.status == 201 and post.complete
    assert post.request["method"] == "POST" and post.request["stream_id"] == 3
    assert post.request["headers"]["cookie"] == "a=1; b=2"
    assert post.request["content_type"] == "application/json"
    assert post.request["content_length"] == 8
    assert post.response["content_length"] == 9 and post.response["error"] is None
    assert get.request["query"] == {"page": ["2"], "x": [""]}
    assert get.request["authority"] == "shop" and get.request["scheme"] == "http"
    assert get.request["headers"] == {"user-agent": "t/1"}
    assert get.response["headers"]["set-cookie"] == "s=1\nt=2"
    assert get.request_body is None and get.response_body is None   # no body_limit
    assert post.request_size > 9 and post.response_size > 9 + 9
    assert not any(e.notes for e in out)


def test_offsets_refs_and_times() -> None:
    cenc, senc = Encoder(), Encoder()
    head = frame(1, 4, 1, cenc.encode([(":method", "POST"), (":path", "/a")]))
    conv = Conv()
    conv.feed(preface())                                     # calls 1, 2
    conv.feed([(C2S, head),                    # 3: request headers
               (C2S, frame(0, 1, 1, b"body")),               # 4
               (S2C, frame(1, 4, 1, senc.encode([(":status", "200")]))),   # 5
               (S2C, frame(0, 0, 1, b"abc")),                # 6
               (S2C, frame(0, 1, 1, b"")),                   # 7
               (C2S, frame(8, 0, 0, b"\x00\x00\x00\x01"))])   # 8
    (ex,) = conv.close()
    assert ex.first_ref == (7, 3) and ex.start_ns == 3000
    assert ex.last_ref == (7, 7) and ex.end_ns == 7000
    assert ex.client_offset == len(PREFACE) + 9
    assert ex.server_offset == 9
    assert ex.request_size == len(head) + 13 and ex.response_size == 10 + 12 + 9


def test_every_split_of_one_exchange_gives_the_same_result() -> None:
    pair = H2Pair()
    pair.request(1, method="POST", path="/p", body=b"0123456789",
                 extra=[("content-type", "text/plain")])
    pair.respond(1, 200, b"ok", extra=[("content-type", "text/plain")], trailers=[("x-t", "1")])
    whole = comparable(run(pair.chunks, body_limit=100))
    assert whole[0]["response"]["trailers"] == {"x-t": "1"}
    assert whole[0]["request_body"] == b"0123456789"
    for index, (direction, data) in enumerate(pair.chunks):
        for cut in range(1, len(data)):
            chunks = pair.chunks[:index] + [(direction, data[:cut]), (direction, data[cut:])] \
                + pair.chunks[index + 1:]
            assert comparable(run(chunks, body_limit=100)) == whole, (index, cut)


def frame_types(stream: bytes) -> list[int]:
    """The frame types of a client's byte stream (after the connection preface)."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    assert stream.startswith(preface)
    types, offset = [], len(preface)
    while offset + 9 <= len(stream):
        length = int.from_bytes(stream[offset:offset + 3], "big")
        types.append(stream[offset + 3])
        offset += 9 + length
    return types


def test_continuation_frames() -> None:
    pair = H2Pair()
    big = "v" * 40000     # larger than a frame: HEADERS + CONTINUATION
    pair.request(1, path="/big", extra=[("x-big", big)])
    pair.respond(1)
    assert 0x09 in frame_types(b"".join(data for d, data in pair.chunks if d == C2S)), \
        "the header block was not split into CONTINUATION frames"
    (ex,) = run(pair.chunks)
    assert ex.request["headers"]["x-big"] == big and ex.complete


def test_interleaved_streams_and_informational() -> None:
    enc_c, enc_s = Encoder(), Encoder()
    chunks = preface() + [
        (C2S, frame(1, 4, 1, enc_c.encode([(":method", "GET"), (":path", "/1")]))),
        (C2S, frame(1, 5, 3, enc_c.encode([(":method", "GET"), (":path", "/3")]))),
        (C2S, frame(0, 1, 1, b"body")),
        (S2C, frame(1, 4, 3, enc_s.encode([(":status", "100")]))),
        (S2C, frame(1, 4, 3, enc_s.encode([(":status", "204")]))),
        (S2C, frame(1, 4, 1, enc_s.encode([(":status", "200")]))),
        (S2C, frame(0, 8, 1, b"\x02ab\x00\x00")),        # padded DATA
        (S2C, frame(0, 1, 3, b"")),
        (S2C, frame(0, 1, 1, b"c")),
    ]
    out = run(chunks)
    assert [(e.summary, e.status) for e in out] == [("GET /3", 204), ("GET /1", 200)]
    assert out[1].response["content_length"] == 3 and out[1].request["content_length"] == 4


def test_rst_stream_ends_the_exchange() -> None:
    enc = Encoder()
    chunks = preface() + [
        (C2S, frame(1, 5, 1, enc.encode([(":method", "GET"), (":path", "/slow")]))),
        (C2S, frame(3, 0, 1, (8).to_bytes(4, "big"))),          # CANCEL
    ]
    (ex,) = run(chunks)
    assert ex.summary == "GET /slow" and ex.response is None
    assert "stream reset by client: CANCEL" in ex.notes and not ex.complete
    senc = Encoder()
    chunks = preface() + [
        (C2S, frame(1, 5, 1, enc.encode([(":method", "GET"), (":path", "/x")]))),
        (S2C, frame(1, 4, 1, senc.encode([(":status", "200")]))),
        (S2C, frame(3, 0, 1, (2).to_bytes(4, "big"))),
    ]
    (ex,) = run(chunks)
    assert ex.response["error"] == "stream reset by server: INTERNAL_ERROR"


def test_server_push() -> None:
    pair = H2Pair()
    pair.request(1, path="/index")
    pair.server.push_stream(1, 2, [(":method", "GET"), (":path", "/style.css"),
                                   (":authority", "shop"), (":scheme", "http")])
    pair.server.send_headers(2, [(":status", "200")])
    pair.server.send_data(2, b"css", end_stream=True)
    pair.flush()
    pair.respond(1, 200, b"html")
    out = run(pair.chunks)
    assert summaries(out) == ["GET /style.css", "GET /index"]
    assert any("server push" in n for n in out[0].notes)


def test_request_without_response_at_close() -> None:
    pair = H2Pair()
    pair.request(1, path="/wait")
    (ex,) = run(pair.chunks)
    assert ex.response is None and not ex.complete and "no response" in ex.notes


# -- gRPC --------------------------------------------------------------------------------

def test_grpc_unary_streaming_and_error() -> None:
    enc = (Encoder(), Encoder())
    chunks = preface() \
        + grpc_call(1, "/shop.Orders/Get", [b"\x08\x01"], [b"\x0a\x02ok"], enc=enc) \
        + grpc_call(3, "/shop.Orders/Watch", [b"\x08\x01"], [b"\x08\x01", b"\x08\x02", b""],
                    enc=enc) \
        + grpc_call(5, "/shop.Orders/Upload", [b"a" * 10, b"b" * 20], [b"\x08\x02"], enc=enc,
                    split_data=True) \
        + grpc_call(7, "/shop.Orders/Get", [b"\x08\x09"], [], status=5,
                    message="no order 9 %E2%9C%93", enc=enc)
    out = run(chunks)
    assert [e.protocol for e in out] == ["grpc"] * 4
    assert summaries(out) == ["/shop.Orders/Get", "/shop.Orders/Watch", "/shop.Orders/Upload",
                              "/shop.Orders/Get"]
    get, watch, upload, missing = out
    assert get.request["service"] == "shop.Orders" and get.request["method"] == "Get"
    assert get.status == 0 and get.response["grpc_status"] == 0 and get.response["error"] is None
    assert get.response["messages"] == 1 and get.response["message_sizes"] == [4]
    assert watch.response["messages"] == 3 and watch.response["message_sizes"] == [2, 2, 0]
    assert upload.request["messages"] == 2 and upload.request["message_sizes"] == [10, 20]
    assert missing.status == 5 and missing.response["grpc_message"] == "no order 9 \u2713"
    assert missing.response["error"] == {"code": 5, "name": "NOT_FOUND",
                                         "message": "no order 9 \u2713"}
    assert missing.response["messages"] == 0 and missing.response["status"] == 200
    assert all(e.complete and not e.notes for e in out)
    assert "body" not in get.request


def test_grpc_detail_decodes_protobuf() -> None:
    nested = b"\x0a\x05hello\x10\x96\x01\x1a\x04\x08\x01\x10\x02\x25\x00\x00\x80\x3f"
    chunks = preface() + grpc_call(1, "/a.B/C", [nested, b"\x08\x01"], [b"\x12\x03\xff\x00\x01"],
                                   split_data=True)
    (ex,) = run(chunks, body_limit=1000)
    body = ex.request["body"]
    assert body["encoding"] == "protobuf" and len(body["messages"]) == 2
    fields = body["messages"][0]["fields"]
    assert fields[0] == {"field": 1, "type": "string", "value": "hello"}
    assert fields[1] == {"field": 2, "type": "varint", "value": 150}
    assert fields[2]["type"] == "message" and fields[2]["value"][1]["value"] == 2
    assert fields[3]["type"] == "fixed32" and fields[3]["float"] == 1.0
    resp = ex.response["body"]["messages"][0]["fields"][0]
    assert resp == {"field": 2, "type": "bytes", "value": "ff0001"}
    assert ex.request_body is None
    (small,) = run(chunks, body_limit=4)
    assert small.request["body"]["truncated"] is True


def test_protobuf_decoder_guesses() -> None:
    assert decode_message(b"\x08\x96\x01") == [{"field": 1, "type": "varint", "value": 150}]
    assert decode_message(b"\x0a\x02hi") == [{"field": 1, "type": "string", "value": "hi"}]
    assert decode_message(b"\x0f") is None           # wire type 7
    assert decode_message(b"\x0a\x05ab") is None      # length beyond the end
    assert decode_message(b"") == []
    deep = b"\x08\x01"
    for _ in range(50):
        deep = b"\x0a" + bytes([len(deep)]) + deep if len(deep) < 128 else deep
    assert decode_message(deep) is not None


# -- losses, mid-connection, malformed ---------------------------------------------------

def test_mid_connection_start_marks_undecodable_headers() -> None:
    pair = H2Pair()
    for sid in (1, 3, 5):
        pair.request(sid, path=f"/item/{sid}", extra=[("x-trace", f"t{sid}")])
        pair.respond(sid, 200, b"ok", extra=[("x-server", "s")])
    # Start the capture after the first exchange: the dynamic tables are unknown.
    first_response = max(i for i, (d, data) in enumerate(pair.chunks) if b"ok" in data
                         and d == S2C and i < len(pair.chunks))
    start = next(i for i, (d, data) in enumerate(pair.chunks) if d == S2C and b"ok" in data) + 1
    out = run(pair.chunks[start:])
    assert first_response and len(out) == 2
    assert [e.request["stream_id"] for e in out] == [3, 5]
    for ex in out:
        if ex.request.get("method"):
            assert ex.request["path"].startswith("/item/")
        else:
            assert "request headers not decodable: capture started mid-connection" in ex.notes
            assert "headers not decodable" in ex.summary
        assert ex.response is not None


def test_mid_connection_inside_a_frame_resyncs() -> None:
    enc = (Encoder(), Encoder())
    chunks = preface() + grpc_call(1, "/a.B/C", [b"x" * 50], [b"y"], enc=enc) \
        + grpc_call(3, "/a.B/D", [b"z"], [b"w"], enc=(Encoder(), Encoder()))
    client = b"".join(d for direction, d in chunks if direction == C2S)
    server = b"".join(d for direction, d in chunks if direction == S2C)
    cut = len(PREFACE) + 9 + 30           # inside the preface's SETTINGS / first HEADERS
    conv = Conv()
    conv.offsets = [cut, 0]
    conv.send(C2S, client[cut:])
    conv.send(S2C, server)
    out = conv.close()
    assert any(e.request.get("path") == "/a.B/D" for e in out)


def test_gap_in_response_cuts_open_streams() -> None:
    enc_c, enc_s = Encoder(), Encoder()
    conv = Conv()
    conv.feed(preface() + [
        (C2S, frame(1, 5, 1, enc_c.encode([(":method", "GET"), (":path", "/a")]))),
        (S2C, frame(1, 4, 1, enc_s.encode([(":status", "200")]))),
        (S2C, frame(0, 0, 1, b"part")),
    ])
    conv.gap(S2C, 100)
    conv.feed([(S2C, frame(0, 1, 1, b"end")),
               (C2S, frame(1, 5, 3, enc_c.encode([(":method", "GET"), (":path", "/b")]))),
               (S2C, frame(1, 5, 3, Encoder().encode([(":status", "404")])))])
    out = conv.close()
    assert summaries(out) == ["GET /a", "GET /b"]
    assert not out[0].complete and "gap in response" in out[0].notes
    assert out[1].status == 404 and out[1].complete


def test_undecodable_after_gap_is_an_entry() -> None:
    enc_c, enc_s = Encoder(), Encoder()
    conv = Conv()
    conv.feed(preface() + [
        (C2S, frame(1, 5, 1, enc_c.encode([(":method", "GET"), (":path", "/a"), ("x", "1")]))),
    ])
    conv.gap(C2S, 50)
    conv.feed([(C2S, frame(1, 5, 3, enc_c.encode([(":method", "GET"), (":path", "/a"),
                                                    ("x", "1")]))),
               (S2C, frame(1, 5, 3, enc_s.encode([(":status", "200")])))])
    out = conv.close()
    by_sid = {e.request["stream_id"]: e for e in out}
    assert any(n.startswith("request headers partly decodable: a gap in the capture")
               for n in by_sid[3].notes)
    assert by_sid[3].request["method"] == "GET"      # a static-table field: always right
    assert by_sid[3].request["headers"] == {}         # "x: 1" referred to a lost entry
    assert by_sid[3].status == 200


def test_malformed_frames_resync() -> None:
    enc_c, enc_s = Encoder(), Encoder()
    chunks = preface() + [
        (C2S, b"\x00\x00\x05\x04\x00\x00\x00\x00\x00garbage"),   # SETTINGS of length 5
        (C2S, frame(1, 5, 1, enc_c.encode([(":method", "GET"), (":path", "/ok")]))),
        (C2S, frame(8, 0, 0, b"\x00\x00\x01\x00")),
        (S2C, frame(1, 5, 1, enc_s.encode([(":status", "200")]))),
    ]
    conv = Conv()
    out = conv.feed(chunks).close()
    assert conv.session.malformed >= 1
    assert [e.request.get("stream_id") for e in out] == [1]


def test_headers_on_stream_zero_and_bad_padding_never_raise() -> None:
    chunks = preface() + [
        (C2S, frame(1, 4, 0, b"\x82")),
        (C2S, frame(0, 8, 1, b"\x09abc")),
        (C2S, frame(1, 0x28, 1, b"\x10")),
        (C2S, frame(9, 4, 1, b"\x82")),
        (S2C, frame(5, 4, 1, b"\x00\x00")),
    ]
    run(chunks)


def test_upgrade_h2c_through_http1_hook() -> None:
    out: list[Exchange] = []
    session = HttpSession(FLOW, out.append, 0, upgrade_session)
    conv = Conv(session=session)
    conv.send(C2S, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                   b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    senc = Encoder()
    conv.send(S2C, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade"
                   b"\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 4, 1, senc.encode(
                       [(":status", "200")])) + frame(0, 1, 1, b"hi"))
    cenc = Encoder()
    conv.send(C2S, PREFACE + frame(4, 0, 0, b"") + frame(1, 5, 3, cenc.encode(
        [(":method", "GET"), (":path", "/next")])))
    conv.send(S2C, frame(1, 5, 3, senc.encode([(":status", "204")])))
    conv.close()
    assert [(e.protocol, e.status) for e in out] == [("http", 101), ("http2", 200),
                                                     ("http2", 204)]
    assert out[1].summary == "stream 1 (h2c upgrade request) -> 200" and out[1].complete
    assert out[2].summary == "GET /next"
    assert upgrade_session("h2c", FLOW) is None                     # nothing to emit to
    assert upgrade_session("nope", FLOW, out.append) is None


# -- properties --------------------------------------------------------------------------

def _golden_like() -> Chunks:
    enc = (Encoder(), Encoder())
    pair = H2Pair()
    pair.request(1, "POST", "/p", b"x" * 30)
    pair.respond(1, 200, b"y" * 10, trailers=[("t", "1")])
    return pair.chunks + grpc_call(3, "/a.B/C", [b"\x08\x01", b"\x08\x02"], [b"\x08\x03"],
                                   enc=enc)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([C2S, S2C]), st.binary(max_size=64)), max_size=20),
       st.booleans(), st.integers(0, 100))
def test_random_bytes_never_raise(chunks: Chunks, with_preface: bool, body_limit: int) -> None:
    conv = Conv(body_limit)
    if with_preface:
        conv.send(C2S, PREFACE)
    conv.feed(chunks)
    conv.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_splits_do_not_change_the_result(data: st.DataObject) -> None:
    chunks = _golden_like()
    whole = comparable(run(chunks, 50))
    split: Chunks = []
    for direction, payload in chunks:
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(payload) - 1)), max_size=3)))
        last = 0
        for cut in cuts + [len(payload)]:
            if cut > last:
                split.append((direction, payload[last:cut]))
                last = cut
    assert comparable(run(split, 50)) == whole


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutations_never_raise(data: st.DataObject) -> None:
    chunks = _golden_like()
    index = data.draw(st.integers(0, len(chunks) - 1))
    direction, payload = chunks[index]
    pos = data.draw(st.integers(0, len(payload) - 1))
    kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if kind == "flip":
        payload = payload[:pos] + bytes([payload[pos] ^ (1 << data.draw(st.integers(0, 7)))]) \
            + payload[pos + 1:]
    elif kind == "cut":
        payload = payload[:pos]
    else:
        payload = payload[:pos] + data.draw(st.binary(min_size=1, max_size=9)) + payload[pos:]
    chunks[index] = (direction, payload)
    run(chunks, data.draw(st.sampled_from([0, 64])))


@pytest.mark.parametrize("limit", [0, 10])
def test_plain_body_kept_only_in_detail(limit: int) -> None:
    pair = H2Pair()
    pair.request(1, "POST", "/u", b"a" * 20)
    pair.respond(1, 200, b"b" * 5)
    (ex,) = run(pair.chunks, limit)
    if limit:
        assert ex.request_body == b"a" * 10 and ex.response_body == b"b" * 5
        assert "request body truncated at 10 bytes" in ex.notes
    else:
        assert ex.request_body is None


def test_frames_in_flight_after_a_reset_make_no_new_entry() -> None:
    enc, senc = Encoder(), Encoder()
    conv = Conv()
    conv.feed(preface() + [
        (C2S, frame(1, 5, 1, enc.encode([(":method", "GET"), (":path", "/big")]))),
        (S2C, frame(1, 4, 1, senc.encode([(":status", "200")]))),
        (S2C, frame(0, 0, 1, b"a" * 100)),
        (C2S, frame(3, 0, 1, (8).to_bytes(4, "big"))),
        (S2C, frame(0, 0, 1, b"b" * 100)),                # already on the wire
        (S2C, frame(0, 1, 1, b"c")),
    ])
    out = conv.close()
    assert summaries(out) == ["GET /big"] and conv.session.late_frames == 2
    assert out[0].response["content_length"] == 100
    assert "stream reset by client: CANCEL" in out[0].notes


def test_detail_view_from_the_entry_offsets_gets_the_body() -> None:
    """The detail view re-dissects from the entry's own first bytes (client_offset and
    server_offset), without the connection's start: the body is still read."""
    enc = (Encoder(), Encoder())
    chunks = preface() + grpc_call(1, "/a.B/C", [b"\x08\x01"], [b"\x08\x02"], enc=enc) \
        + grpc_call(3, "/a.B/C", [b"\x0a\x03abc"], [b"\x08\x03"], enc=enc)
    (first, second) = run(chunks)
    client = b"".join(d for direction, d in chunks if direction == C2S)
    server = b"".join(d for direction, d in chunks if direction == S2C)
    conv = Conv(body_limit=1000)
    conv.offsets = [second.client_offset, second.server_offset]
    conv.send(C2S, client[second.client_offset:])
    conv.send(S2C, server[second.server_offset:])
    (detail,) = conv.close()
    assert detail.request["stream_id"] == 3 and detail.protocol == "grpc"
    assert detail.request["body"]["messages"][0]["fields"] == [
        {"field": 1, "type": "string", "value": "abc"}]
    assert detail.response["body"]["messages"][0]["fields"][0]["value"] == 3


def test_header_text_cache_is_bounded_and_keeps_no_long_value() -> None:
    from worker.dissectors import http2
    http2._names.clear()
    for n in range(http2.TEXT_CACHE_MAX + 5):
        assert http2._name_text(b"X-H%d" % n) == f"x-h{n}"
        assert len(http2._names) <= http2.TEXT_CACHE_MAX
    long = b"\xff" + b"v" * http2.TEXT_CACHE_LEN
    assert http2._value_text(long) == "\ufffd" + "v" * http2.TEXT_CACHE_LEN
    assert long not in http2._values
