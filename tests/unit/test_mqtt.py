"""MQTT 3.1.1 and 5 dissector: framing, pairing by packet id, QoS flows, versions, losses,
driven by session calls with hand-made packets."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import sessions
from support.sessions import comparable
from worker.dissectors.base import Detect, Direction, FlowInfo
from worker.dissectors.mqtt import MqttDissector, detect

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 1883)


# -- building packets ---------------------------------------------------------------------

def varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + varint(len(body)) + body


def props(raw: bytes = b"") -> bytes:
    return varint(len(raw)) + raw


def connect(client_id: str = "dev-1", level: int = 4, user: bool = True,
            keepalive: int = 60) -> bytes:
    flags = 0x02 | (0xC0 if user else 0)
    body = s("MQTT") + bytes([level, flags]) + struct.pack(">H", keepalive)
    if level == 5:
        body += props(b"\x11\x00\x00\x00\x3c")          # session expiry 60
    body += s(client_id)
    if user:
        body += s("user") + s("pass")
    return packet(1, 0, body)


def connack(code: int = 0, v5: bool = False) -> bytes:
    return packet(2, 0, bytes([0, code]) + (props(b"\x22\x00\x0a") if v5 else b""))


def publish(topic: str, payload: bytes = b"{}", qos: int = 0, pid: int = 0,
            retain: bool = False, v5_props: bytes | None = None) -> bytes:
    body = s(topic) + (struct.pack(">H", pid) if qos else b"")
    if v5_props is not None:
        body += props(v5_props)
    return packet(3, qos << 1 | retain, body + payload)


def ack(kind: int, pid: int, code: int | None = None) -> bytes:
    flags = 2 if kind == 6 else 0
    body = struct.pack(">H", pid) + (bytes([code]) if code is not None else b"")
    return packet(kind, flags, body)


def subscribe(pid: int, *topics: tuple[str, int], v5: bool = False) -> bytes:
    body = struct.pack(">H", pid) + (props() if v5 else b"")
    body += b"".join(s(t) + bytes([q]) for t, q in topics)
    return packet(8, 2, body)


def suback(pid: int, *codes: int, v5: bool = False) -> bytes:
    return packet(9, 0, struct.pack(">H", pid) + (props() if v5 else b"") + bytes(codes))


PINGREQ, PINGRESP, DISCONNECT = b"\xc0\x00", b"\xd0\x00", b"\xe0\x00"


class Conv(sessions.Conv):
    def __init__(self, body_limit: int = 0) -> None:
        super().__init__(lambda emit: MqttDissector().session(FLOW, emit, body_limit),
                         close_ts=10 ** 9)


# -- detection ----------------------------------------------------------------------------

def test_detect_connect_and_mid_stream_packets():
    assert detect(connect(), b"") is Detect.MATCH
    assert detect(connect(level=5), b"") is Detect.MATCH
    assert detect(connect()[:5], b"") is Detect.MORE
    assert detect(b"\x10\x0c\x00\x04HTTP\x04\x02\x00\x3c", b"HTTP/1.1 200") is Detect.NO
    assert detect(b"", publish("sensors/1", qos=1, pid=3)) is Detect.MATCH
    assert detect(subscribe(1, ("a/#", 1)), b"") is Detect.MATCH
    assert detect(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n") is Detect.NO
    assert detect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x00\x00\x06\x04\x00") is Detect.NO
    assert detect(b"\x16\x03\x01\x02\x00\x01", b"\x16\x03\x03\x00\x40") is Detect.NO


# -- 3.1.1 --------------------------------------------------------------------------------

def test_v311_connect_subscribe_publish_qos_0_1_2_ping_disconnect():
    conv = Conv()
    first = conv.c(connect("dev-1")).calls
    last = conv.s(connack(0)).calls
    conv.c(subscribe(1, ("sensors/+", 1), ("alerts", 2)))
    conv.s(suback(1, 1, 0x80))
    conv.c(publish("sensors/0", b"x" * 10))
    conv.c(publish("sensors/1", b"y" * 11, qos=1, pid=2))
    conv.s(ack(4, 2))
    conv.c(publish("sensors/2", b"z", qos=2, pid=3))
    conv.s(ack(5, 3))
    conv.c(ack(6, 3))
    conv.s(ack(7, 3))
    conv.s(publish("sensors/1", b"down", qos=1, pid=1))     # the broker's delivery
    conv.c(ack(4, 1))
    conv.c(PINGREQ)
    conv.s(PINGRESP)
    conv.c(DISCONNECT)
    out = conv.close()
    assert [(e.summary, e.status) for e in out] == [
        ("CONNECT dev-1", 0), ("SUBSCRIBE sensors/+, alerts", 0x80),
        ("PUBLISH sensors/0 qos0", None), ("PUBLISH sensors/1 qos1", 0),
        ("PUBLISH sensors/2 qos2", 0), ("PUBLISH sensors/1 qos1", 0), ("PINGREQ", None),
        ("DISCONNECT", None)]
    con, sub, p0, p1, p2, down, ping, disc = out
    assert con.request == {"packet_type": "CONNECT", "protocol_name": "MQTT",
                           "protocol_version": 4, "version": "3.1.1", "clean_session": True,
                           "keepalive": 60, "username_present": True, "password_present": True,
                           "will": False, "client_id": "dev-1", "sender": "client"}
    assert con.response == {"packet_type": "CONNACK", "session_present": False,
                            "reason_code": 0, "error": None, "reason": "Connection Accepted"}
    assert (con.first_ref, con.last_ref, con.client_offset, con.server_offset) == (
        (7, first), (7, last), 0, 0)
    assert sub.request["topics"] == [{"topic": "sensors/+", "qos": 1},
                                     {"topic": "alerts", "qos": 2}]
    assert sub.response["reason_codes"] == [1, 0x80] and sub.response["error"] == "Failure"
    assert p0.response is None and p0.request["payload_size"] == 10 and p0.complete
    assert p1.request["packet_id"] == 2 and p1.response["packet_type"] == "PUBACK"
    assert p2.response["packet_type"] == "PUBCOMP" and p2.response["pubrec_reason_code"] == 0
    assert p2.response_size == 12
    assert down.request["sender"] == "server" and down.response["packet_type"] == "PUBACK"
    assert down.client_offset > 0 and down.server_offset is not None
    assert ping.response["packet_type"] == "PINGRESP"
    assert all(e.complete for e in out)


def test_connack_refusal_is_status_and_error():
    conv = Conv()
    conv.c(connect())
    conv.s(connack(5))
    (ex,) = conv.close()
    assert ex.status == 5 and ex.response["error"] == "Not authorized"


def test_split_at_every_byte_gives_the_same_exchanges():
    client = connect() + publish("a/b", b"hello", qos=1, pid=9) + subscribe(2, ("x/#", 0))
    server = connack() + ack(4, 9) + suback(2, 0)
    whole = Conv()
    whole.c(client)
    whole.s(server)
    expected = [comparable(e) for e in whole.close()]
    assert len(expected) == 3 and all(e["complete"] for e in expected)
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


def test_packet_ids_are_per_sender_and_pipelined_acks_pair_by_id():
    conv = Conv()
    conv.c(publish("c/1", qos=1, pid=1) + publish("c/2", qos=1, pid=2))
    conv.s(publish("s/1", qos=1, pid=1))
    conv.s(ack(4, 2) + ack(4, 1))
    conv.c(ack(4, 1))
    out = conv.close()
    assert [e.summary for e in out] == ["PUBLISH c/2 qos1", "PUBLISH c/1 qos1",
                                        "PUBLISH s/1 qos1"]
    assert all(e.complete and e.status == 0 for e in out)


def test_unacknowledged_and_cut_qos2_flows_are_incomplete_at_close():
    conv = Conv()
    conv.c(publish("t/1", qos=1, pid=1))
    conv.c(publish("t/2", qos=2, pid=2))
    conv.s(ack(5, 2))
    conv.c(subscribe(3, ("t/#", 1)))
    out = conv.close()
    assert [(e.summary, e.complete, e.notes) for e in out] == [
        ("PUBLISH t/1 qos1", False, ["no response"]),
        ("PUBLISH t/2 qos2", False, ["no PUBCOMP"]),
        ("SUBSCRIBE t/#", False, ["no response"])]


def test_ack_without_its_publish_is_a_lone_entry():
    conv = Conv()
    conv.s(ack(4, 77))
    (ex,) = conv.close()
    assert ex.summary == "PUBACK 77" and ex.notes == ["request not captured"]


# -- 5 ------------------------------------------------------------------------------------

def test_v5_properties_reason_codes_and_topic_alias():
    conv = Conv()
    conv.c(connect("dev-5", level=5))
    conv.s(connack(0, v5=True))
    alias = b"\x23\x00\x01"
    ctype = b"\x03" + s("application/json")
    user = b"\x26" + s("trace") + s("abc")
    conv.c(publish("sensors/1", b"{}", qos=1, pid=1, v5_props=alias + ctype + user))
    conv.s(ack(4, 1, 0x10))
    conv.c(publish("", b"{}", qos=1, pid=2, v5_props=alias))        # topic by alias
    conv.s(ack(4, 2, 0x87))
    conv.c(subscribe(3, ("a/#", 1), v5=True))
    conv.s(suback(3, 0x8F, v5=True))
    conv.c(b"\xe0\x01\x04")                                         # DISCONNECT with will
    out = conv.close()
    assert [(e.summary, e.status) for e in out] == [
        ("CONNECT dev-5", 0), ("PUBLISH sensors/1 qos1", 0x10), ("PUBLISH sensors/1 qos1", 0x87),
        ("SUBSCRIBE a/#", 0x8F), ("DISCONNECT", 4)]
    con, p1, p2, sub, disc = out
    assert con.request["version"] == "5.0"
    assert con.request["properties"] == {"session_expiry_interval": 60}
    assert con.response["properties"] == {"topic_alias_maximum": 10}
    assert p1.request["properties"] == {"topic_alias": 1, "content_type": "application/json",
                                        "user_properties": [["trace", "abc"]]}
    assert p1.response["error"] is None
    assert p2.response["error"] == "Not authorized"
    assert sub.request["topics"][0] == {"topic": "a/#", "qos": 1, "no_local": False,
                                        "retain_as_published": False, "retain_handling": 0}
    assert sub.response["error"] == "Topic Filter invalid"


def test_version_5_is_inferred_mid_stream_from_an_ack_with_a_reason_code():
    conv = Conv()
    conv.c(publish("a", qos=1, pid=1))
    conv.s(packet(4, 0, struct.pack(">H", 1) + b"\x10\x00"))   # reason code, no properties
    conv.c(publish("b", qos=1, pid=2, v5_props=b""))
    conv.s(ack(4, 2))
    out = conv.close()
    assert [e.summary for e in out] == ["PUBLISH a qos1", "PUBLISH b qos1"]
    assert out[1].request["payload_size"] == 2


# -- bodies, losses, garbage --------------------------------------------------------------

def test_payload_only_with_body_limit():
    conv = Conv(body_limit=3)
    conv.c(publish("t", b"abcdef"))
    (ex,) = conv.close()
    assert ex.request_body == b"abc" and ex.notes == ["payload truncated at 3 bytes"]
    conv = Conv()
    conv.c(publish("t", b"abcdef"))
    (ex,) = conv.close()
    assert ex.request_body is None and "payload" not in ex.request


def test_large_publish_is_skipped_by_length_not_buffered():
    conv = Conv()
    big = publish("big/topic", b"p" * 600_000, qos=1, pid=5)
    for i in range(0, len(big), 65536):
        conv.c(big[i:i + 65536])
        assert len(conv.session.readers[0].buf) < 200_000
    conv.s(ack(4, 5))
    (ex,) = conv.close()
    assert ex.summary == "PUBLISH big/topic qos1" and ex.complete
    assert ex.request["payload_size"] == 600_000 and ex.request_size == len(big)


def test_gap_then_resync_on_the_next_packet_start():
    conv = Conv()
    conv.c(connect())
    conv.s(connack())
    conv.c(publish("a", b"x" * 100)[:50])
    conv.gap(C2S, 53)
    conv.c(publish("b", qos=1, pid=4))
    conv.s(ack(4, 4))
    out = conv.close()
    assert [e.summary for e in out] == ["CONNECT dev-1", "PUBLISH b qos1"]


def test_capture_starting_mid_packet_skips_to_a_plausible_start():
    conv = Conv()
    conv.c(b"\x00\x00\xff\xfe middle of a payload")
    conv.c(publish("ok", qos=1, pid=1))
    conv.s(ack(4, 1))
    out = conv.close()
    assert [e.summary for e in out] == ["PUBLISH ok qos1"]


def test_malformed_packets_give_notes_or_resync_never_exceptions():
    conv = Conv()
    conv.c(connect())
    conv.c(packet(8, 2, struct.pack(">H", 1) + b"\x00\x09ab"))   # topic overruns SUBSCRIBE
    conv.c(packet(3, 0, b"\x00\x50ab"))                         # topic overruns the packet
    conv.c(b"\x00\x01\x02\x03")                                  # not a fixed header
    conv.c(publish("after", b""))
    out = conv.close()
    notes = [e.notes for e in out]
    assert any(n and n[0].startswith("malformed: SUBSCRIBE") for n in notes)
    assert any(n and n[0].startswith("malformed: PUBLISH") for n in notes)
    assert "PUBLISH after qos0" in [e.summary for e in out]


# -- fuzzing ------------------------------------------------------------------------------

CLIENT = (connect("fz") + subscribe(1, ("a/#", 1)) + publish("a/1", b"x" * 40, qos=2, pid=2)
          + ack(6, 2) + publish("a/2", b"y", qos=1, pid=3) + PINGREQ + ack(4, 9) + DISCONNECT)
SERVER = (connack() + suback(1, 1) + ack(5, 2) + ack(7, 2) + ack(4, 3)
          + publish("a/1", b"x" * 40, qos=1, pid=9) + PINGRESP)


def run_split(cuts_c: list[int], cuts_s: list[int]) -> list[dict]:
    conv = Conv()
    for stream, cuts, direction in ((CLIENT, cuts_c, C2S), (SERVER, cuts_s, S2C)):
        points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
        for a, b in zip(points, points[1:]):
            conv.send(direction, stream[a:b])
    return [comparable(e) for e in conv.close()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 10 ** 6), max_size=12), st.lists(st.integers(0, 10 ** 6),
                                                                  max_size=12))
def test_random_splits_do_not_change_the_result(cuts_c, cuts_s):
    assert run_split(cuts_c, cuts_s) == run_split([], [])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.binary(max_size=64)), max_size=20),
       st.integers(0, 8))
def test_random_bytes_gaps_and_mutations_never_raise(events, limit):
    conv = Conv(body_limit=limit)
    for kind, data in events:
        if kind == 2:
            conv.gap(C2S if len(data) % 2 else S2C, len(data) + 1)
        else:
            stream = CLIENT if kind == 0 else SERVER
            if data and data[0] & 1:
                at = int.from_bytes(data[:2], "big") % len(stream)
                data = stream[at:at + 60] + data
            conv.send(Direction(kind), data)
    conv.close()
