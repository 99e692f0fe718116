"""MySQL/MariaDB dissector: handshake, commands, result sets, prepared statements, SSL, losses,
driven by session calls on hand-made bytes."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import sessions
from support.sessions import comparable
from worker.dissectors.base import Detect, Direction, FlowInfo
from worker.dissectors.mysql import CLIENT_DEPRECATE_EOF, MysqlDissector, detect

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 3306)
CAPS = 0x000FA68D          # PROTOCOL_41, SECURE_CONNECTION, CONNECT_WITH_DB, PLUGIN_AUTH...


def pkt(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def lenenc(value: bytes) -> bytes:
    return bytes([len(value)]) + value


def greeting(caps: int = CAPS | CLIENT_DEPRECATE_EOF) -> bytes:
    body = (b"\x0a" + b"10.11.6-MariaDB\0" + struct.pack("<I", 77) + b"12345678\0"
            + struct.pack("<H", caps & 0xFFFF) + b"\x21" + struct.pack("<H", 2)
            + struct.pack("<H", caps >> 16) + b"\x15" + b"\0" * 10 + b"123456789012\0"
            + b"mysql_native_password\0")
    return pkt(0, body)


def handshake_response(caps: int = CAPS, user: str = "app", db: str = "shop") -> bytes:
    body = (struct.pack("<IIB", caps, 1 << 24, 33) + b"\0" * 23 + user.encode() + b"\0"
            + lenenc(b"x" * 20) + db.encode() + b"\0" + b"mysql_native_password\0")
    return pkt(1, body)


def ok(seq: int = 1, affected: int = 0, last_id: int = 0, status: int = 2, warnings: int = 0,
       header: int = 0) -> bytes:
    return pkt(seq, bytes([header, affected, last_id]) + struct.pack("<HH", status, warnings))


def err(seq: int, code: int, state: str, message: str) -> bytes:
    return pkt(seq, b"\xff" + struct.pack("<H", code) + b"#" + state.encode() + message.encode())


def eof(seq: int, status: int = 2) -> bytes:
    return pkt(seq, b"\xfe\0\0" + struct.pack("<H", status))


def column(seq: int, name: str) -> bytes:
    return pkt(seq, lenenc(b"def") + lenenc(b"shop") + lenenc(b"t") + lenenc(b"t")
               + lenenc(name.encode()) + lenenc(name.encode()) + b"\x0c" + b"\0" * 12)


def row(seq: int, *values: bytes | None) -> bytes:
    return pkt(seq, b"".join(b"\xfb" if v is None else lenenc(v) for v in values))


def command(code: int, payload: bytes = b"") -> bytes:
    return pkt(0, bytes([code]) + payload)


def query(text: str) -> bytes:
    return command(0x03, text.encode())


def result_set(names: list[str], rows: list[tuple], deprecate_eof: bool = False) -> bytes:
    out = pkt(1, bytes([len(names)]))
    seq = 2
    for name in names:
        out += column(seq, name)
        seq += 1
    if not deprecate_eof:
        out += eof(seq)
        seq += 1
    for values in rows:
        out += row(seq, *values)
        seq += 1
    return out + (ok(seq, header=0xFE) if deprecate_eof else eof(seq))


class Conv(sessions.Conv):
    def __init__(self, body_limit: int = 0) -> None:
        super().__init__(lambda emit: MysqlDissector().session(FLOW, emit, body_limit),
                         timed_gaps=False, close_ts=10 ** 9)


def connected(caps: int = CAPS) -> Conv:
    return Conv().s(greeting()).c(handshake_response(caps)).s(ok(2))


def test_detect() -> None:
    assert detect(b"", greeting()) is Detect.MATCH
    assert detect(handshake_response(), b"") is Detect.MATCH
    assert detect(query("SELECT 1"), b"") is Detect.MATCH                     # mid-connection
    assert detect(b"", err(1, 1146, "42S02", "no table")) is Detect.MATCH
    assert detect(b"", greeting()[:3]) is Detect.MORE
    assert detect(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"") is Detect.NO
    assert detect(b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n") is Detect.NO
    assert detect(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40, b"") is Detect.NO


def test_handshake_and_query() -> None:
    conv = connected()
    conv.c(query("SELECT id, name FROM users"))
    conv.s(result_set(["id", "name"], [(b"1", b"ann"), (b"2", None)]))
    hs, q = conv.close()
    assert hs.summary == "connect app@shop"
    assert hs.request["user"] == "app" and hs.request["database"] == "shop"
    assert hs.response["server_version"] == "10.11.6-MariaDB"
    assert hs.response["connection_id"] == 77 and hs.response["auth_result"] == "ok"
    assert q.summary == "SELECT id, name FROM users" and q.status == 0
    assert q.request == {"command": "COM_QUERY", "query": "SELECT id, name FROM users"}
    assert q.response["rows"] == 2 and q.response["columns"] == ["id", "name"]
    assert q.response["error"] is None and q.complete


def test_deprecate_eof_result_set() -> None:
    conv = connected(CAPS | CLIENT_DEPRECATE_EOF)
    conv.c(query("SELECT a FROM t")).s(result_set(["a"], [(b"1",)] * 3, deprecate_eof=True))
    conv.c(command(0x0E)).s(ok())
    _, q, ping = conv.close()
    assert q.response["rows"] == 3 and q.complete
    assert ping.summary == "COM_PING" and ping.response["error"] is None


def test_ok_and_err() -> None:
    conv = connected()
    conv.c(query("INSERT INTO t VALUES (1)")).s(ok(affected=1, last_id=5, warnings=2))
    conv.c(query("SELECT * FROM nope")).s(err(1, 1146, "42S02", "Table 'shop.nope' doesn't exist"))
    _, ins, bad = conv.close()
    assert ins.response["affected_rows"] == 1 and ins.response["last_insert_id"] == 5
    assert ins.response["warnings"] == 2
    assert bad.response["error"] == {"code": 1146, "state": "42S02",
                                     "message": "Table 'shop.nope' doesn't exist"}
    assert "ERR 1146 (42S02): Table 'shop.nope' doesn't exist" in bad.notes


def test_prepared_statements() -> None:
    conv = connected()
    conv.c(command(0x16, b"SELECT a FROM t WHERE b = ?"))
    conv.s(pkt(1, b"\x00" + struct.pack("<IHHxH", 9, 1, 1, 0)) + column(2, "?") + eof(3)
           + column(4, "a") + eof(5))
    conv.c(command(0x17, struct.pack("<IBIBBHq", 9, 0, 1, 0, 1, 8, 4)))
    conv.s(pkt(1, b"\x01") + column(2, "a") + eof(3) + pkt(4, b"\x00\x00\x01\x02") + eof(5))
    conv.c(command(0x19, struct.pack("<I", 9)))
    conv.c(command(0x17, struct.pack("<I", 9) + b"\0" * 5)).s(err(1, 1243, "HY000", "Unknown"))
    _, prep, execute, close, again = conv.close()
    assert prep.request["query"] == "SELECT a FROM t WHERE b = ?"
    assert prep.response["statement_id"] == 9 and prep.response["params"] == 1
    assert execute.summary == "SELECT a FROM t WHERE b = ?" and execute.response["rows"] == 1
    assert execute.request["statement_id"] == 9 and execute.request["params"] == 1
    assert close.summary == "COM_STMT_CLOSE 9" and close.response is None and close.complete
    assert again.summary == "COM_STMT_EXECUTE 9 (statement not captured)"


def test_multiple_result_sets() -> None:
    conv = connected()
    conv.c(query("SELECT 1; UPDATE t SET a = 1"))
    conv.s(pkt(1, b"\x01") + column(2, "1") + eof(3) + row(4, b"1") + eof(5, status=0x0A)
           + ok(6, affected=4))
    _, q = conv.close()
    assert q.response["rows"] == 1 and q.response["affected_rows"] == 4 and q.complete


def test_ssl_request_ends_dissection() -> None:
    conv = Conv().s(greeting())
    conv.c(pkt(1, struct.pack("<IIB", CAPS | 0x800, 1 << 24, 33) + b"\0" * 23))
    conv.c(b"\x16\x03\x01\x00\x05hello").s(b"\x16\x03\x03\x00\x02hi")
    (only,) = conv.close()
    assert only.summary == "SSL request: TLS follows" and only.request["ssl"] is True
    assert "encrypted from here on: not dissected" in only.notes


def test_auth_failure() -> None:
    conv = Conv().s(greeting()).c(handshake_response())
    conv.s(err(2, 1045, "28000", "Access denied for user 'app'"))
    (only,) = conv.close()
    assert only.response["auth_result"] == "failed"
    assert only.response["error"]["code"] == 1045


def test_split_at_every_byte() -> None:
    client = greeting()
    whole = connected().c(query("SELECT a FROM t")).s(result_set(["a"], [(b"1",), (b"2",)])).close()
    server = greeting()
    for cut in range(1, len(client)):
        conv = Conv().s(server[:cut]).s(server[cut:]).c(handshake_response()).s(ok(2))
        data = query("SELECT a FROM t")
        c = cut % len(data)
        conv.c(data[:c]).c(data[c:])
        resp = result_set(["a"], [(b"1",), (b"2",)])
        r = cut % len(resp)
        conv.s(resp[:r]).s(resp[r:])
        assert [comparable(e) for e in conv.close()] == [comparable(e) for e in whole]


def test_mid_stream_start_and_orphans() -> None:
    conv = Conv()
    conv.s(b"\x05\x00\x00\x07abcde" + eof(8))           # the tail of an earlier result set
    conv.s(ok(1, affected=3))                             # answers a request not captured
    conv.c(query("SELECT 1")).s(result_set(["1"], [(b"1",)]))
    out = conv.close()
    assert [e.summary for e in out] == ["OK (request not captured)", "SELECT 1"]
    assert out[1].response["rows"] == 1 and out[1].complete


def test_gaps() -> None:
    conv = connected()
    conv.c(query("SELECT 1")).s(result_set(["1"], [(b"1",)]))
    conv.gap(C2S, 40).s(ok(1, affected=2))
    conv.c(query("SELECT 2")).s(result_set(["2"], [(b"2",)]))
    out = conv.close()
    assert [e.summary for e in out[1:]] == ["SELECT 1", "OK (request lost in a gap)", "SELECT 2"]
    conv = connected()
    conv.c(query("SELECT big")).s(pkt(1, b"\x01") + column(2, "x")).gap(S2C, 500)
    conv.c(query("SELECT 2")).s(result_set(["2"], [(b"2",)]))
    _, cut, after = conv.close()
    assert not cut.complete and "response lost in a gap" in cut.notes
    assert after.summary == "SELECT 2" and after.response["rows"] == 1 and after.complete


def test_big_row_skipped_and_body() -> None:
    conv = Conv(body_limit=64)
    conv.s(greeting()).c(handshake_response()).s(ok(2))
    conv.c(query("SELECT a FROM t"))
    conv.s(result_set(["a"], [(b"x" * 200,), (None,)]))
    _, q = conv.close()
    assert q.response["rows"] == 2
    assert q.response_body is not None and q.response_body.startswith(b"a\nxxx")


def test_no_response_at_close() -> None:
    conv = connected()
    conv.c(query("SELECT SLEEP(100)"))
    _, q = conv.close()
    assert q.response is None and not q.complete and "no response" in q.notes


def _run(chunks: list[tuple[int, bytes]]) -> list[dict]:
    conv = Conv()
    for direction, data in chunks:
        conv.send(Direction(direction), data)
    return [comparable(e) for e in conv.close()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=64)), max_size=12))
def test_random_bytes_never_raise(chunks: list[tuple[int, bytes]]) -> None:
    _run(chunks)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 200), max_size=4), st.lists(st.integers(1, 200), max_size=4))
def test_splitting_does_not_change_the_result(cuts_c: list[int], cuts_s: list[int]) -> None:
    """Per direction splits, with the same order of turns (the protocol is lockstep)."""
    turns = [(1, greeting()), (0, handshake_response()), (1, ok(2)), (0, query("SELECT a")),
             (1, result_set(["a"], [(b"1",), (b"2",)])), (0, command(0x0E)), (1, ok())]

    def split(direction: int, data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
        points = [0, *sorted({c for c in cuts if c < len(data)}), len(data)]
        return [(direction, data[a:b]) for a, b in zip(points, points[1:])]
    whole = _run(turns)
    pieces: list[tuple[int, bytes]] = []
    for direction, data in turns:
        pieces += split(direction, data, cuts_c if direction == 0 else cuts_s)
    assert _run(pieces) == whole and len(whole) == 3


def test_a_gap_in_the_last_packet_of_a_result_leaves_the_next_query_answered() -> None:
    # The rest of a packet cut by a gap arrives as its own chunk: a few bytes that no detector
    # refutes must not be taken for a header whose length swallows the next response.
    result = result_set(["a", "b"], [(b"1", b"x"), (b"2", None), (b"3", b"z")])
    for start in range(len(result) - 12, len(result) - 1):
        for lost in (1, 2, 3):
            conv = connected()
            conv.c(query("SELECT a, b FROM t")).s(result[:start]).gap(S2C, lost)
            if start + lost < len(result):
                conv.s(result[start + lost:])
            conv.c(query("SELECT 2")).s(result_set(["2"], [(b"2",)]))
            _, cut, after = conv.close()
            assert not cut.complete and "response lost in a gap" in cut.notes, (start, lost)
            assert after.summary == "SELECT 2" and after.complete, (start, lost, after.notes)
            assert after.response["rows"] == 1, (start, lost)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", ";", "'", " ", "  ", "   ", "\t", "\n", "\xa0", "\u2028",
                                 "\x1f", "\x85", "\u3000", "é"]) | st.characters(),
                max_size=30).map("".join))
def test_one_line_is_the_words_joined_by_one_space(text: str) -> None:
    """mysql's and postgres's _one_line (their summaries) are " ".join(text.split())."""
    from worker.dissectors import mysql, postgres
    assert mysql._one_line(text) == " ".join(text.split())
    assert postgres._one_line(text) == " ".join(text.split())
