"""MySQL packets that lie whole in a chunk are framed without a lookup in the reader's marks:
where each exchange's bytes came from (times, packet refs, offsets) must be what the marks
say however the bytes were chunked: pipelined whole, split, one byte at a time, gapped."""

from __future__ import annotations

from support.sessions import C2S, S2C, comparable
from test_mysql import Conv, connected, greeting, handshake_response, ok, query, result_set
from worker.dissectors.base import Exchange

RESULT = result_set(["a", "b"], [(b"1", b"x"), (b"2", None), (b"3", b"z")])


def test_split_request_and_response_keep_their_first_and_last_chunk() -> None:
    conv = connected()
    request = query("SELECT a, b FROM t")
    first = conv.send(C2S, request[:7])
    conv.send(C2S, request[7:])
    answer_first = conv.send(S2C, RESULT[:30])
    last = conv.send(S2C, RESULT[30:])
    _, ex = conv.close()
    assert ex.start_ns == 1000 * first and ex.first_ref == (7, first)
    assert ex.end_ns == 1000 * last and ex.last_ref == (7, last)
    assert ex.response["rows"] == 3 and ex.complete
    assert ex.server_offset is not None and ex.response_size == len(RESULT)
    assert answer_first < last


def test_whole_chunks_equal_byte_by_byte() -> None:
    def run(step: int) -> list[Exchange]:
        conv = Conv()
        for direction, data in ((S2C, greeting()), (C2S, handshake_response()), (S2C, ok(2)),
                                (C2S, query("SELECT a, b FROM t")), (S2C, RESULT)):
            for i in range(0, len(data), step):
                conv.send(direction, data[i:i + step])
        return conv.close()
    whole = run(1 << 20)
    for step in (1, 2, 5, 13):
        assert [comparable(ex) for ex in run(step)] == [comparable(ex) for ex in whole], step


def test_each_exchange_starts_in_its_own_chunk_when_pipelined() -> None:
    conv = connected()
    n1 = conv.send(C2S, query("SELECT 1"))
    r1 = conv.send(S2C, result_set(["1"], [(b"1",)]) + b"")
    tail = result_set(["2"], [(b"2",)])
    n2 = conv.send(C2S, query("SELECT 2"))
    r2a = conv.send(S2C, tail[:5])
    r2b = conv.send(S2C, tail[5:])
    _, one, two = conv.close()
    assert (one.first_ref, one.last_ref) == ((7, n1), (7, r1))
    assert (two.first_ref, two.last_ref, two.end_ns) == ((7, n2), (7, r2b), 1000 * r2b)
    assert r2a < r2b


def test_a_gap_inside_a_packet() -> None:
    request = query("SELECT a, b FROM t")
    for start in range(1, len(RESULT) - 2, 4):
        conv = connected()
        sent = conv.send(C2S, request)
        answer = conv.send(S2C, RESULT[:start])
        conv.gap(S2C, 2)
        conv.s(RESULT[start + 2:])
        out = conv.close()
        cut = out[1]
        assert not cut.complete and "response lost in a gap" in cut.notes, start
        assert cut.first_ref == (7, sent), start
        if start >= 4:                    # the first packet's header came whole
            assert cut.last_ref[1] >= answer, start
