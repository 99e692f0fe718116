"""Per-session byte caps in the HTTP/2 dissector: a header block, the HPACK table and one frame
stay within their caps whatever the peer sends; what was cut is noted in the entry and counted."""

from __future__ import annotations

import tracemalloc

from hpack import Encoder

from test_http2 import C2S, S2C, Conv, frame, preface
from worker.dissection import count_cuts
from worker.dissectors.http2 import FRAME_LIMIT, HEADER_BLOCK_LIMIT

HEADERS, CONTINUATION, DATA, SETTINGS = 1, 9, 0, 4
END_STREAM, END_HEADERS = 1, 4


def request_block(path: str = "/") -> bytes:
    return Encoder().encode([(":method", "GET"), (":path", path), (":scheme", "http"),
                             (":authority", "shop")])


def response(sid: int) -> bytes:
    return frame(HEADERS, END_HEADERS | END_STREAM, sid, Encoder().encode([(":status", "200")]))


def notes_of(exchanges) -> list[str]:
    return [note for exchange in exchanges for note in exchange.notes]


def test_a_continuation_flood_is_cut_at_the_header_block_cap():
    conv = Conv().feed(preface())
    conv.send(C2S, frame(HEADERS, END_STREAM, 1, request_block()))
    fragment = b"\x00" * 16384
    tracemalloc.start()
    try:
        for _ in range(400):                                  # 6.5 MB of CONTINUATION
            conv.send(C2S, frame(CONTINUATION, 0, 1, fragment))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * HEADER_BLOCK_LIMIT, peak               # kept: the cap, not the flood
    conv.send(C2S, frame(CONTINUATION, END_HEADERS, 1, fragment))
    conv.send(S2C, response(1))
    exchanges = conv.close()
    notes = notes_of(exchanges)
    assert any(note.startswith("cut: http2 header block: the request header block of "
                               f"{9 + len(request_block()) + 401 * (9 + 16384)} bytes is over "
                               "the 256 KiB kept; its headers are not decoded") for note in notes), notes
    counts: dict[str, int] = {}
    count_cuts(counts, notes)
    assert counts == {"http2 header block": 1}


def test_an_hpack_table_over_the_cap_is_cut_and_noted():
    conv = Conv().feed(preface())
    encoder = Encoder()
    encoder.header_table_size = 1 << 20       # the block starts with a table size update to 1 MiB
    conv.send(C2S, frame(HEADERS, END_HEADERS | END_STREAM, 1, encoder.encode(
        [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "shop")])))
    conv.send(S2C, response(1))
    notes = notes_of(conv.close())
    assert any(note.startswith("cut: hpack table: the request side set an HPACK table over the "
                               "64 KiB kept") for note in notes), notes


def test_a_frame_over_the_buffer_cap_is_cut_without_being_buffered():
    conv = Conv()
    # the server allows frames up to 16 MiB - 1 (SETTINGS_MAX_FRAME_SIZE)
    conv.send(C2S, preface()[0][1])
    conv.send(S2C, frame(SETTINGS, 0, 0, (5).to_bytes(2, "big") + ((1 << 24) - 1).to_bytes(4, "big")))
    conv.send(C2S, frame(HEADERS, END_HEADERS, 1, request_block("/upload")))
    big = 2 * FRAME_LIMIT
    conv.send(C2S, big.to_bytes(3, "big") + bytes([DATA, END_STREAM]) + (1).to_bytes(4, "big"))
    for _ in range(big // 65536):
        conv.send(C2S, b"\x00" * 65536)
        assert len(conv.session.client.buf) < FRAME_LIMIT
    conv.send(S2C, response(1))
    exchanges = conv.close()
    notes = notes_of(exchanges)
    assert any("cut: http2 frame: a frame of 2097152 bytes is over the 1 MiB kept per direction"
               in note for note in notes), notes
    assert exchanges[0].request["path"] == "/upload" and not exchanges[0].complete


def test_redis_pending_commands_are_capped_and_later_replies_still_pair():
    from test_redis import Conv as RedisConv, cmd
    from worker.dissectors.redis import MAX_PENDING
    conv = RedisConv()
    total = MAX_PENDING + 500                 # redis-cli --pipe: every command before any reply
    conv.c(b"".join(cmd("SET", f"k{n}", str(n)) for n in range(total)))
    assert len(conv.session.pending) == MAX_PENDING
    cut = [ex for ex in conv.out if ex.notes]
    assert len(cut) == 500 and all(not ex.complete for ex in cut)
    assert cut[0].notes == [f"cut: redis pending: over {MAX_PENDING} commands awaited replies; "
                            "this one's reply is not paired"]
    conv.s(b"".join(b"$%d\r\n%d\r\n" % (len(str(n)), n) for n in range(total)))
    conv.c(cmd("GET", "after"))
    conv.s(b"$5\r\nvalue\r\n")
    exchanges = conv.close()
    paired = [ex for ex in exchanges if ex.response is not None]
    # the first MAX_PENDING replies pair with their commands, the 500 of cut ones are dropped,
    # and the command after them gets its own reply
    assert [ex.response["value"] for ex in paired[:3]] == ["0", "1", "2"]
    assert paired[MAX_PENDING - 1].request["arguments"][0] == f"k{MAX_PENDING - 1}"
    assert paired[MAX_PENDING - 1].response["value"] == str(MAX_PENDING - 1)
    assert paired[-1].request["command"] == "GET" and paired[-1].response["value"] == "value"
    assert len(paired) == MAX_PENDING + 1
    counts: dict[str, int] = {}
    count_cuts(counts, notes_of(exchanges))
    assert counts == {"redis pending": 500}


def test_http1_pipelining_past_the_cap_gives_the_connection_up():
    from test_http1 import Conv as HttpConv
    from worker.dissectors.http1 import MAX_PENDING
    conv = HttpConv()
    conv.c(b"".join(b"GET /%d HTTP/1.1\r\nHost: shop\r\n\r\n" % n for n in range(3)))
    conv.s(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * 3)
    for n in range(3, 3 + MAX_PENDING + 50):      # never answered
        conv.c(b"GET /%d HTTP/1.1\r\nHost: shop\r\n\r\n" % n)
    assert len(conv.session.unanswered) == 0 and len(conv.session.pairs) == 0
    conv.s(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")    # ignored from here on
    exchanges = conv.close()
    assert [ex.request["path"] for ex in exchanges[:3]] == ["/0", "/1", "/2"]
    assert all(ex.response["status"] == 200 and ex.complete for ex in exchanges[:3])
    cut = exchanges[3:]
    assert len(cut) == MAX_PENDING and all(ex.response is None for ex in cut)
    assert cut[0].notes == [f"cut: http1 pending: over {MAX_PENDING} requests awaited responses; "
                            "the rest of this connection is not dissected"]
    counts: dict[str, int] = {}
    count_cuts(counts, notes_of(exchanges))
    assert counts == {"http1 pending": MAX_PENDING}


def test_mysql_commands_piling_up_past_the_cap_give_the_connection_up():
    from test_mysql import connected, ok, query
    from worker.dissectors.mysql import MAX_PENDING
    conv = connected()
    conv.c(query("SELECT 1")).s(ok())
    conv.c(b"".join(query(f"INSERT INTO t VALUES ({n})") for n in range(MAX_PENDING + 50)))
    assert len(conv.session.pending) == 0 and conv.session.dead
    conv.s(ok())                                   # ignored: the connection was given up
    exchanges = conv.close()
    assert exchanges[1].request["query"] == "SELECT 1" and exchanges[1].complete
    cut = exchanges[2:]
    assert len(cut) == MAX_PENDING + 1 and all(not ex.complete for ex in cut)
    assert cut[0].request["query"] == "INSERT INTO t VALUES (0)"
    assert f"cut: mysql pending: over {MAX_PENDING} commands awaited responses; the rest of this " \
           "connection is not dissected" in cut[0].notes
    counts: dict[str, int] = {}
    count_cuts(counts, notes_of(exchanges))
    assert counts == {"mysql pending": MAX_PENDING + 1}
