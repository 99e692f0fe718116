"""MQTT's fast path for whole PUBLISH and acknowledgement packets in a chunk gives exactly what
the general loop (fixed_header, _parse, MqttSession.decode) gives.

Every conversation runs twice on the same chunks, with the fast path (`_Reader._whole`) and
with it turned off; the exchanges must be equal field by field (times, packet refs, offsets,
notes), and the fast path must have taken the bytes it should. Versions (3.1.1, 5, unknown),
QoS 0-2, long lengths, long topics, properties, splits, gaps and malformed packets make the
reader switch between the two paths.
"""

from __future__ import annotations

import random
import struct

import pytest

from support.sessions import Step, both_paths
from test_mqtt import Conv, ack, connack, connect, packet, publish, subscribe, suback, varint
from shark.model import encode
from worker.dissectors import mqtt
from worker.dissectors.base import Exchange


def both(steps: list[Step], body_limit: int = 0) -> tuple[list[Exchange], int]:
    """The exchanges (equal both ways) and the bytes the fast path took; the JSON the fast
    path gives with them (Exchange.request_json) is their requests'."""
    out, taken = both_paths(mqtt._Reader, lambda: Conv(body_limit), steps)
    for ex in out:
        if ex.request_json is not None:
            assert bytes(ex.request_json) == encode(ex.request), ex
    return out, taken


def traffic(level: int = 4, count: int = 12) -> tuple[bytes, bytes, bytes]:
    """A client publishing at QoS 0, 1 and 2 to a topic it subscribed, the broker delivering
    back: (what the client sends, what the server sends, the client's acknowledgements of
    the deliveries)."""
    v5 = level == 5
    client, server, acks = b"", b"", b""
    for n in range(count):
        qos = n % 3
        pid = n + 1
        props = b"" if v5 else None
        client += publish(f"sensors/{n}", b"reading %d" % n, qos=qos, pid=pid, v5_props=props)
        if qos == 1:
            server += ack(4, pid)
        elif qos == 2:
            server += ack(5, pid)
            client += ack(6, pid)
            server += ack(7, pid)
        server += publish(f"sensors/{n}", b"r%d" % n, qos=min(qos, 1), pid=100 + n,
                          v5_props=props)
        if qos:
            acks += ack(4, 100 + n)
    return client, server, acks


def session_of(level: int) -> list[Step]:
    return [("c", connect(level=level)), ("s", connack(v5=level == 5)),
            ("c", subscribe(1, ("sensors/#", 1), v5=level == 5)), ("s", suback(1, 1, v5=level == 5))]


@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize("body_limit", [0, 3, 4096])
def test_whole_chunks(level: int, body_limit: int) -> None:
    client, server, acks = traffic(level)
    out, taken = both([*session_of(level), ("c", client), ("s", server), ("c", acks)],
                      body_limit)
    assert len(out) == 2 + 24 and all(ex.complete for ex in out)
    assert taken == len(client) + len(server) + len(acks)
    delivered = [ex for ex in out if ex.request["sender"] == "server"]
    assert {ex.request["qos"] for ex in delivered} == {0, 1}
    if body_limit:
        assert out[2].request_body == b"reading 0"[:body_limit]


@pytest.mark.parametrize("level", [4, 5])
def test_split_at_every_point_and_byte_by_byte(level: int) -> None:
    client, server, acks = traffic(level, 6)
    whole, _ = both([*session_of(level), ("c", client), ("s", server), ("c", acks)])
    for cut in range(1, len(client), 7):
        split, _ = both([*session_of(level), ("c", client[:cut]), ("c", client[cut:]),
                         ("s", server), ("c", acks)])
        assert [ex.summary for ex in split] == [ex.summary for ex in whole]
    steps: list[Step] = [*session_of(level)]
    steps += [("c", client[i:i + 1]) for i in range(len(client))]
    steps += [("s", server[i:i + 1]) for i in range(len(server))]
    steps += [("c", acks[i:i + 1]) for i in range(len(acks))]
    single, taken = both(steps)
    # Each packet is whole once its last byte is buffered: the fast path takes it from the
    # buffer, its first byte's time and packet from an earlier chunk's mark.
    assert taken == len(client) + len(server) + len(acks)
    assert single[3].first_ref != single[3].last_ref
    assert [ex.request for ex in single] == [ex.request for ex in whole]


def test_long_lengths_topics_and_payloads() -> None:
    big = publish("t/" + "x" * 1500, b"p" * 70_000, qos=1, pid=7)      # 3-byte length
    mid = publish("m", b"q" * 300)                                       # 2-byte length
    client = b"".join([mid, big, publish("a", b""), mid])
    out, taken = both([*session_of(4), ("c", client), ("s", ack(4, 7))], 16)
    assert taken == len(client) + 4
    (acked,) = [ex for ex in out if ex.request.get("qos") == 1]   # emitted at its PUBACK
    assert acked.request["topic"] == "t/" + "x" * 998 + "..."
    assert acked.request["payload_size"] == 70_000 and acked.request_body == b"p" * 16
    assert out[2].request["payload_size"] == 300


def test_v5_properties_and_unknown_version_go_the_general_way() -> None:
    aliased = publish("room/1", b"on", qos=0, v5_props=b"\x23\x00\x05")    # topic alias 5
    by_alias = publish("", b"off", qos=0, v5_props=b"\x23\x00\x05")
    plain = publish("room/2", b"x", v5_props=b"")
    client = aliased + by_alias + plain + ack(4, 3, 0x10)                 # a v5 reason code
    out, taken = both([*session_of(5), ("c", client)])
    assert [ex.request["topic"] for ex in out[2:5]] == ["room/1", "room/1", "room/2"]
    assert taken == len(plain)
    # A capture joined after CONNECT: the version is guessed, nothing goes the fast way.
    out, taken = both([("c", publish("a/b", b"1") + publish("a/b", b"2", qos=1, pid=1)),
                       ("s", ack(4, 1))])
    assert [ex.summary for ex in out] == ["PUBLISH a/b qos0", "PUBLISH a/b qos1"] and taken == 0


def test_malformed_and_cut_packets_fall_back() -> None:
    bad_qos = bytes([0x36, 5]) + struct.pack(">H", 1) + b"abc"             # QoS 3
    non_minimal = bytes([0x30, 0x85, 0x00]) + struct.pack(">H", 1) + b"abc"
    overrun = packet(3, 0, struct.pack(">H", 40) + b"short")               # topic past the end
    no_pid = packet(3, 2, struct.pack(">H", 1) + b"a")                     # QoS 1, no id
    long_ack = packet(4, 0, struct.pack(">H", 9) + b"\x00")                 # a reason code
    bad_flags = bytes([0x42, 2]) + struct.pack(">H", 9)                     # PUBACK flags 2
    for junk in (bad_qos, non_minimal, overrun, no_pid, long_ack, bad_flags):
        client = publish("ok/1", b"a") + junk + publish("ok/2", b"b")
        steps: list[Step] = [*session_of(4), ("c", client), ("c", publish("ok/3", b"c"))]
        out, taken = both(steps)
        assert taken >= len(publish("ok/3", b"c")), junk


def test_gaps_and_random_splits_of_mutated_streams() -> None:
    rng = random.Random(17)
    client, server, _ = traffic(4, 30)
    for round_ in range(60):
        data = bytearray(client)
        for _ in range(rng.randrange(0, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        steps: list[Step] = [*session_of(4)]
        pos = 0
        while pos < len(data):
            step = rng.randrange(1, 200)
            if rng.random() < 0.05:
                steps.append(("gc", step))
            else:
                steps.append(("c", bytes(data[pos:pos + step])))
                if rng.random() < 0.3:
                    steps.append(("s", server[pos % len(server):pos % len(server) + 40]))
            pos += step
        both(steps, rng.choice([0, 8]))


def test_fast_path_reads_varint_lengths_as_fixed_header_does() -> None:
    for length in (0, 1, 2, 127, 128, 16_383, 16_384, 2_097_151):
        encoded = bytes([0x30]) + varint(length)
        assert mqtt.fixed_header(encoded, 0) == (0x30, length, len(encoded))


def raw_publish(topic: bytes, payload: bytes, qos: int = 0, pid: int = 0, flags: int = 0) -> bytes:
    """A PUBLISH whose topic is given as bytes (not always UTF-8)."""
    body = struct.pack(">H", len(topic)) + topic + (struct.pack(">H", pid) if qos else b"")
    return packet(3, qos << 1 | flags, body + payload)


def test_the_kept_json_is_the_fields_json() -> None:
    """Topics that JSON escapes or that decode with replacements, the flags, QoS 0 sizes past
    what a topic keeps and topics past what a reader keeps, alternating topics: the fast
    path's JSON (kept per topic, flags and size) is the fields' every time (both())."""
    topics = [b'say "hi"', b"back\\slash", b"tab\tand\x01ctl", "caf\u00e9/\u2603".encode(),
              b"bad\xff\xfeutf8", b"", b"t/" + b"x" * 1500, b"</script>", "a\u2028b".encode()]
    client = b""
    pid = 1
    for n in range(3 * mqtt.PUBLISH0_KEPT):
        topic = topics[n % len(topics)] if n % 5 else b"many/%d" % (n % (mqtt.TOPICS_KEPT + 9))
        qos = n % 2
        client += raw_publish(topic, b"p" * (n % (mqtt.PUBLISH0_KEPT + 40)), qos, pid,
                              flags=(n // 2) % 2 | (8 if n % 7 == 0 else 0))
        pid = pid % 65535 + 1
    acks = b"".join(ack(4, p) for p in range(2, pid, 2))
    out, taken = both([*session_of(4), ("c", client), ("s", acks)])
    assert taken == len(client) + len(acks)
    assert sum(ex.request_json is not None for ex in out) == 3 * mqtt.PUBLISH0_KEPT
    assert {ex.request["retain"] for ex in out[2:]} == {True, False}
    assert {ex.request["dup"] for ex in out[2:]} == {True, False}
    assert {'say "hi"', "bad\ufffd\ufffdutf8", ""} <= {ex.request.get("topic") for ex in out}


@pytest.mark.parametrize("topic", ['a"b', "x\\", "\u00e9", "plain/topic", ""])
@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("flags", [0, 1, 8, 9])
def test_publish_json_parts(topic: str, qos: int, flags: int) -> None:
    head, middle, tail = mqtt.publish_json_parts(topic, qos, flags, "server")
    fields: dict[str, object] = {"packet_type": "PUBLISH", "topic": topic, "qos": qos,
                                 "retain": bool(flags & 1), "dup": bool(flags & 8)}
    if qos:
        fields["packet_id"] = 65535
    fields["payload_size"] = 1234567
    fields["sender"] = "server"
    made = head + (b"65535" + middle if qos else b"") + b"1234567" + tail
    assert made == encode(fields)
