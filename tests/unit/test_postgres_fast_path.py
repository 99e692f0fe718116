"""PostgreSQL's fast path for whole messages in a chunk gives exactly what the general loop
gives.

Every conversation is run twice on the same chunks: with the fast path (`_Reader._whole`) and
with it turned off; the exchanges must be equal field by field (offsets, packet refs, times
included), and the fast path must have taken messages. Pipelined, split, gapped, skipped
(a DataRow longer than what is kept) and SSL-answered streams make the readers switch paths.
"""

from __future__ import annotations

import pytest

from support.sessions import Step, both_paths, comparable
from test_postgres import (READY, SSL_REQUEST, STARTUP_REPLY, SYNC, Conv, bind, complete,
                           data_row, describe, error, execute, msg, parse, query,
                           row_description, startup)
from worker.dissectors import postgres
from worker.dissectors.base import Exchange


BIG = data_row(b"z" * 70_000)       # longer than KEEP_LIMIT: skipped by length
CLIENT = (startup() + query("SELECT 1") + query("SELECT big")
          + parse("SELECT $1", "s1") + bind(b"1", statement="s1") + describe() + execute() + SYNC
          + query("SELECT bad") + query("SELECT 2"))
SERVER = (STARTUP_REPLY
          + row_description("a") + data_row(b"1") + complete("SELECT 1") + READY
          + row_description("b") + BIG + data_row(b"2") + complete("SELECT 2") + READY
          + msg(b"1") + msg(b"2") + row_description("a") + data_row(b"1") + complete("SELECT 1")
          + READY
          + msg(b"N", b"SWARNING\0Mlow\0\0") + error("42P01", "no such table") + READY
          + row_description("x") + data_row(b"2") + complete("SELECT 1") + READY)
ENTRIES = 6


def both(steps: list[Step], body_limit: int = 0) -> tuple[list[Exchange], int]:
    """The exchanges (equal both ways) and the bytes the fast path took."""
    return both_paths(postgres._Reader, lambda: Conv(body_limit=body_limit), steps)


@pytest.mark.parametrize("body_limit", [0, 100])
def test_pipelined_whole_chunks(body_limit: int) -> None:
    out, taken = both([("c", CLIENT), ("s", SERVER)], body_limit)
    assert [ex.summary for ex in out][:2] == ["startup app@shop", "SELECT 1"]
    assert len(out) == ENTRIES
    assert taken > len(CLIENT) + len(SERVER) - len(BIG) - 100
    big = out[2]
    assert big.response["rows"] == 2 and big.response_size > len(BIG)
    assert out[4].response["error"]["code"] == "42P01"
    if body_limit:
        assert out[1].response_body == b"a\n1\n"


def test_whole_chunks_equal_byte_by_byte() -> None:
    client = CLIENT.replace(query("SELECT big"), query("SELECT 3"))
    server = SERVER.replace(BIG, b"")
    whole, _ = both([("c", client), ("s", server)])
    steps: list[Step] = [("c", client[i:i + 1]) for i in range(len(client))]
    steps += [("s", server[i:i + 1]) for i in range(len(server))]
    single, _ = both(steps)      # the fast path takes each message its last byte completes
    assert [comparable(ex) for ex in single] == [comparable(ex) for ex in whole]


def test_a_message_split_across_chunks() -> None:
    whole = [comparable(ex) for ex in both([("c", CLIENT), ("s", SERVER)])[0]]
    server_cuts = [*range(1, 300, 3), *range(len(SERVER) - 400, len(SERVER), 3)]
    for cut in range(1, len(CLIENT), 2):
        s_cut = server_cuts[cut % len(server_cuts)]
        steps: list[Step] = [("c", CLIENT[:cut]), ("c", CLIENT[cut:]),
                             ("s", SERVER[:s_cut]), ("s", SERVER[s_cut:])]
        out, _ = both(steps)
        assert [comparable(ex) for ex in out] == whole, cut


def test_one_message_group_per_chunk() -> None:
    steps: list[Step] = [("c", startup()), ("s", STARTUP_REPLY)]
    for i in range(4):
        steps += [("c", query(f"SELECT {i}")),
                  ("s", row_description("a") + data_row(b"%d" % i) + complete("SELECT 1")
                   + READY)]
    out, taken = both(steps)
    assert taken == sum(len(b) for _, b in steps if isinstance(b, bytes)) - len(startup())
    assert [ex.summary for ex in out] == ["startup app@shop"] + [f"SELECT {i}" for i in range(4)]


@pytest.mark.parametrize("side", ["c", "s"])
def test_a_gap_inside_a_message(side: str) -> None:
    client = CLIENT.replace(query("SELECT big"), query("SELECT 3"))
    server = SERVER.replace(BIG, b"")
    data, other = (client, server) if side == "c" else (server, client)
    other_side = "s" if side == "c" else "c"
    whole = [comparable(ex) for ex in both([("c", client), ("s", server)])[0]]
    for start in range(3, len(data) - 8, 5):
        for length in (1, 7, 30):
            steps: list[Step] = [(side, data[:start]), ("g" + side, length),
                                 (side, data[start + length:]), (other_side, other)]
            out, _ = both(steps)
            assert [comparable(ex) for ex in out] != whole, (start, length)


def test_ssl_answer_byte_before_whole_messages() -> None:
    steps: list[Step] = [("c", SSL_REQUEST), ("s", b"N"), ("c", startup() + query("SELECT 1")),
                         ("s", STARTUP_REPLY + complete("SELECT 1") + READY)]
    out, taken = both(steps)
    assert [ex.summary for ex in out] == ["startup app@shop", "SELECT 1"]
    assert out[0].request["encryption"] == "ssl refused"
    assert taken == len(query("SELECT 1") + STARTUP_REPLY + complete("SELECT 1") + READY)
