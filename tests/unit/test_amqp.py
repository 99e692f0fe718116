"""AMQP 0-9-1 dissector: framing, pairing, content, confirms, errors, losses, driven by
session calls with hand-made frames."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import sessions
from support.sessions import comparable
from worker.dissectors.amqp import METHODS, PROTOCOL_HEADER, AmqpDissector, detect
from worker.dissectors.base import Detect, Direction, Exchange, FlowInfo

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 5672)
_BY_NAME = {name: (key, spec) for key, (name, spec) in METHODS.items()}


# -- building frames ----------------------------------------------------------------------

def shortstr(text: str) -> bytes:
    raw = text.encode()
    return bytes([len(raw)]) + raw


def table(items: dict[str, Any]) -> bytes:
    out = b""
    for key, value in items.items():
        out += shortstr(key)
        if isinstance(value, bool):
            out += b"t" + bytes([value])
        elif isinstance(value, int):
            out += b"I" + struct.pack(">i", value)
        else:
            raw = str(value).encode()
            out += b"S" + struct.pack(">I", len(raw)) + raw
    return struct.pack(">I", len(out)) + out


def args(spec, values: dict[str, Any]) -> bytes:
    out, bits, nbits = b"", 0, 0
    for name, kind in spec:
        value = values.get(name)
        if kind == "b":
            bits |= bool(value) << nbits
            nbits += 1
            continue
        if nbits:
            out += bytes([bits])
            bits = nbits = 0
        if kind == "S":
            out += shortstr(value or "")
        elif kind == "T":
            raw = (value or "").encode()
            out += struct.pack(">I", len(raw)) + raw
        elif kind == "F":
            out += table(value or {})
        else:
            out += (value or 0).to_bytes({"o": 1, "s": 2, "l": 4, "L": 8, "t": 8}[kind], "big")
    if nbits:
        out += bytes([bits])
    return out


def frame(kind: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes([end])


def method(name: str, channel: int = 1, **values: Any) -> bytes:
    (cls, mid), spec = _BY_NAME[name]
    return frame(1, channel, struct.pack(">HH", cls, mid) + args(spec, values))


def content(channel: int, body: bytes, frame_max: int = 0, **props: Any) -> bytes:
    names = ["content_type", "content_encoding", "headers", "delivery_mode", "priority",
             "correlation_id"]
    flags, plist = 0, b""
    for i, name in enumerate(names):
        if name in props:
            flags |= 1 << (15 - i)
            value = props[name]
            plist += (table(value) if name == "headers" else bytes([value])
                      if isinstance(value, int) else shortstr(value))
    header = frame(2, channel, struct.pack(">HHQH", 60, 0, len(body), flags) + plist)
    step = frame_max or max(1, len(body))
    bodies = b"".join(frame(3, channel, body[i:i + step]) for i in range(0, len(body), step))
    return header + bodies


HANDSHAKE = [  # (client, server) turns
    (PROTOCOL_HEADER, method("connection.start", 0, version_major=0, version_minor=9,
                             server_properties={"product": "RabbitMQ", "version": "3.12"},
                             mechanisms="PLAIN", locales="en_US")),
    (method("connection.start-ok", 0, client_properties={"product": "test"},
            mechanism="PLAIN", response="\0guest\0secret", locale="en_US"),
     method("connection.tune", 0, channel_max=2047, frame_max=131072, heartbeat=60)),
    (method("connection.tune-ok", 0, channel_max=2047, frame_max=131072)
     + method("connection.open", 0, virtual_host="/"), method("connection.open-ok", 0)),
    (method("channel.open", 1), method("channel.open-ok", 1)),
]
HANDSHAKE_S = HANDSHAKE[0][1]


class Conv(sessions.Conv):
    def __init__(self, body_limit: int = 0) -> None:
        super().__init__(lambda emit: AmqpDissector().session(FLOW, emit, body_limit),
                         close_ts=10 ** 9)


def summaries(out: list[Exchange]) -> list[str]:
    return [e.summary for e in out]


# -- detection ----------------------------------------------------------------------------

def test_detect_protocol_header_server_start_and_mid_stream_frames():
    assert detect(PROTOCOL_HEADER, b"") is Detect.MATCH
    assert detect(PROTOCOL_HEADER[:5], b"") is Detect.MORE
    assert detect(b"AMQP\x00\x01\x00\x00", b"AMQP\x00\x01\x00\x00") is Detect.NO   # 1.0
    assert detect(b"", HANDSHAKE_S) is Detect.MATCH
    assert detect(b"", HANDSHAKE_S[:9]) is Detect.MORE
    publish = method("basic.publish", exchange="x", routing_key="k")
    assert detect(b"\x17garbage tail of a body" + publish, b"") is Detect.MATCH
    assert detect(b"", b"\x08\x00\x00\x00\x00\x00\x00\xce") is Detect.MATCH   # heartbeat
    assert detect(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n") is Detect.NO
    assert detect(b"\x16\x03\x01\x02\x00\x01", b"\x16\x03\x03\x00\x40") is Detect.NO
    bad_end = publish[:-1] + b"\x00"
    assert detect(bad_end, b"") is not Detect.MATCH


# -- a whole connection -------------------------------------------------------------------

def full_conversation(conv: Conv) -> None:
    for client, server in HANDSHAKE:
        conv.c(client)
        conv.s(server)
    conv.c(method("queue.declare", queue="jobs", durable=True, arguments={"x-max-length": 10}))
    conv.s(method("queue.declare-ok", queue="jobs", message_count=3, consumer_count=0))
    conv.c(method("basic.publish", exchange="orders", routing_key="orders.created")
           + content(1, b'{"id": 7}', content_type="application/json", delivery_mode=2,
                     headers={"trace": "t1", "n": 1}))
    conv.c(method("basic.consume", queue="jobs", consumer_tag="c1"))
    conv.s(method("basic.consume-ok", consumer_tag="c1")
           + method("basic.deliver", consumer_tag="c1", delivery_tag=1, exchange="orders",
                    routing_key="orders.created")
           + content(1, b"x" * 100, frame_max=40, content_type="text/plain"))
    conv.c(method("basic.ack", delivery_tag=1))
    conv.c(method("channel.close", reply_code=200, reply_text="bye"))
    conv.s(method("channel.close-ok"))
    conv.c(method("connection.close", 0, reply_code=200, reply_text="Normal shutdown"))
    conv.s(method("connection.close-ok", 0))


def test_connection_pairs_sync_methods_and_carries_content():
    conv = Conv()
    full_conversation(conv)
    out = conv.close()
    assert summaries(out) == [
        "connection.start", "connection.tune", "connection.open /", "channel.open",
        "queue.declare jobs", "basic.publish orders orders.created", "basic.consume jobs",
        "basic.deliver orders orders.created", "channel.close 200 bye",
        "connection.close 200 Normal shutdown"]
    start, tune, _open, _chan, declare, publish, consume, deliver, close, conn_close = out
    assert start.request["sender"] == "server" and start.request["product"] == "RabbitMQ"
    assert start.response["method"] == "connection.start-ok"
    assert "response" not in start.response          # the SASL response holds the password
    assert start.status == 200 and start.request["protocol"] == "0-9-1"
    assert declare.request == {"method": "queue.declare", "channel": 1, "sender": "client",
                               "queue": "jobs", "passive": False, "durable": True,
                               "exclusive": False, "auto_delete": False, "no_wait": False,
                               "arguments": {"x-max-length": 10}}
    assert declare.response["message_count"] == 3 and declare.response["error"] is None
    assert declare.status == 200 and declare.complete
    assert publish.response is None and publish.status is None and publish.complete
    assert publish.request["properties"] == {"content_type": "application/json",
                                             "delivery_mode": 2, "headers_count": 2}
    assert publish.request["body_size"] == 9
    assert consume.response["consumer_tag"] == "c1"
    assert deliver.request["delivery_tag"] == 1 and deliver.request["sender"] == "server"
    assert deliver.response["method"] == "basic.ack" and deliver.status == 200
    assert deliver.request["body_size"] == 100 and deliver.request_body is None
    assert close.status == 200 and close.response["error"] is None
    assert conn_close.response["method"] == "connection.close-ok"
    assert all(e.complete for e in out)
    assert conv.session.malformed == 0


def test_offsets_sizes_and_refs_of_a_publish_split_over_chunks():
    conv = Conv()
    conv.c(PROTOCOL_HEADER)
    pub = method("basic.publish", exchange="", routing_key="q")
    body = content(1, b"abcdef", frame_max=3)
    first = conv.c(pub).calls
    last = conv.c(body).calls
    out = conv.close()
    (ex,) = out
    assert (ex.client_offset, ex.request_size) == (8, len(pub) + len(body))
    assert (ex.first_ref, ex.last_ref, ex.start_ns) == ((7, first), (7, last), 1000 * first)
    assert ex.summary == "basic.publish q"


def test_split_at_every_byte_gives_the_same_exchanges():
    client = PROTOCOL_HEADER + method("queue.declare", queue="jobs") + method(
        "basic.publish", exchange="e", routing_key="k") + content(1, b"hello", frame_max=2,
                                                                  content_type="text/plain")
    server = method("queue.declare-ok", queue="jobs")
    whole = Conv()
    whole.c(client)
    whole.s(server)
    expected = [comparable(e) for e in whole.close()]
    assert [e["summary"] for e in expected] == ["basic.publish e k", "queue.declare jobs"]
    for cut in range(1, len(client)):
        conv = Conv()
        conv.c(client[:cut])
        conv.c(client[cut:])
        conv.s(server)
        assert [comparable(e) for e in conv.close()] == expected, cut
    for cut in range(1, len(server)):
        conv = Conv()
        conv.c(client)
        conv.s(server[:cut])
        conv.s(server[cut:])
        assert [comparable(e) for e in conv.close()] == expected, cut


def test_channels_interleave_and_pair_independently():
    conv = Conv()
    conv.c(method("queue.declare", 1, queue="a") + method("queue.declare", 2, queue="b")
           + method("exchange.declare", 3, exchange="x", type="topic"))
    conv.s(method("exchange.declare-ok", 3) + method("queue.declare-ok", 2, queue="b")
           + method("queue.declare-ok", 1, queue="a"))
    out = conv.close()
    assert summaries(out) == ["exchange.declare x", "queue.declare b", "queue.declare a"]
    assert [e.response["queue"] for e in out[1:]] == ["b", "a"]
    assert all(e.status == 200 for e in out)


def test_passive_declare_of_a_missing_queue_is_answered_by_the_channel_close():
    conv = Conv()
    conv.c(method("queue.declare", 2, queue="missing", passive=True))
    text = "NOT_FOUND - no queue 'missing' in vhost '/'"
    conv.s(method("channel.close", 2, reply_code=404, reply_text=text, class_id=50, method_id=10))
    conv.c(method("channel.close-ok", 2))
    out = conv.close()
    declare, close = out
    assert declare.summary == "queue.declare missing" and declare.status == 404
    assert declare.response["method"] == "channel.close"
    assert declare.response["error"] == text
    assert declare.response["failed_method"] == "queue.declare"
    assert close.summary == f"channel.close 404 {text}" and close.status == 404
    assert close.request["sender"] == "server" and close.response["error"] == text
    assert close.client_offset > 0 and close.server_offset is not None
    assert all(e.complete for e in out)


def test_connection_close_answers_waiting_requests_on_every_channel():
    conv = Conv()
    conv.c(method("basic.qos", 1, prefetch_count=10) + method("queue.bind", 3, queue="q",
                                                                exchange="x"))
    conv.s(method("connection.close", 0, reply_code=541, reply_text="INTERNAL_ERROR"))
    conv.c(method("connection.close-ok", 0))
    out = conv.close()
    assert [(e.summary, e.status) for e in out] == [
        ("basic.qos", 541), ("queue.bind q x", 541),
        ("connection.close 541 INTERNAL_ERROR", 541)]
    assert out[0].response["error"] == "INTERNAL_ERROR"


def test_confirm_mode_pairs_publishes_with_acks_and_nacks_multiple():
    conv = Conv()
    conv.c(method("confirm.select"))
    conv.s(method("confirm.select-ok"))
    for key in ("a", "b", "c"):
        conv.c(method("basic.publish", exchange="e", routing_key=key) + content(1, b"m"))
    conv.s(method("basic.ack", delivery_tag=2, multiple=True))
    conv.s(method("basic.nack", delivery_tag=3))
    conv.c(method("basic.publish", exchange="e", routing_key="d") + content(1, b"m"))
    out = conv.close()
    assert [(e.summary, e.status) for e in out] == [
        ("confirm.select", 200), ("basic.publish e a", 200), ("basic.publish e b", 200),
        ("basic.publish e c", None), ("basic.publish e d", None)]
    assert out[3].response["error"] == "nack"
    assert not out[4].complete and out[4].notes == ["not confirmed"]


def test_no_wait_methods_and_lone_messages_are_entries_alone():
    conv = Conv()
    conv.c(method("queue.declare", queue="fast", no_wait=True))
    conv.s(method("basic.return", reply_code=312, reply_text="NO_ROUTE", exchange="e",
                  routing_key="nowhere") + content(1, b"back"))
    conv.s(method("basic.deliver", consumer_tag="unknown", delivery_tag=9, routing_key="q")
           + content(1, b""))
    conv.c(method("basic.ack", delivery_tag=77))
    out = conv.close()
    assert [(e.summary, e.status, e.response) for e in out] == [
        ("queue.declare fast", None, None), ("basic.return e nowhere", 312, None),
        ("basic.deliver q", None, None), ("basic.ack 77", None, None)]
    assert all(e.complete for e in out)


def test_unanswered_request_is_emitted_incomplete_at_close():
    conv = Conv()
    conv.c(method("queue.purge", queue="q"))
    (ex,) = conv.close()
    assert ex.summary == "queue.purge q" and not ex.complete and ex.response is None
    assert ex.notes == ["no response"]


def test_bodies_only_with_body_limit_and_truncated():
    conv = Conv(body_limit=4)
    conv.c(method("basic.publish", routing_key="q") + content(1, b"abcdefgh", frame_max=3,
                                                              headers={"a": "b"}))
    (ex,) = conv.close()
    assert ex.request_body == b"abcd"
    assert ex.request["properties"]["headers"] == {"a": "b"}
    assert ex.notes == ["request body truncated at 4 bytes"]


# -- losses and garbage -------------------------------------------------------------------

def test_gap_in_a_body_cuts_the_publish_and_the_next_method_resyncs():
    conv = Conv()
    conv.c(method("basic.publish", routing_key="big") + content(1, b"z" * 50)[:30])
    conv.gap(C2S, 40)
    conv.c(b"tail of the lost body\xce" + method("queue.delete", queue="q"))
    conv.s(method("queue.delete-ok", message_count=0))
    out = conv.close()
    assert [(e.summary, e.complete) for e in out] == [("basic.publish big", False),
                                                      ("queue.delete q", True)]
    assert out[0].notes == ["gap in content"]


def test_capture_starting_mid_stream_syncs_on_the_first_method_frame():
    conv = Conv()
    conv.c(b"\x00\x01\xce" + method("basic.get", queue="q"))
    conv.s(b"\x03\x00\x01junk" + method("basic.get-empty"))
    out = conv.close()
    assert [(e.summary, e.response["method"]) for e in out] == [("basic.get q",
                                                                 "basic.get-empty")]


def test_malformed_frame_end_is_noted_and_the_reader_resyncs():
    conv = Conv()
    conv.c(PROTOCOL_HEADER)
    bad = method("queue.declare", queue="a")[:-1] + b"\x00"
    conv.c(bad + method("queue.declare", queue="b"))
    conv.s(method("queue.declare-ok", queue="b"))
    out = conv.close()
    assert summaries(out) == ["queue.declare b"] and conv.session.malformed == 1
    assert conv.session.skipped_bytes == len(bad)


def test_reply_without_its_request_is_a_lone_entry():
    conv = Conv()
    conv.s(method("queue.declare-ok", queue="x"))
    (ex,) = conv.close()
    assert ex.summary == "queue.declare-ok x" and ex.notes == ["request not captured"]


def test_bad_arguments_give_a_malformed_note_not_an_exception():
    conv = Conv()
    conv.c(frame(1, 1, struct.pack(">HH", 50, 10) + b"\x00\x00\x50abc"))   # shortstr overrun
    conv.c(frame(1, 1, struct.pack(">HH", 99, 99)))                        # unknown method
    out = conv.close()
    assert [e.notes[0].split(":")[0] for e in out] == ["malformed", "malformed"]


# -- fuzzing ------------------------------------------------------------------------------

def conversation_streams() -> tuple[bytes, bytes]:
    conv = Conv()
    sent: list[tuple[Direction, bytes]] = []
    original = conv.send

    def record(direction: Direction, data: bytes) -> int:
        sent.append((direction, data))
        return original(direction, data)
    conv.send = record   # type: ignore[method-assign]
    full_conversation(conv)
    return (b"".join(d for k, d in sent if k == C2S), b"".join(d for k, d in sent if k == S2C))


CLIENT, SERVER = conversation_streams()


def run_split(client: bytes, server: bytes, cuts_c: list[int], cuts_s: list[int]) -> list[dict]:
    conv = Conv()
    for stream, cuts, direction in ((client, cuts_c, C2S), (server, cuts_s, S2C)):
        points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
        for a, b in zip(points, points[1:]):
            conv.send(direction, stream[a:b])
    return [comparable(e) for e in conv.close()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 10 ** 6), max_size=12), st.lists(st.integers(0, 10 ** 6),
                                                                  max_size=12))
def test_random_splits_do_not_change_the_result(cuts_c, cuts_s):
    assert run_split(CLIENT, SERVER, cuts_c, cuts_s) == run_split(CLIENT, SERVER, [], [])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.binary(max_size=64)), max_size=20),
       st.integers(0, 8))
def test_random_bytes_gaps_and_mutations_never_raise(events, limit):
    conv = Conv(body_limit=limit)
    for kind, data in events:
        if kind == 2:
            conv.gap(C2S if len(data) % 2 else S2C, len(data) + 1)
        else:
            # Half the time, real frames with a random mutation, so parsing goes deep.
            stream = CLIENT if kind == 0 else SERVER
            if data and data[0] & 1:
                at = int.from_bytes(data[:2], "big") % len(stream)
                data = stream[at:at + 80] + data
            conv.send(Direction(kind), data)
    conv.close()


@pytest.mark.parametrize("size", [0, 7, 131072])
def test_large_body_frames_pass_through_without_buffering(size):
    conv = Conv()
    conv.c(method("basic.publish", routing_key="big") + content(1, b"b" * size))
    (ex,) = conv.close()
    assert ex.complete and ex.request["body_size"] == size
    assert not conv.session.readers[0].buf
