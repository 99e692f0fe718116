"""Redis dissector: RESP2/RESP3 parsing, pairing, pub/sub, losses, driven by session calls."""

from __future__ import annotations


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import sessions
from support.sessions import comparable
from worker.dissectors.base import Detect, Direction, Exchange, FlowInfo
from worker.dissectors.redis import RedisDissector, detect, secret_arguments

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 6379)


class Conv(sessions.Conv):
    def __init__(self, body_limit: int = 0) -> None:
        super().__init__(lambda emit: RedisDissector().session(FLOW, emit, body_limit))


def cmd(*args: str | bytes) -> bytes:
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def run(client: bytes, server: bytes, body_limit: int = 0) -> list[Exchange]:
    conv = Conv(body_limit)
    conv.c(client)
    conv.s(server)
    return conv.close()


# -- requests ------------------------------------------------------------------------------

def test_get_pairs_with_bulk_reply() -> None:
    conv = Conv()
    conv.c(cmd("GET", "user:42"))
    conv.s(b"$5\r\nalice\r\n")
    (ex,) = conv.close()
    assert ex.summary == "GET user:42"
    assert ex.request == {"command": "GET", "key": "user:42", "args": 1,
                          "arguments": ["user:42"], "inline": False}
    assert ex.response == {"type": "bulk_string", "value": "alice", "error": None, "length": 5}
    assert ex.status == 0 and ex.complete
    assert (ex.start_ns, ex.end_ns, ex.first_ref, ex.last_ref) == (1000, 2000, (7, 1), (7, 2))
    assert (ex.request_size, ex.response_size) == (len(cmd("GET", "user:42")), 11)
    assert (ex.client_offset, ex.server_offset) == (0, 0)


@pytest.mark.parametrize("args, command, key, summary", [
    (("CLIENT", "setname", "web"), "CLIENT SETNAME", None, "CLIENT SETNAME web"),
    (("config", "get", "maxmemory"), "CONFIG GET", None, "CONFIG GET maxmemory"),
    (("OBJECT", "ENCODING", "k1"), "OBJECT ENCODING", "k1", "OBJECT ENCODING k1"),
    (("EVAL", "return 1", "1", "k1"), "EVAL", "k1", "EVAL k1"),
    (("EVAL", "return 1", "0"), "EVAL", None, "EVAL return 1"),
    (("XREAD", "COUNT", "2", "STREAMS", "s1", "0"), "XREAD", "s1", "XREAD s1"),
    (("PING",), "PING", None, "PING"),
    (("PUBLISH", "news", "hi"), "PUBLISH", None, "PUBLISH news"),
    (("ZUNION", "2", "a", "b"), "ZUNION", "a", "ZUNION a"),
    (("del", "a", "b", "c"), "DEL", "a", "DEL a"),
])
def test_command_and_key(args: tuple[str, ...], command: str, key: str | None,
                         summary: str) -> None:
    (ex,) = run(cmd(*args), b"+OK\r\n")
    assert (ex.request["command"], ex.request["key"], ex.summary) == (command, key, summary)


def test_passwords_are_found_for_redaction() -> None:
    """The dissector shows what was sent and says where the credentials are; the worker's
    redaction hides them (tests/unit/test_redact.py)."""
    out = run(cmd("AUTH", "user", "s3cret") + cmd("HELLO", "3", "AUTH", "u", "pw")
              + cmd("CONFIG", "SET", "requirepass", "pw2"), b"+OK\r\n%0\r\n+OK\r\n")
    where = [secret_arguments(ex.request["command"], ex.request["arguments"]) for ex in out]
    assert [[ex.request["arguments"][i] for i in at] for ex, at in zip(out, where)] == [
        ["user", "s3cret"], ["u", "pw"], ["pw2"]]
    # MIGRATE's AUTH comes after 5 arguments, beyond the 4 shown, but would be found
    assert secret_arguments("MIGRATE", ["h", "AUTH2", "u", "pw3"]) == [2, 3]
    assert secret_arguments("GET", ["AUTH", "x"]) == []


def test_arguments_preview_is_short() -> None:
    (ex,) = run(cmd("SET", "k", "v" * 5000, "EX", "10", "NX"), b"+OK\r\n")
    assert ex.request["args"] == 5
    assert ex.request["arguments"][1] == "v" * 61 + "..."
    assert len(ex.request["arguments"]) == 4


def test_inline_commands() -> None:
    out = run(b"PING\r\n\r\nSET a  b\r\n", b"+PONG\r\n+OK\r\n")
    assert [ex.summary for ex in out] == ["PING", "SET a"]
    assert out[1].request == {"command": "SET", "key": "a", "args": 2, "arguments": ["a", "b"],
                              "inline": True}


# -- replies -------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, fields", [
    (b"+OK\r\n", {"type": "simple_string", "value": "OK", "error": None, "length": 2}),
    (b"-ERR wrong\r\n", {"type": "error", "value": "ERR wrong", "error": "ERR wrong",
                         "length": 9}),
    (b":-42\r\n", {"type": "integer", "value": -42, "error": None, "length": None}),
    (b"$-1\r\n", {"type": "null", "value": None, "error": None, "length": None}),
    (b"*-1\r\n", {"type": "null", "value": None, "error": None, "length": None}),
    (b"$0\r\n\r\n", {"type": "bulk_string", "value": "", "error": None, "length": 0}),
    (b"*2\r\n$1\r\na\r\n:1\r\n", {"type": "array", "value": "[a, 1]", "error": None,
                                  "length": 2}),
    (b"*0\r\n", {"type": "array", "value": "[]", "error": None, "length": 0}),
    (b"_\r\n", {"type": "null", "value": None, "error": None, "length": None}),
    (b",3.25\r\n", {"type": "double", "value": 3.25, "error": None, "length": None}),
    (b",inf\r\n", {"type": "double", "value": "inf", "error": None, "length": None}),
    (b"#t\r\n", {"type": "boolean", "value": True, "error": None, "length": None}),
    (b"(3492890328409238509324850943850943825024385\r\n",
     {"type": "big_number", "value": "3492890328409238509324850943850943825024385",
      "error": None, "length": 43}),
    (b"!21\r\nSYNTAX invalid syntax\r\n", {"type": "blob_error", "value": "SYNTAX invalid syntax",
                                          "error": "SYNTAX invalid syntax", "length": 21}),
    (b"=15\r\ntxt:Some string\r\n", {"type": "verbatim", "value": "Some string",
                                     "error": None, "length": 15}),
    (b"%2\r\n+first\r\n:1\r\n+second\r\n#f\r\n",
     {"type": "map", "value": "{first: 1, second: false}", "error": None, "length": 2}),
    (b"~2\r\n+a\r\n+b\r\n", {"type": "set", "value": "[a, b]", "error": None, "length": 2}),
    (b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2\r\n",
     {"type": "array", "value": "[2]", "error": None, "length": 1, "attributes": 1}),
])
def test_reply_types(reply: bytes, fields: dict) -> None:
    (ex,) = run(cmd("X", "k"), reply)
    assert ex.response == fields
    assert ex.response_size == len(reply) and ex.complete


def test_nested_and_long_aggregates_are_previewed() -> None:
    reply = b"*100\r\n" + b"*2\r\n$3\r\nabc\r\n:7\r\n" * 100
    (ex,) = run(cmd("SCAN", "0"), reply)
    assert ex.response["length"] == 100
    assert ex.response["value"].startswith("[[abc, 7], [abc, 7]") and \
        ex.response["value"].endswith("...]")
    assert len(ex.response["value"]) < 130


def test_big_bulk_reply_is_skipped_not_kept() -> None:
    conv = Conv()
    conv.c(cmd("GET", "big"))
    payload = b"x" * 1_000_000
    whole = b"$%d\r\n" % len(payload) + payload + b"\r\n"
    for i in range(0, len(whole), 1400):
        conv.s(whole[i:i + 1400])
    (ex,) = conv.close()
    assert ex.response["length"] == 1_000_000 and len(ex.response["value"]) == 100
    assert ex.response_size == len(whole) and ex.request_body is None


def test_body_limit_keeps_raw_messages() -> None:
    (ex,) = run(cmd("SET", "k", "v" * 100), b"+OK\r\n", body_limit=32)
    assert ex.request_body == cmd("SET", "k", "v" * 100)[:32]
    assert ex.response_body == b"+OK\r\n"


# -- pairing -------------------------------------------------------------------------------

def test_pipeline_pairs_in_order() -> None:
    client = b"".join(cmd("SET", f"k{n}", str(n)) for n in range(10)) + cmd("GET", "k3")
    server = b"+OK\r\n" * 10 + b"$1\r\n3\r\n"
    out = run(client, server)
    assert [ex.summary for ex in out] == [f"SET k{n}" for n in range(10)] + ["GET k3"]
    assert out[-1].response["value"] == "3"


def test_multi_exec() -> None:
    client = cmd("MULTI") + cmd("INCR", "c") + cmd("GET", "k") + cmd("EXEC")
    server = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n$1\r\nv\r\n"
    out = run(client, server)
    assert [(ex.summary, ex.response["value"]) for ex in out] == [
        ("MULTI", "OK"), ("INCR c", "QUEUED"), ("GET k", "QUEUED"), ("EXEC", "[1, v]")]
    assert out[-1].response["length"] == 2


def test_resp2_pubsub() -> None:
    conv = Conv()
    conv.c(cmd("SUBSCRIBE", "a", "b"))
    conv.s(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
    conv.s(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n")
    conv.s(b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$2\r\nnx\r\n$2\r\nyo\r\n")
    conv.c(cmd("PING"))
    conv.s(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
    conv.c(cmd("UNSUBSCRIBE"))
    conv.s(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n"
           b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n")
    out = conv.close()
    assert [ex.summary for ex in out] == ["SUBSCRIBE a", "message a", "pmessage nx", "PING",
                                          "UNSUBSCRIBE"]
    assert out[0].response["confirmations"] == 2 and out[0].complete
    assert out[1].request == {} and out[1].response["kind"] == "message"
    assert out[2].response["pattern"] == "n*" and out[2].response["channel"] == "nx"
    assert out[3].response["value"] == "[pong, ]"
    assert out[4].response["confirmations"] == 2
    assert all(ex.complete for ex in out)


def test_resp3_push_between_replies() -> None:
    conv = Conv()
    conv.c(cmd("GET", "a"))
    conv.s(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n")
    conv.s(b"$1\r\n1\r\n")
    out = conv.close()
    assert [ex.summary for ex in out] == ["invalidate", "GET a"]
    assert out[0].response["type"] == "push" and out[0].response["kind"] == "invalidate"
    assert out[1].response["value"] == "1"


def test_reply_without_request_is_lone() -> None:
    (ex,) = run(b"", b"+OK\r\n")
    assert ex.request == {} and ex.notes == ["request not captured"]
    assert ex.summary == "simple_string reply"


def test_monitor_stream_is_lone_entries() -> None:
    out = run(cmd("MONITOR"), b"+OK\r\n+1700000000.1 [0 1.2.3.4:5] \"GET\" \"k\"\r\n")
    assert [ex.summary for ex in out] == ["MONITOR", 'monitor 1700000000.1 [0 1.2.3.4:5] "GET" "k"']
    assert out[1].request == {} and out[1].response["kind"] == "monitor" and not out[1].notes


def test_unanswered_request_at_close() -> None:
    conv = Conv()
    conv.c(cmd("BLPOP", "q", "0"))
    (ex,) = conv.close()
    assert ex.response is None and not ex.complete and ex.notes == ["no response"]


# -- splits, losses, garbage ---------------------------------------------------------------

def test_every_split_gives_the_same_result() -> None:
    client = cmd("HGETALL", "h") + b"PING\r\n" + cmd("GET", "x")
    server = b"|1\r\n+a\r\n:1\r\n%1\r\n$4\r\nname\r\n$3\r\nbob\r\n+PONG\r\n$-1\r\n"
    whole = [comparable(ex) for ex in run(client, server)]
    for cut in range(1, max(len(client), len(server))):
        conv = Conv()
        for part in (client[:cut], client[cut:]):
            if part:
                conv.c(part)
        for part in (server[:cut], server[cut:]):
            if part:
                conv.s(part)
        assert [comparable(ex) for ex in conv.close()] == whole, cut


def test_byte_by_byte() -> None:
    client = cmd("SET", "k", "v") + cmd("GET", "k")
    server = b"+OK\r\n$1\r\nv\r\n"
    conv = Conv()
    for i in range(len(client)):
        conv.c(client[i:i + 1])
    for i in range(len(server)):
        conv.s(server[i:i + 1])
    out = conv.close()
    assert [comparable(ex) for ex in out] == [comparable(ex) for ex in run(client, server)]


def test_client_gap_resyncs_on_next_array() -> None:
    conv = Conv()
    conv.c(cmd("SET", "a", "1")[:12])
    conv.gap(C2S, 20)
    conv.c(b"ue\r\n" + cmd("GET", "b"))
    conv.s(b"+OK\r\n$1\r\n2\r\n")
    out = conv.close()
    assert out[0].summary == "SET" and not out[0].complete
    assert "gap in request" in out[0].notes
    assert out[1].summary == "GET b" and out[1].complete


def test_server_gap_loses_waiting_requests_and_resyncs() -> None:
    conv = Conv()
    conv.c(cmd("GET", "a") + cmd("GET", "b"))
    conv.s(b"$3\r\nab")
    conv.gap(S2C, 100)
    conv.s(b"c\r\n$1\r\nx\r\n")           # the tail of a lost reply: skipped
    conv.c(cmd("GET", "c"))
    conv.s(b"$1\r\nz\r\n")
    out = conv.close()
    assert [(ex.summary, ex.complete) for ex in out] == [
        ("GET a", False), ("GET b", False), ("GET c", True)]
    assert "response lost in a gap" in out[1].notes
    assert out[2].response["value"] == "z"


def test_mid_stream_start() -> None:
    conv = Conv()
    conv.c(b"lue-of-a-bulk\r\n" + cmd("GET", "k"))
    conv.s(b"$1\r\nv\r\n")
    out = conv.close()
    assert [ex.summary for ex in out] == ["GET k"]
    assert conv.session.skipped_bytes == len(b"lue-of-a-bulk\r\n")


@pytest.mark.parametrize("server", [b"?what\r\n", b"$abc\r\n", b":1x\r\n", b"$3\r\nabcde\r\n",
                                    b"*99999999999\r\n"])
def test_malformed_reply(server: bytes) -> None:
    conv = Conv()
    conv.c(cmd("GET", "a"))
    conv.s(server)
    conv.c(cmd("GET", "b"))
    conv.s(b"$1\r\nb\r\n")
    out = conv.close()
    assert out[0].summary == "GET a" and not out[0].complete
    assert any(n.startswith("malformed") for n in out[0].notes)
    assert out[-1].summary == "GET b" and out[-1].complete


def test_malformed_request_resyncs() -> None:
    # The cut request still waits for its reply (a server answers garbage with an error).
    out = run(b"*2\r\n$3\r\nGET\r\n$x\r\n" + cmd("GET", "b"),
              b"-ERR Protocol error: invalid bulk length\r\n$1\r\nb\r\n")
    assert out[0].summary == "GET" and not out[0].complete
    assert out[0].notes == ["malformed: bad bulk length"]
    assert out[0].response["error"].startswith("ERR Protocol error")
    assert out[1].summary == "GET b" and out[1].response["value"] == "b"


# -- detection -----------------------------------------------------------------------------

@pytest.mark.parametrize("client, server, answer", [
    (cmd("GET", "k"), b"", Detect.MATCH),
    (b"*2\r\n$3", b"", Detect.MORE),
    (b"", b"+OK\r\n", Detect.MATCH),
    (b"", b"-ERR x\r\n", Detect.MATCH),
    (b"", b":12", Detect.MORE),
    (b"PING\r\n", b"", Detect.MATCH),
    (b"PIN", b"", Detect.MORE),
    (b"GET / HTTP/1.1\r\n", b"", Detect.NO),
    (b"\x16\x03\x01\x02\x00", b"", Detect.NO),
    (b"", b"HTTP/1.1 200 OK\r\n", Detect.NO),
    (b"\x00\x00\x00\x10", b"", Detect.NO),
    (b"alue\r\n" + cmd("GET", "k"), b"", Detect.MATCH),
])
def test_detect(client: bytes, server: bytes, answer: Detect) -> None:
    assert detect(client, server) is answer


# -- properties ----------------------------------------------------------------------------

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(1, 50))
def test_random_bytes_never_raise(client: bytes, server: bytes, step: int) -> None:
    conv = Conv(body_limit=64)
    for i in range(0, max(len(client), len(server)), step):
        if client[i:i + step]:
            conv.c(client[i:i + step])
        if server[i:i + step]:
            conv.s(server[i:i + step])
    conv.gap(C2S, 3)
    conv.c(client[:20] or b"x")
    for ex in conv.close():
        assert isinstance(ex.summary, str)
    detect(client, server)


_COMMANDS = st.lists(st.tuples(st.sampled_from(["GET", "SET", "DEL", "HGETALL", "PING"]),
                               st.text(min_size=0, max_size=12)), min_size=1, max_size=6)
_REPLIES = st.sampled_from([b"+OK\r\n", b"$3\r\nabc\r\n", b"$-1\r\n", b":5\r\n", b"-ERR x\r\n",
                            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", b"%1\r\n+a\r\n,1.5\r\n",
                            b"|1\r\n+t\r\n:1\r\n+v\r\n"])


@settings(max_examples=100, deadline=None)
@given(_COMMANDS, st.lists(_REPLIES, min_size=6, max_size=6), st.data())
def test_random_splits_do_not_change_result(commands, replies, data) -> None:
    client = b"".join(cmd(c, k) if k else cmd(c) for c, k in commands)
    server = b"".join(replies[:len(commands)])
    whole = [comparable(ex) for ex in run(client, server)]
    cuts_c = sorted(data.draw(st.sets(st.integers(1, len(client) - 1), max_size=8)))
    cuts_s = sorted(data.draw(st.sets(st.integers(1, max(1, len(server) - 1)), max_size=8)))
    conv = Conv()
    for a, b in zip([0, *cuts_c], [*cuts_c, len(client)]):
        conv.c(client[a:b])
    for a, b in zip([0, *cuts_s], [*cuts_s, len(server)]):
        if server[a:b]:
            conv.s(server[a:b])
    assert [comparable(ex) for ex in conv.close()] == whole


def test_mid_stream_start_with_a_chunk_ending_inside_the_next_array_header() -> None:
    # Resyncing, a chunk may end anywhere in "*2\r\n$3\r\n": what could begin that header is
    # kept for the next chunk (it ended after "*2\r\n" and the command was lost).
    stale, request = b"lue-of-a-bulk\r\n", cmd("GET", "k")
    for cut in range(1, 10):
        conv = Conv()
        conv.c(stale + request[:cut]).c(request[cut:])
        conv.s(b"$1\r\nv\r\n")
        out = conv.close()
        assert [ex.summary for ex in out] == ["GET k"], cut
        assert out[0].complete and out[0].response["value"] == "v", cut
        assert conv.session.skipped_bytes == len(stale), cut


def test_client_gap_then_a_chunk_ending_inside_the_next_array_header() -> None:
    request = cmd("GET", "b")
    for cut in range(1, 10):
        conv = Conv()
        conv.c(cmd("SET", "a", "1")[:12]).gap(C2S, 20)
        conv.c(b"ue\r\n" + request[:cut]).c(request[cut:])
        conv.s(b"+OK\r\n$1\r\n2\r\n")
        out = conv.close()
        assert [(ex.summary, ex.complete) for ex in out] == [("SET", False), ("GET b", True)], cut
