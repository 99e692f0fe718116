"""PostgreSQL dissector: startup, simple and extended queries, errors, SSL, losses, driven by
session calls on hand-made bytes."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import sessions
from support.sessions import comparable
from worker.dissectors.base import Detect, Direction, FlowInfo
from worker.dissectors.postgres import PostgresDissector, detect

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 5432)


def msg(t: bytes, body: bytes = b"") -> bytes:
    return t + struct.pack("!I", 4 + len(body)) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def startup(user: str = "app", database: str = "shop") -> bytes:
    body = struct.pack("!I", 196608) + cstr("user") + cstr(user) + cstr("database") + \
        cstr(database) + cstr("application_name") + cstr("web") + b"\0"
    return struct.pack("!I", 4 + len(body)) + body


SSL_REQUEST = struct.pack("!II", 8, 80877103)
AUTH_OK = msg(b"R", struct.pack("!I", 0))
READY = msg(b"Z", b"I")
STARTUP_REPLY = (msg(b"R", struct.pack("!I", 5) + b"salt") + AUTH_OK
                 + msg(b"S", cstr("server_version") + cstr("15.2"))
                 + msg(b"K", struct.pack("!II", 42, 7)) + READY)


def query(text: str) -> bytes:
    return msg(b"Q", cstr(text))


def row_description(*names: str) -> bytes:
    body = struct.pack("!H", len(names))
    for name in names:
        body += cstr(name) + struct.pack("!IHIhih", 0, 0, 23, 4, -1, 0)
    return msg(b"T", body)


def data_row(*values: bytes | None) -> bytes:
    body = struct.pack("!H", len(values))
    for value in values:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    return msg(b"D", body)


def complete(tag: str) -> bytes:
    return msg(b"C", cstr(tag))


def error(code: str, message: str, severity: str = "ERROR") -> bytes:
    return msg(b"E", b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(code)
               + b"M" + cstr(message) + b"\0")


def parse(text: str, name: str = "") -> bytes:
    return msg(b"P", cstr(name) + cstr(text) + struct.pack("!H", 0))


def bind(*params: bytes, statement: str = "", portal: str = "") -> bytes:
    body = cstr(portal) + cstr(statement) + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p
    return msg(b"B", body + struct.pack("!H", 0))


def describe(portal: str = "") -> bytes:
    return msg(b"D", b"P" + cstr(portal))


def execute(portal: str = "") -> bytes:
    return msg(b"E", cstr(portal) + struct.pack("!I", 0))


SYNC = msg(b"S")


class Conv(sessions.Conv):
    def __init__(self, body_limit: int = 0) -> None:
        super().__init__(lambda emit: PostgresDissector().session(FLOW, emit, body_limit),
                         timed_gaps=False, close_ts=10 ** 9)


def test_detect() -> None:
    assert detect(startup(), b"") is Detect.MATCH
    assert detect(SSL_REQUEST, b"") is Detect.MATCH
    assert detect(startup()[:6], b"") is Detect.MORE
    assert detect(query("SELECT 1"), b"") is Detect.MATCH                 # mid-connection
    assert detect(b"", complete("SELECT 1") + READY) is Detect.MATCH
    assert detect(b"", b"xyz" + data_row(b"1") + complete("SELECT 1") + READY) is Detect.MATCH
    assert detect(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"") is Detect.NO
    assert detect(b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n") is Detect.NO
    assert detect(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"") is Detect.NO


def test_startup_and_simple_query() -> None:
    conv = Conv()
    conv.c(startup()).s(STARTUP_REPLY[:13]).c(msg(b"p", cstr("md5abc"))).s(STARTUP_REPLY[13:])
    conv.c(query("SELECT id, name FROM users"))
    conv.s(row_description("id", "name") + data_row(b"1", b"ann") + data_row(b"2", None)
           + complete("SELECT 2") + READY)
    first, second = conv.close()
    assert first.summary == "startup app@shop"
    assert first.request["user"] == "app" and first.request["application_name"] == "web"
    assert first.response["auth_method"] == "md5" and first.response["auth_result"] == "ok"
    assert first.response["server_version"] == "15.2" and first.response["backend_pid"] == 42
    assert first.request_size == len(startup()) + len(msg(b"p", cstr("md5abc")))
    assert second.summary == "SELECT id, name FROM users" and second.status == 0
    assert second.request == {"kind": "simple", "query": "SELECT id, name FROM users"}
    assert second.response["rows"] == 2 and second.response["command_tag"] == "SELECT 2"
    assert second.response["columns"] == ["id", "name"] and second.response["error"] is None
    assert second.complete and second.client_offset == len(startup()) + 12


def test_extended_pipelined_and_named_statements() -> None:
    conv = Conv()
    conv.c(parse("SELECT * FROM orders WHERE id = $1") + bind(b"7") + describe() + execute()
           + parse("INSERT INTO t VALUES ($1)", name="ins") + bind(b"x", statement="ins")
           + execute() + bind(b"y", statement="ins") + execute() + SYNC)
    conv.s(msg(b"1") + msg(b"2") + row_description("id") + data_row(b"7") + complete("SELECT 1")
           + msg(b"1") + msg(b"2") + complete("INSERT 0 1") + msg(b"2") + complete("INSERT 0 1")
           + READY)
    out = conv.close()
    assert [e.summary for e in out] == ["SELECT * FROM orders WHERE id = $1",
                                        "INSERT INTO t VALUES ($1)", "INSERT INTO t VALUES ($1)"]
    assert out[0].request == {"kind": "extended", "query": "SELECT * FROM orders WHERE id = $1",
                              "statement": "", "params": 1, "execute": True}
    assert out[0].response["rows"] == 1
    assert [e.response["command_tag"] for e in out[1:]] == ["INSERT 0 1", "INSERT 0 1"]
    assert out[2].request["statement"] == "ins" and all(e.complete for e in out)


def test_extended_error_skips_to_sync() -> None:
    conv = Conv()
    conv.c(parse("INSERT INTO t VALUES ($1)") + bind(b"1") + execute()
           + parse("SELECT 2") + bind() + execute() + SYNC + query("SELECT 3"))
    conv.s(msg(b"1") + msg(b"2") + error("23505", "duplicate key") + READY
           + row_description("x") + data_row(b"3") + complete("SELECT 1") + READY)
    first, second, third = conv.close()
    assert first.response["error"] == {"severity": "ERROR", "code": "23505",
                                       "message": "duplicate key"}
    assert "ERROR 23505: duplicate key" in first.notes
    assert second.response is None and "not executed: an earlier message failed" in second.notes
    assert third.response["rows"] == 1 and third.response["error"] is None


def test_ssl_accepted_ends_dissection() -> None:
    conv = Conv()
    conv.c(SSL_REQUEST).s(b"S").c(b"\x16\x03\x01\x00\x05hello").s(b"\x16\x03\x03garbage")
    (only,) = conv.close()
    assert only.summary == "SSLRequest: TLS follows"
    assert only.response == {"error": None, "encryption": "accepted"}
    assert only.complete and only.request_size == 8 and only.response_size == 1


def test_ssl_refused_goes_on_in_plaintext() -> None:
    conv = Conv()
    conv.c(SSL_REQUEST).s(b"N").c(startup()).s(STARTUP_REPLY)
    (only,) = conv.close()
    assert only.summary == "startup app@shop" and only.request["encryption"] == "ssl refused"


def test_split_at_every_byte() -> None:
    client = parse("SELECT $1") + bind(b"1") + describe() + execute() + SYNC
    server = msg(b"1") + msg(b"2") + row_description("a") + data_row(b"1") + \
        complete("SELECT 1") + READY
    whole = Conv().c(client).s(server).close()
    for cut in range(1, len(client)):
        conv = Conv().c(client[:cut]).c(client[cut:])
        conv.s(server[:cut % len(server)]).s(server[cut % len(server):])
        assert [comparable(e) for e in conv.close()] == [comparable(e) for e in whole]


def test_mid_stream_start_and_orphans() -> None:
    conv = Conv()
    # the tail of a DataRow, then the end of a response nobody saw the request of
    conv.s(b"\x00\x03abc" + data_row(b"9") + complete("SELECT 5") + READY)
    conv.c(query("SELECT 1")).s(row_description("x") + data_row(b"1") + complete("SELECT 1")
                                + READY)
    orphan, known = conv.close()
    assert orphan.summary == "SELECT 5 (request not captured)" and not orphan.complete
    assert known.summary == "SELECT 1" and known.complete and known.response["rows"] == 1


def test_gaps() -> None:
    conv = Conv()
    conv.c(query("SELECT 1")).gap(C2S, 30).c(query("SELECT 2"))
    conv.s(complete("SELECT 1") + READY + complete("UPDATE 3") + READY + complete("SELECT 1")
           + READY)
    out = conv.close()
    assert [e.summary for e in out] == ["SELECT 1", "UPDATE 3 (request lost in a gap)",
                                        "SELECT 2"]
    conv = Conv()
    conv.c(query("SELECT 1") + query("SELECT 2"))
    conv.s(row_description("x")).gap(S2C, 50).s(complete("SELECT 2") + READY)
    conv.s(complete("SELECT 9") + READY)
    first, second = conv.close()
    assert not first.complete and "response lost in a gap" in first.notes
    assert second.response["command_tag"] == "SELECT 9"


def test_gap_inside_a_skipped_row_keeps_sync() -> None:
    big = data_row(b"x" * 5000)
    conv = Conv()
    conv.c(query("SELECT big"))
    conv.s(row_description("b") + big[:100]).gap(S2C, 4000)
    conv.s(big[4100:] + complete("SELECT 1") + READY)
    (only,) = conv.close()
    assert only.response["rows"] == 1 and not only.complete


def test_notice_and_notification() -> None:
    conv = Conv()
    conv.c(query("NOTIFY ch"))
    conv.s(msg(b"N", b"SWARNING\0Mlow stock\0\0") + complete("NOTIFY")
           + msg(b"A", struct.pack("!I", 5) + cstr("ch") + cstr("hello")) + READY)
    out = conv.close()
    by_kind = {e.request["kind"]: e for e in out}
    assert by_kind["notification"].request["payload"] == "hello"
    assert by_kind["simple"].response["notices"] == ["WARNING: low stock"]


def test_body_limit_keeps_rows() -> None:
    conv = Conv(body_limit=100)
    conv.c(query("SELECT a, b FROM t"))
    conv.s(row_description("a", "b") + data_row(b"1", b"x") + data_row(None, b"y")
           + complete("SELECT 2") + READY)
    (only,) = conv.close()
    assert only.response_body == b"a\tb\n1\tx\nNULL\ty\n"


def test_no_response_at_close() -> None:
    conv = Conv()
    conv.c(query("SELECT pg_sleep(100)"))
    (only,) = conv.close()
    assert only.response is None and not only.complete and "no response" in only.notes


def test_malformed_length_resyncs() -> None:
    conv = Conv()
    conv.c(query("SELECT 0") + b"Q\xff\xff\xff\xff junk" + query("SELECT 1"))
    conv.s(complete("SELECT 0") + READY + error("08P01", "invalid message") + READY
           + complete("SELECT 1") + READY)
    out = conv.close()
    assert [e.summary for e in out] == [
        "SELECT 0", "invalid message (request could not be parsed)", "SELECT 1"]
    assert out[-1].response["command_tag"] == "SELECT 1" and out[-1].complete


def _run(chunks: list[tuple[int, bytes]]) -> list[dict]:
    conv = Conv()
    for direction, data in chunks:
        conv.send(Direction(direction), data)
    return [comparable(e) for e in conv.close()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=64)), max_size=12))
def test_random_bytes_never_raise(chunks: list[tuple[int, bytes]]) -> None:
    _run(chunks)


STREAM_C = (startup() + query("SELECT 1") + parse("SELECT $1", "s1") + bind(b"1", statement="s1")
            + describe() + execute() + SYNC)
STREAM_S = (STARTUP_REPLY + row_description("a") + data_row(b"1") + complete("SELECT 1") + READY
            + msg(b"1") + msg(b"2") + row_description("a") + data_row(b"1") + complete("SELECT 1")
            + READY)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, len(STREAM_C) - 1), max_size=6),
       st.lists(st.integers(1, len(STREAM_S) - 1), max_size=6))
def test_splitting_does_not_change_the_result(cuts_c: list[int], cuts_s: list[int]) -> None:
    def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
        points = [0, *sorted(set(cuts)), len(data)]
        return [data[a:b] for a, b in zip(points, points[1:])]
    whole = _run([(0, STREAM_C), (1, STREAM_S)])
    split = _run([(0, p) for p in pieces(STREAM_C, cuts_c)] + [(1, p) for p in pieces(STREAM_S, cuts_s)])
    assert split == whole and len(whole) == 3
