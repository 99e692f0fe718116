"""HTTP/1 dissector: framing, pairing, bodies, losses and resync, driven by session calls."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import sessions
from support.sessions import comparable
from worker.dissectors.base import Detect, Direction, Exchange, FlowInfo
from worker.dissectors.http1 import Http1Dissector, HttpSession, detect

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\xd5\x00\x01", 40000, b"\x0a\xd5\x00\x02", 8080)


class Conv(sessions.Conv):
    def __init__(self, body_limit: int = 0, session: HttpSession | None = None) -> None:
        super().__init__(lambda emit: session or Http1Dissector().session(FLOW, emit, body_limit))


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: shop\r\n".encode() + extra + b"\r\n"


def ok(body: bytes = b"", status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n" + extra + b"\r\n" + body)


def chunked(*parts: bytes, trailers: bytes = b"") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    return out + b"0\r\n" + trailers + b"\r\n"


def run_whole(client: bytes, server: bytes, body_limit: int = 0) -> list[Exchange]:
    conv = Conv(body_limit)
    conv.c(client)
    conv.s(server)
    return conv.close()


# -- pairing -----------------------------------------------------------------------------

def test_keep_alive_three_requests_pair_in_order_with_offsets_sizes_and_refs():
    conv = Conv()
    chunks = []
    for i in range(3):
        req = get(f"/api/orders/{i}?page={i}&flag")
        resp = ok(b"x" * (10 + i), extra=b"Content-Type: application/json\r\n")
        chunks.append((conv.c(req).calls, len(req), conv.s(resp).calls, len(resp)))
    out = conv.close()
    assert [e.summary for e in out] == [f"GET /api/orders/{i}?page={i}&flag" for i in range(3)]
    coff = soff = 0
    for ex, (creq, lreq, cresp, lresp) in zip(out, chunks):
        assert ex.complete and ex.status == 200 and ex.protocol == "http"
        assert ex.request["path"].startswith("/api/orders/")
        assert ex.request["query"]["flag"] == [""]
        assert ex.request["host"] == "shop" and ex.request["version"] == "HTTP/1.1"
        assert ex.response["content_type"] == "application/json"
        assert (ex.start_ns, ex.first_ref) == (1000 * creq, (7, creq))
        assert (ex.end_ns, ex.last_ref) == (1000 * cresp, (7, cresp))
        assert (ex.client_offset, ex.server_offset) == (coff, soff)
        assert (ex.request_size, ex.response_size) == (lreq, lresp)
        coff += lreq
        soff += lresp
    assert out[2].response["content_length"] == 12


def test_pipelined_requests_in_one_chunk_pair_fifo_with_responses_in_one_chunk():
    conv = Conv()
    conv.c(get("/a") + b"POST /b HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody" + get("/c"))
    conv.s(ok(b"A") + ok(b"BB", b"201 Created") + ok(b"CCC", b"404 Not Found"))
    out = conv.close()
    assert [(e.summary, e.status, e.response["content_length"]) for e in out] == [
        ("GET /a", 200, 1), ("POST /b", 201, 2), ("GET /c", 404, 3)]
    assert out[1].request["content_length"] == 4
    assert all(e.complete for e in out)


def test_exchanges_are_emitted_as_soon_as_the_response_ends():
    conv = Conv()
    conv.c(get("/a") + get("/b"))
    conv.s(ok(b"A"))
    assert [e.summary for e in conv.out] == ["GET /a"]


# -- framing -----------------------------------------------------------------------------

def test_content_length_bodies_both_ways_in_body_mode():
    out = run_whole(b"PUT /item HTTP/1.1\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\n"
                    b"hello world", ok(b'{"ok":true}'), body_limit=1000)
    (ex,) = out
    assert ex.request_body == b"hello world" and ex.request["content_type"] == "text/plain"
    assert ex.response_body == b'{"ok":true}' and ex.notes == []


def test_body_mode_off_keeps_no_bodies():
    (ex,) = run_whole(get("/"), ok(b"secret"))
    assert ex.response_body is None and ex.request_body is None


CHUNKED_CONV = (
    get("/stream", b"TE: trailers\r\n"),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
    + b"5;name=value\r\nhello\r\n" + chunked(b", ", b"world", trailers=b"X-Checksum: 42\r\n")
    + ok(b"next"),
)


def test_chunked_with_extensions_and_trailers():
    conv = Conv(body_limit=100)
    conv.c(CHUNKED_CONV[0] + get("/next"))
    conv.s(CHUNKED_CONV[1])
    first, second = conv.close()
    assert first.response_body == b"hello, world"
    assert first.response["content_length"] == 12
    assert first.response["trailers"] == {"x-checksum": "42"}
    assert first.response_size == len(CHUNKED_CONV[1]) - len(ok(b"next"))
    assert second.summary == "GET /next" and second.response_body == b"next"


def test_chunked_split_at_every_byte_boundary_gives_the_same_exchanges():
    client, server = CHUNKED_CONV[0] + get("/next"), CHUNKED_CONV[1]
    whole = [comparable(e) for e in run_whole(client, server, body_limit=100)]
    for cut in range(1, len(server)):
        conv = Conv(body_limit=100)
        conv.c(client)
        conv.s(server[:cut])
        conv.s(server[cut:])
        assert [comparable(e) for e in conv.close()] == whole, cut
    conv = Conv(body_limit=100)
    for i in range(len(client)):
        conv.c(client[i:i + 1])
    for i in range(len(server)):
        conv.s(server[i:i + 1])
    assert [comparable(e) for e in conv.close()] == whole


def test_head_response_with_content_length_has_no_body():
    conv = Conv()
    conv.c(b"HEAD /file HTTP/1.1\r\nHost: shop\r\n\r\n" + get("/after"))
    conv.s(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + ok(b"after"))
    head, after = conv.close()
    assert head.complete and head.response["content_length"] == 0
    assert head.response["headers"]["content-length"] == "5000"
    assert after.summary == "GET /after" and after.complete and after.status == 200


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_204_and_304_have_no_body_even_with_a_content_length(status):
    conv = Conv()
    conv.c(get("/a") + get("/b"))
    conv.s(b"HTTP/1.1 " + status + b"\r\nContent-Length: 99\r\nETag: \"x\"\r\n\r\n" + ok(b"b"))
    first, second = conv.close()
    assert first.status == int(status[:3]) and first.complete
    assert first.response["content_length"] == 0
    assert second.status == 200 and second.summary == "GET /b"


def test_100_continue_does_not_consume_the_request():
    conv = Conv(body_limit=100)
    conv.c(b"POST /upload HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    conv.s(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert conv.out == []
    conv.c(b"abc")
    n = conv.s(ok(b"stored", b"201 Created")).calls
    (ex,) = conv.close()
    assert ex.status == 201 and ex.request_body == b"abc" and ex.complete
    assert ex.response_body == b"stored"
    assert ex.server_offset == len(b"HTTP/1.1 100 Continue\r\n\r\n") and ex.end_ns == 1000 * n


def test_response_without_length_lasts_until_close():
    conv = Conv(body_limit=100)
    conv.c(b"GET /old HTTP/1.0\r\n\r\n")
    conv.s(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>")
    last = conv.s(b"</html>").calls
    assert conv.out == []
    (ex,) = conv.close()
    assert ex.complete and ex.response_body == b"<html></html>"
    assert ex.response["content_length"] == 13 and ex.end_ns == 1000 * last
    assert ex.last_ref == (7, last)


def test_connection_close_then_end_of_flow():
    (ex,) = run_whole(get("/bye", b"Connection: close\r\n"),
                      ok(b"bye", extra=b"Connection: close\r\n"))
    assert ex.complete and ex.request["headers"]["connection"] == "close"


def test_header_names_lower_case_repeats_joined_set_cookie_by_newline_and_folding():
    (ex,) = run_whole(get("/", b"Accept: a\r\nACCEPT: b\r\nX-Long: one\r\n two\r\n"),
                      ok(extra=b"Set-Cookie: a=1; Expires=Wed, 21 Oct 2015\r\nSet-Cookie: b=2\r\n"))
    assert ex.request["headers"]["accept"] == "a, b"
    assert ex.request["headers"]["x-long"] == "one two"
    assert ex.response["headers"]["set-cookie"] == "a=1; Expires=Wed, 21 Oct 2015\nb=2"


def test_bare_lf_line_endings_are_tolerated():
    (ex,) = run_whole(b"GET /lf HTTP/1.1\nHost: x\n\n", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi")
    assert ex.complete and ex.request["host"] == "x" and ex.response["content_length"] == 2


def test_absolute_form_target_gives_path_and_host():
    (ex,) = run_whole(b"GET http://proxy.example:8080/p/q?x=1 HTTP/1.1\r\n\r\n", ok())
    assert (ex.request["path"], ex.request["host"]) == ("/p/q", "proxy.example:8080")
    assert ex.request["query"] == {"x": ["1"]}


def test_header_block_without_end_waits_and_is_not_parsed_early():
    conv = Conv()
    conv.c(b"GET /slow HTTP/1.1\r\nHost: a\r\n")
    conv.s(b"")
    conv.c(b"X-Late: yes\r")
    conv.c(b"\n")
    assert conv.out == []
    conv.c(b"\r\n")
    conv.s(ok())
    (ex,) = conv.close()
    assert ex.request["headers"] == {"host": "a", "x-late": "yes"} and ex.complete


# -- bodies ------------------------------------------------------------------------------

def encoded_response(body: bytes, coding: bytes) -> bytes:
    return ok(body, extra=b"Content-Encoding: " + coding + b"\r\n")


def _raw_deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(wbits=-15)
    return comp.compress(data) + comp.flush()


@pytest.mark.parametrize("coding,encode", [
    (b"gzip", gzip.compress),
    (b"deflate", zlib.compress),          # RFC 9110 deflate: zlib-wrapped
    (b"deflate", _raw_deflate),           # what some servers send instead
])
def test_gzip_and_deflate_bodies_are_decoded_in_body_mode(coding, encode):
    plain = b'{"items": [' + b'{"id": 1}, ' * 200 + b"]}"
    (ex,) = run_whole(get("/"), encoded_response(encode(plain), coding), body_limit=1 << 16)
    assert ex.response_body == plain and ex.notes == []
    assert ex.response["content_length"] == len(encode(plain))


def test_chunked_gzip_split_in_small_chunks_decodes():
    plain = b"abcdefghij" * 300
    packed = gzip.compress(plain)
    server = (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
              + chunked(*[packed[i:i + 7] for i in range(0, len(packed), 7)]))
    conv = Conv(body_limit=1 << 16)
    conv.c(get("/"))
    for i in range(0, len(server), 5):
        conv.s(server[i:i + 5])
    (ex,) = conv.close()
    assert ex.response_body == plain


def test_bodies_are_truncated_at_body_limit_with_a_note():
    (ex,) = run_whole(get("/"), ok(b"0123456789" * 10), body_limit=25)
    assert ex.response_body == b"0123456789012345678901234"
    assert ex.notes == ["response body truncated at 25 bytes"]
    assert ex.response["content_length"] == 100


def test_gzip_bomb_output_is_bounded_by_body_limit():
    bomb = gzip.compress(b"\0" * (64 << 20), 9)
    (ex,) = run_whole(get("/"), encoded_response(bomb, b"gzip"), body_limit=4096)
    assert ex.response_body == b"\0" * 4096
    assert "response body truncated at 4096 bytes (decoded)" in ex.notes


def test_undecodable_gzip_keeps_the_raw_bytes_with_a_note():
    (ex,) = run_whole(get("/"), encoded_response(b"not gzip at all", b"gzip"), body_limit=100)
    assert ex.response_body == b"not gzip at all"
    assert ex.notes[0].startswith("response gzip body could not be decoded: ")


def test_brotli_is_left_encoded_with_a_note():
    (ex,) = run_whole(get("/"), encoded_response(b"\x8b\x02\x80", b"br"), body_limit=100)
    assert ex.response_body == b"\x8b\x02\x80"
    assert ex.notes == ["response body left br-encoded (no brotli decoder installed)"]


# -- losses ------------------------------------------------------------------------------

def test_gap_in_response_body_cuts_the_exchange_and_the_next_one_resyncs():
    conv = Conv()
    conv.c(get("/big") + get("/next"))
    conv.s(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    conv.gap(S2C, 300)
    conv.s(b"x" * 600 + ok(b"n"))
    big, nxt = conv.close()
    assert not big.complete and big.status == 200 and "gap in response body" in big.notes
    assert nxt.complete and nxt.summary == "GET /next" and nxt.status == 200


def test_gap_in_request_body_marks_it_incomplete_and_still_pairs_its_response():
    conv = Conv()
    conv.c(b"POST /up HTTP/1.1\r\nContent-Length: 500\r\n\r\n" + b"y" * 10)
    conv.gap(C2S, 100)
    conv.c(b"y" * 390)
    conv.s(ok(b"done"))
    (ex,) = conv.close()
    assert not ex.complete and ex.status == 200 and "gap in request body" in ex.notes


def test_gap_where_a_response_starts_ends_the_waiting_request():
    conv = Conv()
    conv.c(get("/lost") + get("/kept"))
    conv.gap(S2C, 80)
    conv.s(ok(b"k"))
    lost, kept = conv.close()
    assert lost.summary == "GET /lost" and lost.response is None and not lost.complete
    assert "response lost in a gap" in lost.notes
    assert kept.complete and kept.summary == "GET /kept"


def test_gap_where_a_request_starts_keeps_pairing_aligned():
    conv = Conv()
    conv.c(get("/a"))
    conv.gap(C2S, 40)               # a whole request lost
    conv.c(get("/c"))
    conv.s(ok(b"A") + ok(b"B", b"202 Accepted") + ok(b"C"))
    a, lost, c = conv.close()
    assert (a.summary, a.status) == ("GET /a", 200)
    assert lost.request == {} and lost.status == 202 and not lost.complete
    assert lost.summary == "202 Accepted (request not captured)"
    assert (c.summary, c.status, c.complete) == ("GET /c", 200, True)


def test_close_before_the_response_emits_the_request_incomplete():
    conv = Conv()
    n = conv.c(get("/x")).calls
    (ex,) = conv.close()
    assert ex.summary == "GET /x" and ex.response is None and ex.status is None
    assert not ex.complete and ex.end_ns is None and ex.server_offset is None
    assert ex.last_ref == (7, n) and "no response" in ex.notes


def test_close_mid_response_emits_what_was_seen():
    conv = Conv(body_limit=100)
    conv.c(get("/x"))
    conv.s(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100\r\n\r\npartial")
    (ex,) = conv.close()
    assert ex.status == 500 and not ex.complete and ex.response_body == b"partial"
    assert ex.response["content_length"] == 7


def test_close_in_request_headers_emits_the_request_line():
    conv = Conv()
    conv.c(b"GET /half HTTP/1.1\r\nHost: a\r\nAcc")
    (ex,) = conv.close()
    assert ex.summary == "GET /half" and ex.request["host"] == "a" and not ex.complete


def test_mid_stream_start_resyncs_on_the_next_messages():
    conv = Conv()
    conv.c(b'ail of an earlier body", "n": 1}' + get("/fresh"))
    # Not pipelined: the server starts answering the request whose tail was seen.
    conv.s(ok(b"orphan") + ok(b"fresh"))
    orphan, fresh = conv.close()
    assert orphan.request == {} and orphan.summary == "200 OK (request not captured)"
    assert not orphan.complete and orphan.response["content_length"] == 6
    assert fresh.summary == "GET /fresh" and fresh.complete
    assert fresh.client_offset == len(b'ail of an earlier body", "n": 1}')
    assert conv.session.skipped_bytes == len(b'ail of an earlier body", "n": 1}')


def test_mid_stream_start_in_a_response_body_skips_to_the_next_response():
    conv = Conv()
    conv.s(b"end of an earlier response body</html>")
    conv.c(get("/fresh"))
    conv.s(ok(b"fresh"))
    (fresh,) = conv.close()
    assert fresh.summary == "GET /fresh" and fresh.complete and fresh.status == 200


def test_malformed_request_line_is_skipped_and_its_response_does_not_shift_pairs():
    conv = Conv()
    conv.c(get("/a") + b"GET /bad path HTTP/1.1\r\n\r\n" + get("/b"))
    conv.s(ok(b"a") + ok(b"", b"400 Bad Request") + ok(b"b"))
    a, bad, b = conv.close()
    assert (a.summary, b.summary) == ("GET /a", "GET /b") and a.complete and b.complete
    assert bad.status == 400 and bad.request == {} and "request could not be parsed" in bad.notes


def test_garbage_is_never_parsed_as_a_head():
    conv = Conv()
    conv.c(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100)
    conv.s(b"\x16\x03\x03\x00\x5a\x02")
    assert conv.close() == []


def test_oversized_header_block_is_not_http():
    conv = Conv()
    conv.c(b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 70000)
    conv.c(b"\r\n\r\n" + get("/after"))
    conv.s(ok(b"", b"431 Request Header Fields Too Large") + ok(b"1"))
    too_large, after = conv.close()
    assert too_large.request == {} and too_large.status == 431 and not too_large.complete
    assert after.summary == "GET /after" and after.status == 200 and after.complete


def test_101_upgrade_emits_the_exchange_and_stops_dissecting():
    conv = Conv()
    conv.c(get("/chat", b"Upgrade: websocket\r\nConnection: Upgrade\r\n"))
    conv.s(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
    conv.c(b"\x81\x85abcd" + get("/not-http-anymore"))
    (ex,) = conv.close()
    assert ex.status == 101 and ex.response["upgrade"] == "websocket" and ex.complete
    assert conv.session.upgraded == "websocket"


def test_upgrade_hook_gets_the_rest_of_the_flow():
    seen: list[tuple] = []

    class Recorder:
        def on_data(self, direction, data, offset, ts_ns, ref):
            seen.append((direction, data, offset))

        def on_gap(self, direction, offset, length, ts_ns):
            seen.append(("gap", direction, offset))

        def on_close(self, ts_ns):
            seen.append(("close",))

    out: list[Exchange] = []
    session = HttpSession(FLOW, out.append, upgrade_hook=lambda proto, flow, emit, body_limit: Recorder())
    conv = Conv(session=session)
    req = get("/h2", b"Upgrade: h2c\r\n")
    resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"
    conv.c(req)
    conv.s(resp + b"FRAME")
    conv.c(b"PRI * HTTP/2.0")
    conv.close()
    assert [e.response["upgrade"] for e in out] == ["h2c"]
    assert seen == [(S2C, b"FRAME", len(resp)), (C2S, b"PRI * HTTP/2.0", len(req)), ("close",)]


def test_connect_tunnel_stops_dissecting():
    conv = Conv()
    conv.c(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n")
    conv.s(b"HTTP/1.1 200 Connection Established\r\n\r\n\x00\x00\x00\x08")
    conv.c(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
    (ex,) = conv.close()
    assert ex.response["upgrade"] == "tunnel" and ex.request["path"] == "db:5432"


# -- detection ---------------------------------------------------------------------------

@pytest.mark.parametrize("client,server,expected", [
    (b"GET / HTTP/1.1\r\n", b"", Detect.MATCH),
    (b"GET /x HTTP/1.", b"", Detect.MATCH),
    (b"GE", b"", Detect.MORE),
    (b"GET /very/long/path", b"", Detect.MORE),
    (b"GET /x HTTP/2", b"?", Detect.NO),
    (b"", b"HTTP/1.1 200 OK\r\n", Detect.MATCH),
    (b"", b"HTTP/1.1 2", Detect.MORE),
    (b"?", b"HTTP/2 200", Detect.NO),
    (b"\x16\x03\x01", b"", Detect.MORE),              # the client may be mid-message: wait
    (b"\x16\x03\x01", b"\x16\x03\x03", Detect.NO),
    (b"tail of a body", b"HTTP/1.0 404 Not Found", Detect.MATCH),
    (b"GET\t/ HTTP/1.1", b"?", Detect.NO),
    (b"FOO / HTTP/1.1", b"?", Detect.NO),
])
def test_detect(client, server, expected):
    assert detect(client, server) is expected


# -- fuzzing -----------------------------------------------------------------------------

CONVERSATION = (
    get("/a?x=1")
    + b"POST /b HTTP/1.1\r\nContent-Length: 5\r\nContent-Encoding: gzip\r\n\r\nabcde"
    + b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"12", b"345")
    + b"HEAD /d HTTP/1.1\r\n\r\n"
    + get("/e"),
    ok(b"A")
    + b"HTTP/1.1 100 Continue\r\n\r\n"
    + ok(gzip.compress(b"B" * 50), extra=b"Content-Encoding: gzip\r\n")
    + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + chunked(b"C", b"CC", trailers=b"T: 1\r\n")
    + b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    + b"HTTP/1.0 200 OK\r\n\r\nuntil close",
)


def split_points(data_len: int):
    return st.lists(st.integers(min_value=1, max_value=max(1, data_len - 1)), max_size=12)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


WHOLE = [comparable(e) for e in run_whole(*CONVERSATION, body_limit=64)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_split_of_a_conversation_gives_the_same_exchanges(data):
    client, server = CONVERSATION
    c_chunks = chunks(client, data.draw(split_points(len(client))))
    s_chunks = chunks(server, data.draw(split_points(len(server))))
    conv = Conv(body_limit=64)
    # Interleave as a real capture would: a response after its request's bytes.
    for part in c_chunks:
        conv.c(part)
    for part in s_chunks:
        conv.s(part)
    assert [comparable(e) for e in conv.close()] == WHOLE
    assert len(WHOLE) == 5 and all(e["complete"] for e in WHOLE)


events = st.lists(st.one_of(
    st.tuples(st.just("data"), st.sampled_from([C2S, S2C]), st.binary(max_size=64)),
    st.tuples(st.just("data"), st.sampled_from([C2S, S2C]),
              st.sampled_from([get("/f"), ok(b"z"), b"HTTP/1.1 ", b"\r\n", b"GET ", b"0\r\n",
                               b"Transfer-Encoding: chunked\r\n", b"Content-Length: 3\r\n",
                               b"HTTP/1.1 101 Switching\r\n\r\n", b"HTTP/1.1 100 C\r\n\r\n"])),
    st.tuples(st.just("gap"), st.sampled_from([C2S, S2C]), st.integers(0, 50)),
), max_size=30)


@settings(max_examples=500, deadline=None)
@given(events, st.integers(0, 3))
def test_no_input_raises(evs, limit_choice):
    conv = Conv(body_limit=[0, 1, 16, 1000][limit_choice])
    for kind, direction, arg in evs:
        if kind == "data":
            conv.send(direction, arg)
        else:
            conv.gap(direction, arg)
    for ex in conv.close():
        assert ex.protocol == "http" and isinstance(ex.summary, str)
        assert ex.request_size >= 0 and ex.response_size >= 0


def test_a_request_after_a_malformed_one_arriving_in_pieces_is_read_whole():
    conv = Conv()
    conv.c(b"GET /a HTTP/1.1\r\n\r\n")
    conv.c(b"BROKEN LINE\r\nX: 1\r\nGET /b HTTP/1.1\r\nHost: b\r\n")   # no end yet
    conv.c(b"\r\n")
    conv.s(ok(b"a") + ok(b"", b"400 Bad Request") + ok(b"b"))
    a, bad, b = conv.close()
    assert (a.summary, b.summary, b.request["host"]) == ("GET /a", "GET /b", "b")
    assert bad.status == 400 and b.complete
