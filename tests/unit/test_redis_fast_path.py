"""Redis's fast path for whole messages in a chunk gives exactly what the state machine gives.

Every conversation is run twice on the same chunks: with the fast path (`_Reader._whole`) and
with it turned off (the state machine reads everything); the exchanges must be equal field by
field (offsets, packet refs, times included), and the fast path must have taken messages.
Pipelined, split, gapped and unusual messages make the readers switch between the two paths.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.sessions import Step, both_paths, comparable
from test_redis import Conv, cmd
from worker.dissectors import redis
from worker.dissectors.base import Exchange


CLIENT = (cmd("SET", "k", "v") + cmd("GET", "k") + b"PING\r\n"
          + cmd("MGET", *[f"key{i}" for i in range(10)])          # more children than KEEP
          + cmd("SET", "big", b"a\r\nb" + b"x" * 400)                # CRLF inside, > PREVIEW
          + cmd("HGETALL", "h") + cmd("INCR", "n") + cmd("NOPE") + cmd("GET", "gone")
          + cmd("LRANGE", "l", "0", "-1"))
SERVER = (b"+OK\r\n" + b"$1\r\nv\r\n" + b"+PONG\r\n"
          + b"*10\r\n" + b"$1\r\n1\r\n" * 9 + b"$-1\r\n"               # a null child: slow
          + b"+OK\r\n" + b"%1\r\n$4\r\nname\r\n$3\r\nbob\r\n"           # a map: slow
          + b":42\r\n" + b"-ERR unknown command 'NOPE'\r\n" + b"$-1\r\n"
          + b"*2\r\n$1\r\na\r\n$300\r\n" + b"y" * 300 + b"\r\n")
REQUESTS = 10


def both(steps: list[Step], body_limit: int = 0) -> tuple[list[Exchange], int]:
    """The exchanges (equal both ways) and the bytes the fast path took."""
    return both_paths(redis._Reader, lambda: Conv(body_limit), steps)


@pytest.mark.parametrize("body_limit", [0, 10, 4096])
def test_pipelined_whole_chunks(body_limit: int) -> None:
    out, taken = both([("c", CLIENT), ("s", SERVER)], body_limit)
    assert len(out) == REQUESTS and all(ex.complete for ex in out)
    assert taken > len(CLIENT) // 2
    by_summary = {ex.summary: ex for ex in out}
    assert by_summary["MGET key0"].request["args"] == 10
    assert by_summary["SET big"].request_size == len(cmd("SET", "big", b"a\r\nb" + b"x" * 400))
    assert by_summary["LRANGE l"].response["length"] == 2
    assert by_summary["NOPE"].response["error"] == "ERR unknown command 'NOPE'"
    assert by_summary["HGETALL h"].response["type"] == "map"
    if body_limit:
        assert by_summary["GET k"].request_body == cmd("GET", "k")[:body_limit]


def test_whole_chunks_equal_byte_by_byte() -> None:
    whole, _ = both([("c", CLIENT), ("s", SERVER)])
    steps: list[Step] = [("c", CLIENT[i:i + 1]) for i in range(len(CLIENT))]
    steps += [("s", SERVER[i:i + 1]) for i in range(len(SERVER))]
    single, taken = both(steps)
    assert taken == 0
    assert [comparable(ex) for ex in single] == [comparable(ex) for ex in whole]


def test_a_message_split_across_chunks() -> None:
    whole = [comparable(ex) for ex in both([("c", CLIENT), ("s", SERVER)])[0]]
    for cut in range(1, max(len(CLIENT), len(SERVER)), 3):
        steps: list[Step] = [("c", CLIENT[:cut]), ("c", CLIENT[cut:]),
                             ("s", SERVER[:cut]), ("s", SERVER[cut:])]
        out, _ = both([(k, b) for k, b in steps if b])
        assert [comparable(ex) for ex in out] == whole, cut


def test_one_message_per_chunk_all_fast() -> None:
    requests = [cmd("GET", f"k{i}") for i in range(5)]
    replies = [b"$2\r\nv%d\r\n" % i for i in range(5)]
    steps: list[Step] = []
    for request, reply in zip(requests, replies):
        steps += [("c", request), ("s", reply)]
    out, taken = both(steps)
    assert taken == sum(map(len, requests)) + sum(map(len, replies))
    assert [ex.response["value"] for ex in out] == [f"v{i}" for i in range(5)]


@pytest.mark.parametrize("side", ["c", "s"])
def test_a_gap_inside_a_message(side: str) -> None:
    data = CLIENT if side == "c" else SERVER
    other = SERVER if side == "c" else CLIENT
    other_side = "s" if side == "c" else "c"
    whole = [comparable(ex) for ex in both([("c", CLIENT), ("s", SERVER)])[0]]
    for start in range(3, len(data) - 8, 7):
        for length in (1, 5, 40):
            steps: list[Step] = [(side, data[:start]), ("g" + side, length),
                                 (side, data[start + length:]), (other_side, other)]
            out, _ = both(steps)
            assert [comparable(ex) for ex in out] != whole, (start, length)   # the loss shows


def test_mid_stream_start_then_whole_messages() -> None:
    tail = b"lue-of-a-bulk\r\n"
    for cut in range(1, 30):
        stream = tail + CLIENT
        out, _ = both([("c", stream[:cut]), ("c", stream[cut:]), ("s", SERVER)])
        assert "LRANGE l" in [ex.summary for ex in out], cut


def _round_trip(word: str, limit: int) -> str:
    """What the fields were before the shortcut: every word encoded again and cut by _text."""
    return redis._text(word.encode("utf-8", "replace"), limit)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=300),
                          st.text(max_size=90).map(lambda t: t.encode("utf-8", "surrogatepass")),
                          st.sampled_from([b"\xf0\x9f\x98\x80" * 70, b"\xff" * 200,
                                           b"\xf0\x9f\x98\x80" * 63 + b"\xff" * 4])),
                min_size=1, max_size=6))
def test_arguments_and_key_as_the_round_trip_made_them(values: list[bytes]) -> None:
    """The words of a command (at most PREVIEW bytes each, decoded with replacement) become
    arguments and key without being encoded and decoded again: the same strings, invalid
    UTF-8, 4-byte characters and long words included."""
    words = [v[:redis.PREVIEW].decode("utf-8", "replace") for v in [b"SET", *values]]
    fields = redis._request_fields(words, len(words), False)
    assert fields["arguments"] == [_round_trip(w, redis.ARG_CHARS) for w in words[1:5]]
    assert fields["key"] == _round_trip(words[1], redis.PREVIEW)
    out, taken = both([("c", cmd(b"SET", *values)), ("s", b"+OK\r\n")])
    assert taken and out[0].request == fields
