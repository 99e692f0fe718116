"""WebSocket dissector: frames, masking, lengths, fragmentation, control frames, compression,
gaps and resync, driven by session calls (the upgrade itself is tested with the golden file)."""

from __future__ import annotations

import struct
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import sessions
from support.sessions import comparable
from worker.dissectors.base import Direction, Exchange, FlowInfo
from worker.dissectors.upgrades import upgrade_session
from worker.dissectors.websocket import TEXT_LIMIT, WebSocketSession

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 8080)
MASK = b"\x11\x22\x33\x44"


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None,
          rsv1: bool = False, length: int | None = None) -> bytes:
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload) if length is None else length
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack("!Q", n)
    if mask:
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def cframe(opcode: int, payload: bytes, **kw: object) -> bytes:
    return frame(opcode, payload, mask=MASK, **kw)  # type: ignore[arg-type]


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class Conv(sessions.Conv):
    def __init__(self, body_limit: int = 0) -> None:
        super().__init__(lambda emit: WebSocketSession(FLOW, emit, body_limit), segment=2,
                         timed_gaps=False, close_ts=10 ** 9, check_errors=True)


def conversation() -> tuple[bytes, bytes]:
    client = (cframe(1, b"hello") + cframe(2, bytes(300)) + cframe(1, b"part one, ", fin=False)
              + cframe(9, b"ping!") + cframe(0, b"part two")
              + cframe(8, close_payload(1000, b"bye")))
    server = (frame(1, "ünïcode".encode()) + frame(2, bytes(70000)) + frame(10, b"ping!")
              + frame(8, close_payload(1000, b"bye")))
    return client, server


def test_messages_control_frames_and_lengths() -> None:
    client, server = conversation()
    conv = Conv()
    conv.send(C2S, client)
    conv.send(S2C, server)
    out = conv.close()
    # A close or a ping is emitted with its reply, so after the server's earlier messages.
    assert [e.summary for e in out] == [
        "text 5 bytes →", "binary 300 bytes →", "text 18 bytes →", "← text 9 bytes",
        "← binary 70000 bytes", "ping →", "close 1000 →"]
    text, binary, fragmented, server_text, big, ping, close = out
    assert text.request == {"direction": "client", "opcode": "text", "length": 5, "fin": True,
                            "frames": 1, "text": "hello"}
    assert text.response is None and text.status is None and text.request_size == 11
    assert "text" not in binary.request and binary.request_size == 2 + 2 + 4 + 300
    assert fragmented.request["frames"] == 2 and fragmented.request["text"] == "part one, part two"
    assert close.status == 1000 and close.request["reason"] == "bye"
    assert close.response == {"direction": "server", "opcode": "close", "length": 5,
                              "fin": True, "frames": 1, "code": 1000, "reason": "bye"}
    assert server_text.request["text"] == "ünïcode" and server_text.server_offset == 0
    assert big.request["length"] == 70000 and big.request_size == 2 + 8 + 70000
    assert ping.response["opcode"] == "pong" and ping.request["data"] == "ping!"
    assert all(e.complete and not e.notes for e in out)


def test_split_at_every_byte() -> None:
    client = cframe(1, b"hello") + cframe(1, b"frag", fin=False) + cframe(0, b"ment") \
        + cframe(8, close_payload(1001))
    server = frame(1, b"x" * 200) + frame(8, close_payload(1001))
    whole = Conv()
    whole.send(C2S, client)
    whole.send(S2C, server)
    expected = [comparable(e) for e in whole.close()]
    for cut in range(1, len(client)):
        conv = Conv()
        conv.send(C2S, client[:cut])
        conv.send(C2S, client[cut:])
        scut = cut % len(server)
        conv.send(S2C, server[:scut])
        conv.send(S2C, server[scut:])
        assert [comparable(e) for e in conv.close()] == expected, cut


def test_text_around_the_cap_decodes_as_the_cut_does() -> None:
    # Up to TEXT_LIMIT bytes are decoded whole; longer ones cut to TEXT_LIMIT characters: both
    # as if the first 4 * TEXT_LIMIT bytes were decoded and cut (multi-byte and invalid UTF-8
    # at the edges included).
    pieces = [b"a", "é".encode(), "€".encode(), "😀".encode(), b"\xff", b"\xe2\x82"]
    for base in (TEXT_LIMIT - 4, TEXT_LIMIT - 1, TEXT_LIMIT, TEXT_LIMIT + 1, 4 * TEXT_LIMIT - 2):
        for piece in pieces:
            payload = b"x" * base + piece
            conv = Conv()
            conv.send(S2C, frame(1, payload))
            (ex,) = conv.close()
            expected = payload[:4 * TEXT_LIMIT].decode("utf-8", "replace")[:TEXT_LIMIT]
            assert ex.request["text"] == expected, (base, piece)


def test_text_is_capped_and_bodies_only_with_body_limit() -> None:
    conv = Conv()
    conv.send(S2C, frame(1, b"a" * 5000))
    (ex,) = conv.close()
    assert len(ex.request["text"]) == TEXT_LIMIT and ex.request["length"] == 5000
    assert ex.request_body is None
    detail = Conv(body_limit=100)
    detail.send(C2S, cframe(2, bytes(range(200))))
    (ex,) = detail.close()
    assert ex.request_body == bytes(range(100))


def test_permessage_deflate_with_context_takeover() -> None:
    compressor = zlib.compressobj(wbits=-15)
    conv = Conv()
    for text in (b"compress me " * 10, b"compress me " * 11):
        data = (compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        conv.send(C2S, cframe(1, data, rsv1=True))
    out = conv.close()
    assert [e.request["text"] for e in out] == ["compress me " * 10, "compress me " * 11]
    assert out[1].request["compressed"] and out[1].request["wire_length"] < 20


def test_deflate_tail_goes_in_with_the_last_bytes_or_at_the_frame_end() -> None:
    """A compressed message's tail (00 00 ff ff) is inflated with its last payload bytes when
    they come in the final frame, else at that frame's end (an empty final frame): the same
    texts and lengths for a message in one frame, fragmented, ended by an empty frame, and the
    stream cut at every byte; data that does not inflate is noted, and the next message
    inflates with a fresh context."""
    compressor = zlib.compressobj(wbits=-15)
    texts = [b'{"n": %d, "text": "compress me"}' % n * (n + 1) for n in range(4)]
    datas = [(compressor.compress(t) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4] for t in texts]
    client = (cframe(1, datas[0], rsv1=True)
              + cframe(1, datas[1][:5], rsv1=True, fin=False) + cframe(0, datas[1][5:])
              + cframe(1, datas[2], rsv1=True, fin=False) + cframe(0, b"")
              + cframe(1, datas[3][:1], rsv1=True, fin=False) + cframe(9, b"p")
              + cframe(0, datas[3][1:]))
    fresh = zlib.compressobj(wbits=-15)
    after = (fresh.compress(b"after") + fresh.flush(zlib.Z_SYNC_FLUSH))[:-4]
    server = frame(2, b"\xff\xfe\xfd", rsv1=True) + frame(1, after, rsv1=True)
    expected = [(t.decode(), len(t)) for t in texts]
    for cut in range(0, len(client), 3):
        conv = Conv()
        conv.send(C2S, client[:cut])
        conv.send(C2S, client[cut:])
        conv.send(S2C, server[:cut % len(server)])
        conv.send(S2C, server[cut % len(server):])
        out = conv.close()
        data = [e for e in out if e.request["opcode"] == "text" and e.request["direction"] == "client"]
        assert [(e.request["text"], e.request["length"]) for e in data] == expected, cut
        assert all(e.complete and not e.notes for e in data), cut
        broken, later = [e for e in out if e.request["direction"] == "server"]
        assert broken.notes[0].startswith("compressed payload could not be inflated"), cut
        assert broken.request["length"] == 3 and later.request["text"] == "after", cut


def test_detail_view_shows_what_inflated_before_a_bad_tail() -> None:
    """The bytes inflated before the tail fails are the detail view's body (the summary shows
    no text either way: the message is noted as not inflated)."""
    compressor = zlib.compressobj(wbits=-15)
    data = (compressor.compress(b"hello hello hello") + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    data += b"\x20"        # inflates, and the tail after it does not (bad stored block lengths)
    for body_limit in (0, 64):
        conv = Conv(body_limit=body_limit)
        conv.send(C2S, cframe(1, data, rsv1=True))
        (ex,) = conv.close()
        assert ex.notes == ["compressed payload could not be inflated: Error -3 while "
                            "decompressing data: invalid stored block lengths"], body_limit
        assert "text" not in ex.request and ex.request["length"] == len(data)
        assert ex.request_body == (b"hello hello hello" if body_limit else None)


def test_labels_say_each_message_past_the_label_cache() -> None:
    """Data messages' labels are kept by length, opcode and side (a bound of _LABEL_CACHE, then
    emptied): every label is the message's own, past the bound and back."""
    from worker.dissectors.websocket import _LABEL_CACHE
    conv = Conv()
    lengths = [*range(0, _LABEL_CACHE // 2 + 50), *range(0, 40)]
    for n in lengths:
        conv.send(C2S, cframe(1 + n % 2, b"x" * n))
        conv.send(S2C, frame(1 + n % 2, b"y" * n))
    summaries = [e.summary for e in conv.close()]
    kinds = ["text", "binary"]
    assert summaries == [label for n in lengths for label in (
        f"{kinds[n % 2]} {n} bytes →", f"← {kinds[n % 2]} {n} bytes")]


def test_close_without_reply_unanswered_ping_and_lone_pong() -> None:
    conv = Conv()
    conv.send(S2C, frame(10, b""))
    conv.send(C2S, cframe(9, b"x"))
    conv.send(S2C, frame(8, close_payload(1011, b"oops")))
    out = conv.close()
    assert [(e.summary, e.complete, e.notes) for e in out] == [
        ("← pong", True, []), ("← close 1011", False, ["no close reply"]),
        ("ping →", False, ["no pong"])]
    assert out[1].status == 1011


def test_cut_message_at_close_and_gap_inside_payload() -> None:
    conv = Conv()
    conv.send(S2C, frame(1, b"abcdefghij")[:6])
    conv.gap(S2C, 4)
    conv.send(S2C, b"ij" + frame(1, b"next"))
    conv.send(C2S, cframe(1, b"never ends", fin=False))
    out = conv.close()
    assert [(e.summary, e.complete) for e in out] == [
        ("← text 10 bytes", False), ("← text 4 bytes", True), ("text 10 bytes →", False)]
    assert out[0].notes == ["gap in server payload"] and out[0].request["text"] == "abcd"
    assert out[2].request["fin"] is False
    assert out[2].notes == ["client message cut by the end of the connection"]


def test_gap_across_frames_resyncs() -> None:
    conv = Conv()
    conv.send(C2S, cframe(1, b"first message"))
    conv.gap(C2S, 50)
    conv.send(C2S, b"\x99\x12tail of a lost frame" + cframe(1, b"second"))
    conv.send(C2S, cframe(1, b"third") + cframe(1, b"fourth"))
    out = conv.close()
    # A frame start is taken once the frame after it shows a valid header too.
    assert [e.request.get("text") for e in out] == ["first message", "second", "third", "fourth"]
    assert conv.session.skipped_bytes > 0


def test_a_bad_header_begun_in_the_chunk_before_resyncs_as_in_one_chunk() -> None:
    """The first frame says 3 bytes of its 5: the header read after them (28 7e 82 fe: a
    control frame of 126 bytes) is bad, and the search for the next frame starts at its second
    byte, where the binary frame's header (82 fe ...) is among the bytes it took, however
    the stream is cut (hypothesis found the cut after its first byte)."""
    client, server = conversation()
    client = bytes([0x00, 0x83]) + client[2:]
    whole = Conv()
    whole.send(C2S, client)
    whole.send(S2C, server)
    expected = [comparable(e) for e in whole.close()]
    assert [e["summary"] for e in expected][:3] == [
        "continuation 3 bytes →", "binary 300 bytes →", "text 18 bytes →"]
    for cut in range(1, len(client)):
        for second in (cut + 1, cut + 3, len(client)):
            conv = Conv()
            for piece in (client[:cut], client[cut:second], client[second:]):
                conv.send(C2S, piece)
            conv.send(S2C, server)
            assert [comparable(e) for e in conv.close()] == expected, (cut, second)
            assert conv.session.skipped_bytes == whole.session.skipped_bytes, (cut, second)


def test_malformed_frames_are_counted_not_raised() -> None:
    conv = Conv()
    conv.send(S2C, bytes([0x83, 0x00]))                       # reserved opcode 3
    conv.send(S2C, frame(9, b"x" * 10, fin=False))            # fragmented control frame
    conv.send(S2C, frame(1, b"ok"))
    conv.send(S2C, frame(2, b"more"))
    out = conv.close()
    assert conv.session.malformed >= 1
    assert [e.summary for e in out] == ["← text 2 bytes", "← binary 4 bytes"]


def test_upgrade_map_makes_websocket_sessions() -> None:
    out: list[Exchange] = []
    session = upgrade_session("WebSocket", FLOW, out.append, 0)
    assert isinstance(session, WebSocketSession)
    session.on_data(C2S, cframe(1, b"hi"), 500, 1, (0, 0))
    session.on_close(2)
    assert out[0].summary == "text 2 bytes →" and out[0].client_offset == 500


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.binary(max_size=400))
def test_random_bytes_never_raise(client: bytes, server: bytes) -> None:
    conv = Conv()
    conv.send(C2S, client)
    conv.send(S2C, server)
    conv.close()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutations_never_raise_and_splits_do_not_matter(data: st.DataObject) -> None:
    client, server = conversation()
    client = bytearray(client)
    for _ in range(data.draw(st.integers(0, 3))):
        client[data.draw(st.integers(0, len(client) - 1))] = data.draw(st.integers(0, 255))
    client = bytes(client)
    whole = Conv()
    whole.send(C2S, client)
    whole.send(S2C, server)
    expected = [comparable(e) for e in whole.close()]
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(client) - 1), max_size=5))))
    conv = Conv()
    last = 0
    for cut in [*cuts, len(client)]:
        conv.send(C2S, client[last:cut])
        last = cut
    conv.send(S2C, server)
    assert [comparable(e) for e in conv.close()] == expected


def test_handoff_from_http1_after_101() -> None:
    """The HTTP/1 session hands the connection over after 101; frames in the 101 response's
    segment included. (A client must wait for the 101 before sending frames; bytes sent with
    the request would be read as HTTP by the HTTP/1 session.)"""
    from worker.dissectors.http1 import HttpSession
    out: list[Exchange] = []
    http = HttpSession(FLOW, out.append, 0,
                       upgrade_hook=upgrade_session)
    request = (b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    early = cframe(1, b"sent after the 101...")
    http.on_data(C2S, request, 0, 1, (0, 1))
    http.on_data(S2C, response + frame(1, b"welcome"), 0, 2, (0, 2))
    http.on_data(C2S, early + cframe(8, close_payload(1000)), len(request), 3, (0, 3))
    http.on_data(S2C, frame(8, close_payload(1000)), len(response) + 9, 4, (0, 4))
    http.on_close(5)
    assert [(e.protocol, e.summary) for e in out] == [
        ("http", "GET /chat"), ("websocket", "← text 7 bytes"), ("websocket", "text 21 bytes →"),
        ("websocket", "close 1000 →")]
    assert out[2].client_offset == len(request) and out[1].server_offset == len(response)
    assert out[3].complete and out[3].response["code"] == 1000
