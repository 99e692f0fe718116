"""MQTT 3.1, 3.1.1 and 5: control packets of one connection, paired into entries.

Framing: a fixed header (type << 4 | flags, then the remaining length as a 1-4 byte varint),
then the variable header and payload. Each direction has a _Reader that buffers at most one
packet (a PUBLISH larger than PACKET_BUFFER is parsed from its first bytes and the rest of
its payload skipped by length, copied only when the session keeps bodies). Whole PUBLISH and
two-byte acknowledgement packets lying in the bytes at hand (the bulk of a busy connection) are
read by a fast path, _Reader._whole, that makes exactly what the general loop makes.

Version: from CONNECT's protocol level (3 = 3.1, 4 = 3.1.1, 5 = 5). A capture that starts
after CONNECT reads packets as 3.1.1 until one shows version 5 (an acknowledgement, CONNACK or
DISCONNECT with a reason code / properties).

Pairing (one entry each):
- CONNECT with CONNACK; PINGREQ with PINGRESP (in order);
- PUBLISH QoS 0 alone; QoS 1 with the PUBACK of its packet id from the other side; QoS 2 from
  PUBLISH through PUBREC and PUBREL to PUBCOMP (an error PUBREC ends it);
- SUBSCRIBE with SUBACK, UNSUBSCRIBE with UNSUBACK, by packet id;
- DISCONNECT and AUTH alone; an acknowledgement whose request was not captured alone.
Packet ids are per sender: the client's and the server's PUBLISH ids are separate spaces.
Status: the CONNACK return code (3.x) or reason code (5) of the reply, the first failure code
of a SUBACK/UNSUBACK (else 0), 0 for a 3.x acknowledgement (success is implied), None for a
QoS 0 PUBLISH or a request without a reply. response.error: the reason's name when it is a
failure (3.x CONNACK code != 0, code >= 0x80), else null.

Losses: a gap or a malformed packet makes the reader resync at the next chunk whose first bytes
are a plausible fixed header (packets mostly start segments); a request cut by it is emitted
incomplete at close.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final, Literal

import msgspec

from worker.dissectors.base import Detect, Direction, Emit, Exchange, FlowInfo
from worker.packet import PacketRef
from worker.dissectors.stream import StreamReader, TwoWaySession, chunk_at

# Final: mypyc folds the ints into the code and keeps the tables in C statics; a plain module
# global is a dict lookup by name at every use (each `kind == PUBLISH` of the per-packet path).
C2S: Final = Direction.CLIENT_TO_SERVER
S2C: Final = Direction.SERVER_TO_CLIENT
CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14
AUTH: Final = 15
NAMES: Final = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
         7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
         12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}
PACKET_BUFFER: Final = 256 * 1024         # a larger PUBLISH is parsed from its head, payload skipped
HEAD_NEEDED: Final = 70_000               # enough for a topic (<= 65535) and the usual properties
STRING_LIMIT: Final = 1000
SUMMARY_LIMIT: Final = 256
VERSIONS: Final = {3: "3.1", 4: "3.1.1", 5: "5.0"}

CONNACK_V3: Final = {0: "Connection Accepted", 1: "Unacceptable protocol version",
              2: "Identifier rejected", 3: "Server unavailable",
              4: "Bad user name or password", 5: "Not authorized"}
REASONS_V5: Final = {
    0x00: "Success", 0x01: "Granted QoS 1", 0x02: "Granted QoS 2",
    0x04: "Disconnect with Will Message", 0x10: "No matching subscribers",
    0x11: "No subscription existed", 0x18: "Continue authentication", 0x19: "Re-authenticate",
    0x80: "Unspecified error", 0x81: "Malformed Packet", 0x82: "Protocol Error",
    0x83: "Implementation specific error", 0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid", 0x86: "Bad User Name or Password",
    0x87: "Not authorized", 0x88: "Server unavailable", 0x89: "Server busy", 0x8A: "Banned",
    0x8B: "Server shutting down", 0x8C: "Bad authentication method",
    0x8D: "Keep Alive timeout", 0x8E: "Session taken over", 0x8F: "Topic Filter invalid",
    0x90: "Topic Name invalid", 0x91: "Packet Identifier in use",
    0x92: "Packet Identifier not found", 0x93: "Receive Maximum exceeded",
    0x94: "Topic Alias invalid", 0x95: "Packet too large", 0x96: "Message rate too high",
    0x97: "Quota exceeded", 0x98: "Administrative action", 0x99: "Payload format invalid",
    0x9A: "Retain not supported", 0x9B: "QoS not supported", 0x9C: "Use another server",
    0x9D: "Server moved", 0x9E: "Shared Subscriptions not supported",
    0x9F: "Connection rate exceeded", 0xA0: "Maximum connect time",
    0xA1: "Subscription Identifiers not supported",
    0xA2: "Wildcard Subscriptions not supported",
}
# v5 property id -> (name, type): b byte, h two-byte int, i four-byte int, v varint,
# s UTF-8 string, d binary data, p string pair.
PROPERTIES: Final = {
    1: ("payload_format_indicator", "b"), 2: ("message_expiry_interval", "i"),
    3: ("content_type", "s"), 8: ("response_topic", "s"), 9: ("correlation_data", "d"),
    11: ("subscription_identifier", "v"), 17: ("session_expiry_interval", "i"),
    18: ("assigned_client_identifier", "s"), 19: ("server_keep_alive", "h"),
    21: ("authentication_method", "s"), 22: ("authentication_data", "d"),
    23: ("request_problem_information", "b"), 24: ("will_delay_interval", "i"),
    25: ("request_response_information", "b"), 26: ("response_information", "s"),
    28: ("server_reference", "s"), 31: ("reason_string", "s"), 33: ("receive_maximum", "h"),
    34: ("topic_alias_maximum", "h"), 35: ("topic_alias", "h"), 36: ("maximum_qos", "b"),
    37: ("retain_available", "b"), 38: ("user_properties", "p"),
    39: ("maximum_packet_size", "i"), 40: ("wildcard_subscription_available", "b"),
    41: ("subscription_identifier_available", "b"),
    42: ("shared_subscription_available", "b"),
}
# Fixed-header flags every packet type must carry (PUBLISH: any).
_FLAGS: Final = {t: 0 for t in range(1, 16)}
_FLAGS.update({PUBREL: 2, SUBSCRIBE: 2, UNSUBSCRIBE: 2})
# What each acknowledgement answers, and the requests that wait for one.
_ANSWERS: Final = {PUBACK: PUBLISH, PUBREC: PUBLISH, PUBCOMP: PUBLISH, SUBACK: SUBSCRIBE,
            UNSUBACK: UNSUBSCRIBE}
_WAITS_FOR_REPLY: Final = frozenset({CONNECT, PINGREQ, SUBSCRIBE, UNSUBSCRIBE})
# A PUBACK's response fields as MqttSession.acked gives them (its packet id set in a copy):
# what _finish makes of a successful two-byte PUBACK's fields. Never handed out itself.
_PUBACK_FIELDS: Final[dict[str, Any]] = {"packet_type": "PUBACK", "packet_id": 0,
                                         "reason_code": 0, "error": None}


class Malformed(ValueError):
    pass


# -- fixed header ------------------------------------------------------------------------

def fixed_header(data: bytes | bytearray, pos: int) -> tuple[int, int, int] | None | Literal[False]:
    """(type_and_flags, remaining length, header length) of a packet at data[pos:]; None when
    more bytes are needed; False when it cannot be an MQTT fixed header."""
    n = len(data)
    if pos >= n:
        return None
    first = data[pos]
    kind, flags = first >> 4, first & 15
    if kind == 0 or (kind != PUBLISH and flags != _FLAGS[kind]) or \
            (kind == PUBLISH and flags & 6 == 6):
        return False
    value = 0
    for i in range(4):
        if pos + 1 + i >= n:
            return None
        byte = data[pos + 1 + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and byte == 0:
                return False            # a non-minimal encoding: not how clients write it
            return first, value, 2 + i
    return False


def _plausible_size(kind: int, remaining: int) -> bool:
    if kind in (PINGREQ, PINGRESP):
        return remaining == 0
    if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
        return 2 <= remaining <= 65_535
    if kind == CONNACK:
        return 2 <= remaining <= 65_535
    if kind in (SUBSCRIBE, UNSUBSCRIBE, SUBACK):
        return 3 <= remaining <= 1 << 20
    if kind == CONNECT:
        return 10 <= remaining <= 1 << 20
    if kind == PUBLISH:
        return 2 <= remaining
    return remaining <= 65_535         # DISCONNECT, AUTH


# -- field decoding ----------------------------------------------------------------------

class _Cursor:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise Malformed("packet cut")
        self.pos += 1
        return self.data[self.pos - 1]

    def short(self) -> int:
        if self.pos + 2 > self.end:
            raise Malformed("packet cut")
        self.pos += 2
        return self.data[self.pos - 2] << 8 | self.data[self.pos - 1]

    def int4(self) -> int:
        if self.pos + 4 > self.end:
            raise Malformed("packet cut")
        self.pos += 4
        return int.from_bytes(self.data[self.pos - 4:self.pos], "big")

    def varint(self) -> int:
        value = 0
        for i in range(4):
            byte = self.byte()
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise Malformed("variable byte integer longer than 4 bytes")

    def raw(self) -> bytes:
        n = self.short()
        if self.pos + n > self.end:
            raise Malformed("string overruns the packet")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def text(self) -> str:
        value = self.raw().decode("utf-8", "replace")
        return value if len(value) <= STRING_LIMIT else value[:STRING_LIMIT] + "..."

    def properties(self) -> dict[str, Any]:
        length = self.varint()
        stop = self.pos + length
        if stop > self.end:
            raise Malformed("properties overrun the packet")
        out: dict[str, Any] = {}
        outer, self.end = self.end, stop
        try:
            while self.pos < stop:
                ident = self.varint()
                known = PROPERTIES.get(ident)
                if known is None:
                    raise Malformed(f"unknown property {ident}")
                name, kind = known
                if kind == "b":
                    value: Any = self.byte()
                elif kind == "h":
                    value = self.short()
                elif kind == "i":
                    value = self.int4()
                elif kind == "v":
                    value = self.varint()
                elif kind == "s":
                    value = self.text()
                elif kind == "d":
                    value = self.raw()[:STRING_LIMIT].hex()
                else:
                    value = [self.text(), self.text()]
                if kind == "p" or ident == 11:     # may repeat
                    out.setdefault(name, []).append(value)
                else:
                    out[name] = value
        finally:
            self.end = outer
        return out


def _reason(code: int | None, version: int, kind: int) -> str:
    if code is None:
        return ""
    if version < 5:
        if kind == CONNACK:
            return CONNACK_V3.get(code, f"return code {code}")
        return "Failure" if code == 0x80 else REASONS_V5.get(code, f"code {code}")
    return REASONS_V5.get(code, f"reason code {code:#04x}")


def _failed(code: int | None, version: int, kind: int) -> bool:
    if code is None:
        return False
    if kind == CONNACK and version < 5:
        return code != 0
    return code >= 0x80


# -- detection ---------------------------------------------------------------------------

def _connect_state(data: bytes) -> Detect:
    """A CONNECT at the start: fixed header, then "MQTT" (or "MQIsdp") and a level 3-5."""
    header = fixed_header(data, 0)
    if header is False:
        return Detect.NO
    if header is None:
        return Detect.MORE if data[0] == 0x10 else Detect.NO
    first, remaining, hlen = header
    if first != 0x10 or not _plausible_size(CONNECT, remaining):
        return Detect.NO
    body = data[hlen:hlen + 9]
    for name, level_at in ((b"\x00\x04MQTT", 6), (b"\x00\x06MQIsdp", 8)):
        n = min(len(body), len(name))
        if body[:n] == name[:n]:
            if len(body) <= level_at:
                return Detect.MORE
            return Detect.MATCH if body[level_at] in (3, 4, 5) else Detect.NO
    return Detect.NO


# Packet types only the other side sends: seen from this side, the roles are the other way
# round (a capture that starts after the CONNECT, on a port no hint knows).
_NOT_FROM: Final = {True: frozenset({CONNACK, SUBACK, UNSUBACK, PINGRESP}),
             False: frozenset({CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ})}


def _chain_state(data: bytes, client: bool) -> Detect:
    """Mid-stream: packets with valid fixed headers and plausible sizes back to back from the
    first byte, each one this side sends, at least one of them checkable (a PUBLISH with a
    readable topic, SUBSCRIBE, CONNACK, SUBACK), ending at the end of the data or in a
    plausible last packet."""
    not_from = _NOT_FROM[client]
    pos, n, strong, count = 0, len(data), False, 0
    while pos < n and count < 64:
        header = fixed_header(data, pos)
        if header is False:
            return Detect.NO
        if header is None:
            break
        first, remaining, hlen = header
        kind = first >> 4
        if kind == CONNECT or kind in not_from or not _plausible_size(kind, remaining):
            return Detect.NO
        end = pos + hlen + remaining
        if kind == PUBLISH and pos + hlen + 2 <= n:
            tlen = data[pos + hlen] << 8 | data[pos + hlen + 1]
            if tlen == 0 or tlen + 2 > remaining:
                return Detect.NO
            topic = data[pos + hlen + 2:min(end, pos + hlen + 2 + tlen)]
            if any(c < 0x20 or c in (0x23, 0x2B) for c in topic[:256]):
                return Detect.NO
            if pos + hlen + 2 + tlen <= n:
                strong = True
        elif kind in (SUBSCRIBE, UNSUBSCRIBE) and end <= n:
            strong = True
        elif kind == CONNACK and end <= n and data[pos + hlen] <= 1:
            strong = True
        if end > n:
            break
        pos = end
        count += 1
    if strong:
        return Detect.MATCH
    return Detect.MORE if n < 4 else Detect.NO


def _direction_state(data: bytes, client: bool) -> Detect:
    if client and data[0] == 0x10:
        return _connect_state(data)
    return _chain_state(data, client)


def _other_sides_packet(data: bytes, client: bool) -> bool:
    """The direction begins with a whole, well-formed packet only the other side sends (a
    CONNACK from the "client"): the roles are the other way round."""
    header = fixed_header(data, 0)
    if not isinstance(header, tuple):
        return False
    first, remaining, hlen = header
    kind = first >> 4
    end = hlen + remaining
    return kind in _NOT_FROM[client] and _plausible_size(kind, remaining) and end <= len(data) \
        and (end == len(data) or fixed_header(data, end) is not False)


def detect(client: bytes, server: bytes) -> Detect:
    if (client and _other_sides_packet(client, True)) or \
            (server and _other_sides_packet(server, False)):
        return Detect.NO
    c = _direction_state(client, True) if client else None
    s = _direction_state(server, False) if server else None
    if c is Detect.MATCH or s is Detect.MATCH:
        return Detect.MATCH
    if c is Detect.NO and s is Detect.NO:
        return Detect.NO
    return Detect.MORE


# -- the fast path's JSON ------------------------------------------------------------------

# The fast path's PUBLISH fields as the entry encodes them (Exchange.request_json), for less
# than encoding the dicts: the JSON of a topic's fields (with its QoS, flags and sender) is
# kept cut around its numbers, joined with their digits per packet (msgspec writes an int as
# its decimal digits, as str() and an f-string do). A QoS 1
# PUBLISH's JSON is a str (one f-string: msgspec.Raw takes a str, and writes its UTF-8, which
# for ASCII text is the str's own bytes): a bytes join of the digits' encoded strs cost more
# than the dict's encoding saved. Its PUBACK's four fields are encoded as a dict: a Raw of
# them made per packet (~1.1k instructions: the f-string, the digits, the Raw's call) cost
# what msgspec's encoding of the dict does.
_ENCODER: Final = msgspec.json.Encoder()
_RAW: Final = msgspec.Raw        # (a module attribute read per call otherwise, compiled)
_SIZE_KEY: Final = b'"payload_size":'
_ID_KEY: Final = b'"packet_id":'
# What a reader keeps per topic: its QoS 0 exchanges' fields and their JSON by payload size
# and flags, a bound (past it, emptied), and the topics it keeps them for.
PUBLISH0_KEPT: Final = 256
TOPICS_KEPT: Final = 64
JsonParts = tuple[bytes, bytes, bytes]


def publish_json_parts(topic: str, qos: int, flags: int, sender: str) -> JsonParts:
    """The JSON of the fields _Reader._whole_bytes makes of a PUBLISH (with the "sender"
    packet() adds), cut around its numbers: QoS 0 is head + payload_size + tail, QoS 1 and 2
    head + packet_id + middle + payload_size + tail. Encoded by msgspec, as the entry is:
    the same bytes (they hold valid UTF-8: a topic's text was decoded with replacements)."""
    fields: dict[str, Any] = {"packet_type": "PUBLISH", "topic": topic, "qos": qos,
                              "retain": bool(flags & 1), "dup": bool(flags & 8)}
    if qos:
        fields["packet_id"] = 0
    fields["payload_size"] = 0
    fields["sender"] = sender
    encoded = _ENCODER.encode(fields)
    # The last keys, found from the end: a string's quotes are escaped, so none holds them.
    size_at = encoded.rindex(_SIZE_KEY + b"0,") + len(_SIZE_KEY)
    tail = encoded[size_at + 1:]
    if not qos:
        return encoded[:size_at], b"", tail
    id_at = encoded.rindex(_ID_KEY + b"0,", 0, size_at) + len(_ID_KEY)
    return encoded[:id_at], encoded[id_at + 1:size_at], tail


class _TopicJson:
    """A reader's kept JSON of one topic's PUBLISH fields (publish_json_parts) by QoS and
    flags, and its QoS 0 exchanges' fields with their JSON by payload size and flags (a
    sender publishes the same sizes again and again: the dict and its JSON shared by those
    exchanges, never changed after their emit)."""

    __slots__ = ("topic", "sender", "parts", "publish0", "qos1_flags", "qos1", "fields_key",
                 "fields")

    def __init__(self, topic: str, sender: str) -> None:
        self.topic = topic
        self.sender = sender
        self.parts: dict[int, JsonParts] = {}          # by qos << 4 | flags
        self.publish0: dict[int, tuple[dict[str, Any], msgspec.Raw]] = {}   # by size << 4 | flags
        # The last QoS 1 flags' parts as strs (publish1_json)
        self.qos1_flags = -1
        self.qos1 = ("", "", "")
        # The last QoS 1 or 2 PUBLISH's fields but its numbers, by qos << 4 | flags
        # (publish_fields): never handed out, copied.
        self.fields_key = -1
        self.fields: dict[str, Any] = {}

    def parts_of(self, qos: int, flags: int) -> JsonParts:
        key = qos << 4 | flags
        parts = self.parts.get(key)
        if parts is None:
            parts = self.parts[key] = publish_json_parts(self.topic, qos, flags, self.sender)
        return parts

    def publish0_of(self, flags: int, size: int) -> tuple[dict[str, Any], msgspec.Raw]:
        """A QoS 0 PUBLISH's fields (flags: its retain and dup bits) and their JSON."""
        key = size << 4 | flags
        made = self.publish0.get(key)
        if made is None:
            head, _, tail = self.parts_of(0, flags)
            if len(self.publish0) >= PUBLISH0_KEPT:
                self.publish0.clear()
            made = self.publish0[key] = (
                {"packet_type": "PUBLISH", "topic": self.topic, "qos": 0,
                 "retain": bool(flags & 1), "dup": bool(flags & 8), "payload_size": size,
                 "sender": self.sender},
                _RAW(head + str(size).encode() + tail))
        return made

    def publish_fields(self, qos: int, flags: int, packet_id: int, size: int) -> dict[str, Any]:
        """A QoS 1 or 2 PUBLISH's fields (flags: its retain and dup bits), as _parse and
        decode make them: a copy of the kept ones with its numbers set (a copy of a dict and
        two values replaced cost about half of building the seven entries)."""
        key = qos << 4 | flags
        if key != self.fields_key:
            self.fields_key = key
            self.fields = {"packet_type": "PUBLISH", "topic": self.topic, "qos": qos,
                           "retain": bool(flags & 1), "dup": bool(flags & 8), "packet_id": 0,
                           "payload_size": 0}
        fields = self.fields.copy()
        fields["packet_id"] = packet_id
        fields["payload_size"] = size
        return fields

    def publish1_json(self, flags: int, packet_id: int, size: int) -> msgspec.Raw:
        """A QoS 1 PUBLISH's fields' JSON (flags: its retain and dup bits)."""
        if flags != self.qos1_flags:
            head, middle, tail = self.parts_of(1, flags)
            self.qos1 = (head.decode(), middle.decode(), tail.decode())
            self.qos1_flags = flags
        head_text, middle_text, tail_text = self.qos1
        return _RAW(f"{head_text}{packet_id}{middle_text}{size}{tail_text}")


# -- packets -----------------------------------------------------------------------------

class _Packet:
    __slots__ = ("kind", "flags", "direction", "fields", "start", "end", "ts", "end_ts", "ref",
                 "end_ref", "size", "payload", "notes", "packet_id", "code", "topic_json",
                 "payload_size")

    def __init__(self, kind: int, flags: int, direction: Direction,
                 fields: dict[str, Any] | None = None) -> None:
        self.kind, self.flags, self.direction = kind, flags, direction
        self.fields: dict[str, Any] = {"packet_type": NAMES[kind]} if fields is None else fields
        self.start = self.end = self.ts = self.end_ts = 0
        self.ref = self.end_ref = (0, 0)
        self.size = 0
        self.payload: bytearray | None = None
        self.notes: list[str] = []
        self.packet_id: int | None = None
        self.code: int | None = None
        # A QoS 1 PUBLISH of the fast path: its topic's kept JSON, and its payload size.
        self.topic_json: _TopicJson | None = None
        self.payload_size = 0


class _Flow:
    """A request and the packets that answer it."""

    __slots__ = ("request", "replies", "done")

    def __init__(self, request: _Packet | None) -> None:
        self.request = request
        self.replies: list[_Packet] = []
        self.done = False


SYNCED: Final = 0
RESYNC: Final = 1
SKIP: Final = 2


class _Reader(StreamReader):
    """Cuts one direction into packets; a PUBLISH too large to buffer is read from its head
    and its payload passed over by length (kept up to body_limit), a gap in it ends it."""

    __slots__ = ("s", "state", "skip_left", "skipping", "aliases", "topic_raw", "topic",
                 "topic_json", "topics_json")

    def __init__(self, session: MqttSession, direction: Direction) -> None:
        super().__init__(direction)
        # The session as its native class (not a Protocol): mypyc then calls its methods and
        # reads its attributes directly instead of through Python attribute lookups.
        self.s = session
        self.state = RESYNC            # the first bytes must look like a packet start
        self.skip_left = 0
        self.skipping: _Packet | None = None
        self.aliases: dict[int, str] = {}   # v5 topic aliases of this sender
        # The fast path's last PUBLISH topic: its bytes and its text (_whole_bytes), and its
        # kept JSON (of the last TOPICS_KEPT topics: topics_json).
        self.topic_raw = b""
        self.topic = ""
        self.topic_json = _TopicJson("", "server" if direction == S2C else "client")
        self.topics_json: dict[str, _TopicJson] = {}

    def take(self, data: bytes, offset: int, ts: int, ref: PacketRef) -> None:
        self.last_ts, self.last_ref = ts, ref
        pos = 0
        if self.state == SKIP:
            take = min(len(data), self.skip_left)
            self.skip_left -= take
            packet = self.skipping
            assert packet is not None
            if packet.payload is not None:
                room = self.s.body_limit - len(packet.payload)
                if room > 0:
                    packet.payload += data[:min(take, room)]
            if self.skip_left:
                return
            packet.end, packet.end_ts, packet.end_ref = offset + take, ts, ref
            self.skipping = None
            self.state = SYNCED
            self.s.packet(packet)
            pos = take
            if pos == len(data):
                return
        if self.state == RESYNC:
            self.drop()                     # a chunk that began no packet: dropped
            if not self._plausible_start(data, pos):
                self.skipped += len(data) - pos
                return
            self.state = SYNCED
        if not self.buf:
            # Nothing buffered (the commonest chunk): the fast path reads its whole packets
            # first, as parse would, without the chunk's mark (a tuple and four ints made and
            # freed per chunk): every packet it reads starts in this chunk, so none is looked
            # up. The rest (none, mostly) goes the usual way, its mark from its first byte.
            if self.marks:
                self.marks.clear()
            n = len(data)
            taken = self._whole(data, pos, n, offset, ts, ref)
            if taken >= n:
                self.base = offset + pos
                return
            pos = taken
        super().take(data[pos:] if pos else data, offset + pos, ts, ref)

    def parse(self, work: bytes | bytearray, base: int, ts: int, ref: PacketRef) -> int:
        n = len(work)
        if not isinstance(work, bytes):
            # Bytes held from an earlier chunk: indexing a bytearray is a generic call per byte
            # (mypyc boxes the index and the byte), a typed bytes' is native; so the packets
            # are read from a copy, made only when the first one lies whole in it (not for each
            # chunk of a long one). Else no packet ends here and the fast path takes none.
            header = fixed_header(work, 0)
            if isinstance(header, tuple) and header[1] + header[2] <= n:
                work = bytes(work)
        # Whole PUBLISH and acknowledgement packets of the common shapes go by the fast path;
        # the loop below takes the first it leaves (cut by the chunk's end, or unusual), then
        # hands the rest back to it.
        pos = self._whole(work, 0, n, base, ts, ref)
        while pos < n:
            header = fixed_header(work, pos)
            if header is None:
                break
            if header is False or not _plausible_size(work[pos] >> 4, header[1]):
                self.s.malformed(self.direction, "malformed: not an MQTT fixed header")
                self._resync(n - pos)
                return n
            first, remaining, hlen = header
            end = pos + hlen + remaining
            if end > n:
                if first >> 4 == PUBLISH and hlen + remaining > PACKET_BUFFER \
                        and n - pos >= HEAD_NEEDED:
                    self._skip_publish(work, pos, hlen, remaining, base)
                    return n
                if n - pos > PACKET_BUFFER + HEAD_NEEDED:
                    self.s.malformed(self.direction, "malformed: packet over the buffer limit")
                    self._resync(n - pos)
                    return n
                break
            packet = self._parse(work, pos, hlen, end, base)
            pos = end
            if packet is not None:
                self.s.packet(packet)
            if self.state == SYNCED and not self.dead:
                pos = self._whole(work, pos, n, base, ts, ref)
        return pos

    def _whole(self, work: bytes | bytearray, pos: int, n: int, base: int, ts: int,
               ref: PacketRef) -> int:
        """The fast path: whole packets at work[pos:] that are a PUBLISH the session's version
        reads without properties (3.x, or 5 with an empty property block) or a two-byte
        PUBACK/PUBREC/PUBREL/PUBCOMP, made exactly as _parse and MqttSession.decode make them
        and handed to the session. Returns where the first packet it does not take begins
        (cut by the end of work, another type, anything the general path must judge)."""
        if isinstance(work, bytes):
            return self._whole_bytes(work, pos, n, base, ts, ref)
        return pos        # a bytearray only when its first packet is not whole (parse)

    def _whole_bytes(self, work: bytes, pos: int, n: int, base: int, ts: int,
                     ref: PacketRef) -> int:
        session = self.s
        version = session.version
        if version == 0:
            return pos              # a PUBLISH's properties are guessed: the general path
        v5 = version == 5
        body_limit = session.body_limit
        direction = self.direction
        marks = self.marks
        # (no marks: the chunk (ts, ref) just taken holds every packet, take's fast path)
        last_start = marks[-1][0] if marks else -1
        while n - pos >= 4:
            first = work[pos]
            kind = first >> 4
            remaining = work[pos + 1]
            if remaining & 0x80:                  # a longer length: up to 4 bytes
                if kind != PUBLISH:
                    return pos
                remaining &= 0x7F
                hlen = 0
                for i in range(1, 4):
                    if pos + 1 + i >= n:
                        return pos
                    byte = work[pos + 1 + i]
                    remaining |= (byte & 0x7F) << (7 * i)
                    if not byte & 0x80:
                        if byte == 0:
                            return pos             # non-minimal: the general path says so
                        hlen = 2 + i
                        break
                if not hlen:
                    return pos
            else:
                hlen = 2
            end = pos + hlen + remaining
            if end > n:
                return pos
            if kind == PUBLISH:
                flags = first & 15
                qos = flags >> 1 & 3
                if qos == 3:
                    return pos
                at = pos + hlen
                tlen = work[at] << 8 | work[at + 1]
                at += 2 + tlen
                if at > end:
                    return pos
                # A sender publishes to the same topic again and again: its last topic's
                # bytes and text kept (one bytes comparison instead of a decode).
                raw = work[pos + hlen + 2:at]
                if raw == self.topic_raw:
                    topic = self.topic
                else:
                    topic = raw.decode("utf-8", "replace")
                    if len(topic) > STRING_LIMIT:
                        topic = topic[:STRING_LIMIT] + "..."
                    self.topic_raw, self.topic = raw, topic
                    self._topic_changed(topic)
                packet_id = 0
                if qos:
                    if at + 2 > end:
                        return pos
                    packet_id = work[at] << 8 | work[at + 1]
                    at += 2
                if v5:
                    if at >= end or work[at]:
                        return pos                # properties: the general path reads them
                    at += 1
                if not qos:
                    # QoS 0 is its own exchange: made here, without a _Packet (the fields
                    # with the "sender" _finish adds, in its place), the fields and their
                    # JSON kept per size and flags.
                    start = base + pos
                    if start >= last_start:       # within the chunk just taken
                        first_ts, first_ref, last_ref = ts, ref, ref
                    else:
                        _, first_ts, first_ref = chunk_at(marks, start)
                        last_ref = chunk_at(marks, base + end - 1)[2]
                    fields0, fields_json = self.topic_json.publish0_of(flags & 9, end - at)
                    session.publish0(
                        fields0, fields_json, topic, direction, start, end - pos, first_ts,
                        first_ref, last_ref,
                        bytes(work[at:min(end, at + body_limit)]) if body_limit > 0 else None)
                    pos = end
                    continue
                topic_json = self.topic_json
                # (a compiled class cannot be made by __new__ alone, as this was)
                packet = _Packet(PUBLISH, flags, direction,
                                 topic_json.publish_fields(qos, flags & 9, packet_id, end - at))
                packet.packet_id = packet_id
                if qos == 1:              # its JSON when its PUBACK ends it (acked)
                    packet.topic_json = topic_json
                    packet.payload_size = end - at
                if body_limit > 0:
                    packet.payload = bytearray(work[at:min(end, at + body_limit)])
            elif PUBACK <= kind <= PUBCOMP and remaining == 2 and \
                    first & 15 == (2 if kind == PUBREL else 0):
                packet_id = work[pos + 2] << 8 | work[pos + 3]
                if kind == PUBACK:
                    # The acknowledgement of a QoS 1 PUBLISH waiting for it ends its
                    # exchange here, without a _Packet; any other goes on below.
                    start = base + pos
                    if start >= last_start:
                        last_ts, last_ref = ts, ref
                    else:
                        _, last_ts, last_ref = chunk_at(marks, base + end - 1)
                    if session.acked(packet_id, direction, start, last_ts, last_ref):
                        pos = end
                        continue
                packet = _Packet(kind, first & 15, direction,
                                 {"packet_type": NAMES[kind], "packet_id": packet_id,
                                  "reason_code": 0})
                packet.packet_id, packet.code = packet_id, 0
            else:
                return pos
            start = base + pos
            packet.start, packet.end, packet.size = start, base + end, end - pos
            if start >= last_start:               # within the chunk just taken
                packet.ts = packet.end_ts = ts
                packet.ref = packet.end_ref = ref
            else:
                _, packet.ts, packet.ref = chunk_at(marks, start)
                _, packet.end_ts, packet.end_ref = chunk_at(marks, base + end - 1)
            pos = end
            # (native calls: a bound method would not be)
            if kind == PUBLISH:
                session.publish_waits(packet, packet_id)
            else:
                session.packet(packet)
        return pos

    def _topic_changed(self, topic: str) -> None:
        """The fast path's PUBLISH topic is `topic` now: its kept JSON (made if new)."""
        kept = self.topics_json.get(topic)
        if kept is None:
            if len(self.topics_json) >= TOPICS_KEPT:
                self.topics_json.clear()
            kept = self.topics_json[topic] = _TopicJson(topic, self.topic_json.sender)
        self.topic_json = kept

    def _plausible_start(self, data: bytes, pos: int) -> bool:
        header = fixed_header(data, pos)
        if header is None:
            return len(data) - pos < 2 and data[pos] >> 4 in NAMES
        if header is False:
            return False
        first, remaining, hlen = header
        if not _plausible_size(first >> 4, remaining):
            return False
        end = pos + hlen + remaining
        if first >> 4 == PUBLISH and pos + hlen + 2 <= len(data):
            tlen = data[pos + hlen] << 8 | data[pos + hlen + 1]
            if tlen + 2 > remaining:
                return False
        return end >= len(data) or fixed_header(data, end) is not False

    def _parse(self, work: bytes | bytearray, pos: int, hlen: int, end: int,
               base: int) -> _Packet | None:
        first = work[pos]
        packet = _Packet(first >> 4, first & 15, self.direction)
        span = self.span_of(base + pos, base + end)
        packet.start, packet.end, packet.size = span.start, span.end, span.size
        packet.ts, packet.ref = span.first_ts, span.first_ref
        packet.end_ts, packet.end_ref = span.last_ts, span.last_ref
        try:
            self.s.decode(packet, bytes(work[pos + hlen:end]), end - pos - hlen, self)
        except Malformed as exc:
            packet.notes.append(f"malformed: {NAMES[packet.kind]}: {exc}")
            self.s.malformed_count += 1
        return packet

    def _skip_publish(self, work: bytes | bytearray, pos: int, hlen: int, remaining: int,
                      base: int) -> None:
        """A PUBLISH too large to buffer: read its head from the bytes here, skip the rest."""
        n = len(work)
        first = work[pos]
        packet = _Packet(first >> 4, first & 15, self.direction)
        packet.start, packet.size = base + pos, hlen + remaining
        _, packet.ts, packet.ref = self.where(packet.start)
        try:
            self.s.decode(packet, bytes(work[pos + hlen:n]), remaining, self)
        except Malformed as exc:
            packet.notes.append(f"malformed: PUBLISH: {exc}")
        self.skipping = packet
        self.skip_left = pos + hlen + remaining - n
        self.state = SKIP

    def _resync(self, dropped: int) -> None:
        self.skipped += dropped
        self.state = RESYNC

    def lose(self, offset: int, end: int, ts: int) -> None:
        if self.state == SKIP and self.skipping is not None:
            packet = self.skipping
            packet.notes.append("gap in payload")
            packet.end, packet.end_ts, packet.end_ref = offset, self.last_ts, self.last_ref
            self.skipping = None
            self.s.packet(packet, complete=False)
        elif self.buf:
            self.s.malformed(self.direction, "gap")
        self.state = RESYNC


# -- the session -------------------------------------------------------------------------

class MqttSession(TwoWaySession[_Reader]):
    def __init__(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> None:
        super().__init__(_Reader(self, C2S), _Reader(self, S2C))
        self.flow = flow
        self.emit = emit
        self.body_limit = body_limit
        self.version = 0                     # protocol level from CONNECT; 0 = not seen
        self.connects: deque[_Flow] = deque()
        self.pings: deque[_Flow] = deque()
        # (packet id + 1) * 2 + sender (0 client, 1 server; packet id -1: none) -> flow: an int
        # key, no tuple made and hashed per lookup
        self.pending: dict[int, _Flow] = {}
        self.malformed_count = 0
        self.losses = 0
        # The fast path's last summary per QoS 0 and 1, and its topic (publish_summary).
        self.summary_topics = ["", ""]
        self.summaries = [_publish_summary("", 0), _publish_summary("", 1)]

    @property
    def level(self) -> int:
        return self.version or 4

    def held_bytes(self) -> int:
        held = super().held_bytes()
        if self.dead:
            return 0
        for reader in self.readers:
            if reader.skipping is not None and reader.skipping.payload is not None:
                held += len(reader.skipping.payload)
        return held

    def kept_bytes(self) -> int:
        """Payloads of packets waiting for their acknowledgement or reply."""
        kept = 0
        for flow in [*self.connects, *self.pings, *self.pending.values()]:
            for packet in (flow.request, *flow.replies):
                if packet is not None and packet.payload is not None:
                    kept += len(packet.payload)
        return kept

    def on_close(self, ts_ns: int) -> None:
        if self.dead:
            return
        self.dead = True
        for reader in self.readers:
            if reader.state == SKIP and reader.skipping is not None:
                packet, reader.skipping = reader.skipping, None
                packet.notes.append("payload cut by the end of the connection")
                packet.end, packet.end_ts, packet.end_ref = (reader.expected, reader.last_ts,
                                                             reader.last_ref)
                self.packet(packet, complete=False)
        waiting = list(self.connects) + list(self.pings) + list(self.pending.values())
        self.connects.clear()
        self.pings.clear()
        self.pending.clear()
        waiting.sort(key=lambda f: f.request.ts if f.request else 0)
        for flow in waiting:
            self._finish(flow, complete=False)

    def malformed(self, direction: Direction, why: str) -> None:
        if why.startswith("malformed"):
            self.malformed_count += 1
        else:
            self.losses += 1

    # -- decoding --

    def decode(self, packet: _Packet, body: bytes, remaining: int, reader: _Reader) -> None:
        """Fields of `packet` from its variable header and payload (body may be the first
        bytes only of a large PUBLISH whose payload is `remaining` minus the header)."""
        kind = packet.kind
        fields = packet.fields
        cur = _Cursor(body, 0, len(body))
        if kind == CONNECT:
            name = cur.text()
            level = cur.byte()
            flags = cur.byte()
            keepalive = cur.short()
            if level in VERSIONS:
                self.version = level
            fields.update(protocol_name=name, protocol_version=level,
                          version=VERSIONS.get(level, str(level)),
                          clean_session=bool(flags & 2), keepalive=keepalive,
                          username_present=bool(flags & 0x80),
                          password_present=bool(flags & 0x40), will=bool(flags & 4))
            if level == 5:
                props = cur.properties()
                if props:
                    fields["properties"] = props
            fields["client_id"] = cur.text()
            if flags & 4:
                if level == 5:
                    cur.properties()
                fields["will_topic"] = cur.text()
                fields["will_qos"] = flags >> 3 & 3
                fields["will_retain"] = bool(flags & 0x20)
            return
        if kind == PUBLISH:
            qos = packet.flags >> 1 & 3
            topic = cur.text()
            fields.update(topic=topic, qos=qos, retain=bool(packet.flags & 1),
                          dup=bool(packet.flags & 8))
            if qos:
                packet.packet_id = cur.short()
                fields["packet_id"] = packet.packet_id
            if not self.version:
                self._guess_properties(cur)
            if self.version == 5:
                props = cur.properties()
                alias = props.get("topic_alias")
                if isinstance(alias, int):
                    if topic:
                        reader.aliases[alias] = topic
                    else:
                        fields["topic"] = reader.aliases.get(alias, "")
                if props:
                    fields["properties"] = props
            fields["payload_size"] = remaining - cur.pos
            if self.body_limit > 0:
                packet.payload = bytearray(body[cur.pos:cur.pos + self.body_limit])
            return
        if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, SUBACK):
            packet.packet_id = cur.short()
            fields["packet_id"] = packet.packet_id
            if kind in (SUBACK, UNSUBACK):
                if self.version == 5 or (not self.version and kind == UNSUBACK
                                         and remaining > 2):
                    self.version = self.version or 5
                    props = cur.properties()
                    if props:
                        fields["properties"] = props
                codes = list(body[cur.pos:])
                if codes:
                    fields["reason_codes"] = codes
                    failures = [c for c in codes if c >= 0x80]
                    packet.code = failures[0] if failures else 0
                else:
                    packet.code = 0
                return
            if remaining > 2:
                self.version = self.version or 5
                packet.code = cur.byte()
                if remaining > 3:
                    props = cur.properties()
                    if props:
                        fields["properties"] = props
            else:
                packet.code = 0
            fields["reason_code"] = packet.code
            return
        if kind == CONNACK:
            flags = cur.byte()
            packet.code = cur.byte()
            fields.update(session_present=bool(flags & 1), reason_code=packet.code)
            if remaining > 2:
                self.version = self.version or 5
                props = cur.properties()
                if props:
                    fields["properties"] = props
            return
        if kind in (SUBSCRIBE, UNSUBSCRIBE):
            packet.packet_id = cur.short()
            fields["packet_id"] = packet.packet_id
            if not self.version:
                # 3.x or 5 (properties first)? Whichever reads the packet exactly.
                start = cur.pos
                try:
                    self._topic_filters(kind, cur, 4, strict=True)
                except Malformed:
                    try:
                        cur.pos = start
                        cur.properties()
                        self._topic_filters(kind, cur, 5, strict=True)
                        self.version = 5
                    except Malformed:
                        pass
                cur.pos = start
            if self.version == 5:
                props = cur.properties()
                if props:
                    fields["properties"] = props
            fields["topics"] = self._topic_filters(kind, cur, self.level, strict=False)
            return
        if kind in (DISCONNECT, AUTH):
            if remaining:
                self.version = self.version or 5
                packet.code = cur.byte()
                fields["reason_code"] = packet.code
                if remaining > 1:
                    props = cur.properties()
                    if props:
                        fields["properties"] = props
            elif self.version == 5:
                packet.code = 0
                fields["reason_code"] = 0
            return
        # PINGREQ, PINGRESP: nothing more

    def _guess_properties(self, cur: _Cursor) -> None:
        """Version unknown (capture started after CONNECT): a PUBLISH whose bytes after the
        topic read as a non-empty v5 property block exactly is taken for version 5."""
        start = cur.pos
        try:
            if cur.pos < cur.end and cur.data[cur.pos] and cur.properties():
                self.version = 5
        except Malformed:
            pass
        cur.pos = start

    @staticmethod
    def _topic_filters(kind: int, cur: _Cursor, version: int, strict: bool) -> list[Any]:
        topics: list[Any] = []
        while cur.pos < cur.end and len(topics) < 100:
            topic = cur.text()
            if strict and not topic:
                raise Malformed("empty topic filter")
            if kind == UNSUBSCRIBE:
                topics.append(topic)
                continue
            options = cur.byte()
            if strict and (options & 3 == 3 or options >> (6 if version == 5 else 2)):
                raise Malformed("reserved subscription option bits set")
            item: dict[str, Any] = {"topic": topic, "qos": options & 3}
            if version == 5:
                item.update(no_local=bool(options & 4), retain_as_published=bool(options & 8),
                            retain_handling=options >> 4 & 3)
            topics.append(item)
        if not topics:
            raise Malformed("no topic filters")
        return topics

    # -- pairing --

    def packet(self, packet: _Packet, complete: bool = True) -> None:
        if not complete:
            packet.notes.append("incomplete")
        kind = packet.kind
        sender = 1 if packet.direction == S2C else 0
        if kind == CONNECT:
            self.connects.append(_Flow(packet))
        elif kind == CONNACK:
            self._reply(self.connects.popleft() if self.connects else None, packet)
        elif kind == PINGREQ:
            self.pings.append(_Flow(packet))
        elif kind == PINGRESP:
            self._reply(self.pings.popleft() if self.pings else None, packet)
        elif kind == PUBLISH:
            qos = packet.fields.get("qos", 0)
            if qos == 0 or packet.packet_id is None:
                self._finish(_Flow(packet))
            else:
                key = (packet.packet_id + 1) << 1 | sender
                old = self.pending.pop(key, None)
                if old is not None:
                    old.request.notes.append("no acknowledgement")  # type: ignore[union-attr]
                    self._finish(old, complete=False)
                self.pending[key] = _Flow(packet)
        elif kind in (SUBSCRIBE, UNSUBSCRIBE):
            if packet.packet_id is None:
                self._finish(_Flow(packet))
            else:
                self.pending[(packet.packet_id + 1) << 1 | sender] = _Flow(packet)
        elif kind in (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK):
            key = (packet.packet_id + 1 if packet.packet_id is not None else 0) << 1 | \
                (1 - sender)
            flow = self.pending.get(key)
            if flow is None or flow.request is None or flow.request.kind != _ANSWERS[kind]:
                self._reply(None, packet)
                return
            flow.replies.append(packet)
            if kind == PUBREC and not _failed(packet.code, self.level, kind):
                return                      # PUBREL and PUBCOMP follow
            del self.pending[key]
            self._finish(flow)
        elif kind == PUBREL:
            flow = self.pending.get(
                (packet.packet_id + 1 if packet.packet_id is not None else 0) << 1 | sender)
            if flow is not None and flow.request is not None:
                flow.replies.append(packet)
            else:
                self._reply(None, packet)
        else:                                # DISCONNECT, AUTH
            self._finish(_Flow(packet))

    def publish_waits(self, packet: _Packet, packet_id: int) -> None:
        """packet() of a QoS 1 or 2 PUBLISH read by the fast path (_Reader._whole): it waits
        for its acknowledgement under its packet id, after a PUBLISH of the same sender and
        id still waiting is finished as unacknowledged. (Called directly: packet() reads the
        QoS from the fields and pops through a Python method call.)"""
        key = (packet_id + 1) << 1 | (1 if packet.direction == S2C else 0)
        pending = self.pending
        old = pending.get(key)
        if old is not None:
            del pending[key]
            if old.request is not None:
                old.request.notes.append("no acknowledgement")
            self._finish(old, complete=False)
        pending[key] = _Flow(packet)

    def publish0(self, fields: dict[str, Any], fields_json: msgspec.Raw, topic: str,
                 direction: Direction, start: int, size: int, ts: int, ref: PacketRef,
                 last_ref: PacketRef, body: bytes | None) -> None:
        """A whole QoS 0 PUBLISH read by the fast path (_Reader._whole): its exchange, as
        packet() and _finish make it of a _Packet with these fields (with "sender";
        fields_json their JSON), at
        stream offset `start` of `direction`, its first byte in (ts, ref), its last in
        last_ref; `body` its payload's first body_limit bytes (None when bodies are not
        kept)."""
        notes: list[str] = []
        if direction == C2S:
            client_offset, server_offset = start, None
        else:
            client_offset, server_offset = self.readers[C2S].expected, start
        if body is not None and fields["payload_size"] > self.body_limit:
            notes.append(f"payload truncated at {self.body_limit} bytes")
        self.emit(Exchange("mqtt", ts, None, self.publish_summary(topic, 0), fields, None, None,
                           size, 0, True, ref, last_ref, client_offset, server_offset, body,
                           None, notes, fields_json))

    def acked(self, packet_id: int, direction: Direction, start: int, end_ts: int,
              end_ref: PacketRef) -> bool:
        """A whole two-byte PUBACK read by the fast path (_Reader._whole), at stream offset
        `start` of `direction`, its last byte in (end_ts, end_ref): when a QoS 1 PUBLISH of
        the other side waits for it with no reply yet, their exchange as packet() and _finish
        make it of a PUBACK _Packet, and True; else False (nothing done: it goes as a _Packet)."""
        key = (packet_id + 1) << 1 | (0 if direction == S2C else 1)
        flow = self.pending.get(key)
        if flow is None or flow.replies:
            return False
        request = flow.request
        if request is None or request.kind != PUBLISH:
            return False
        fields = request.fields
        topic = fields.get("topic", "")
        qos = fields.get("qos", 0)
        if type(topic) is not str or type(qos) is not int or qos != 1:
            return False
        del self.pending[key]
        notes = request.notes
        fields["sender"] = "server" if request.direction == S2C else "client"
        if direction == S2C:            # the client's PUBLISH, the server's PUBACK
            client_offset, server_offset = request.start, start
        else:
            client_offset, server_offset = start, request.start
        body = self._body(request, notes)
        complete = True
        if "incomplete" in notes:
            complete = False
            notes = [n for n in notes if n != "incomplete"]
        request_json = None
        topic_json = request.topic_json
        # (the fast path's fields, and "sender": nothing added since)
        if topic_json is not None and len(fields) == 8:
            request_json = topic_json.publish1_json(request.flags & 9, packet_id,
                                                    request.payload_size)
        # (a copy of the fields with the id set: about half of building the four)
        response = _PUBACK_FIELDS.copy()
        response["packet_id"] = packet_id
        self.emit(Exchange("mqtt", request.ts, end_ts, self.publish_summary(str(topic), 1),
                           fields, response, 0, request.size, 4, complete, request.ref, end_ref,
                           client_offset, server_offset, body, None, notes, request_json))
        return True

    def publish_summary(self, topic: str, qos: int) -> str:
        """_publish_summary of a QoS 0 or 1 PUBLISH, the last one's per QoS kept: a connection
        publishes to the same topics again and again (QoS 0 and 1 alternate in many)."""
        if topic == self.summary_topics[qos]:
            return self.summaries[qos]
        summary = self.summaries[qos] = _publish_summary(topic, qos)
        self.summary_topics[qos] = topic
        return summary

    def _body(self, packet: _Packet, notes: list[str]) -> bytes | None:
        """The packet's payload as its exchange's body (None when bodies are not kept), with a
        note in `notes` when the payload was longer than body_limit (it was cut when read)."""
        if self.body_limit <= 0 or packet.payload is None:
            return None
        if packet.fields.get("payload_size", 0) > self.body_limit:
            notes.append(f"payload truncated at {self.body_limit} bytes")
        return bytes(packet.payload)

    def _reply(self, flow: _Flow | None, packet: _Packet) -> None:
        if flow is None:
            flow = _Flow(None)
        flow.replies.append(packet)
        self._finish(flow)

    def _finish(self, flow: _Flow, complete: bool = True) -> None:
        request = flow.request
        replies = flow.replies
        final = replies[-1] if replies else None
        first = request if request is not None else final
        assert first is not None
        # Taken, not copied: a packet is finished once (as its fields below).
        notes = first.notes
        if first.direction == C2S:
            client_offset, server_offset = first.start, None
        else:
            client_offset, server_offset = self.readers[C2S].expected, first.start
        lone = request is None
        if lone:
            # an acknowledgement whose request was not captured: the packet is the request
            request = first
            replies = []
            final = None
            notes.append("request not captured")
        assert request is not None
        kind = request.kind
        # A packet's fields become its exchange's request or response once (a packet is
        # finished once, then dropped): taken as they are, not copied.
        fields = request_fields = request.fields
        request_fields["sender"] = "server" if request.direction == S2C else "client"
        status = request.code if request.code is not None and kind != CONNECT and \
            kind != PUBLISH else None
        request_body = self._body(request, notes)
        response = None
        end_ns = None
        last_ref = first.end_ref
        response_size = 0
        if final is not None:
            version = self.level
            response = final.fields
            for reply in replies[:-1]:
                if reply.kind == PUBREC:
                    response["pubrec_reason_code"] = reply.code
                notes += reply.notes
            notes += final.notes
            code = final.code
            if kind == PUBLISH and replies[0].kind == PUBREC and \
                    _failed(replies[0].code, version, PUBREC):
                code = replies[0].code
            failed = _failed(code, version, final.kind)
            response["error"] = _reason(code, version, final.kind) if failed else None
            if final.kind == CONNACK:
                response["reason"] = _reason(code, version, CONNACK)
            status = code
            end_ns = final.end_ts
            last_ref = final.end_ref
            response_size = sum(r.size for r in replies) if len(replies) > 1 else final.size
            if final.direction == S2C:
                server_offset = replies[0].start
            else:
                client_offset = replies[0].start
                server_offset = request.start
            if kind == PUBLISH and fields.get("qos") == 2 and final.kind != PUBCOMP and \
                    not failed:
                complete = False
                notes.append("no PUBCOMP")
        elif not lone and (kind in _WAITS_FOR_REPLY or
                           (kind == PUBLISH and fields.get("qos", 0) > 0)):
            complete = False
            if "no acknowledgement" not in notes:
                notes.append("no response")
        if "incomplete" in notes:
            complete = False
            notes = [n for n in notes if n != "incomplete"]
        # Positional: Exchange's fields in order (one call instead of a dozen assignments).
        self.emit(Exchange("mqtt", first.ts, end_ns, _summary(request), request_fields,
                           response, status, request.size, response_size, complete, first.ref,
                           last_ref, client_offset, server_offset, request_body, None, notes))


def _summary(packet: _Packet) -> str:
    fields = packet.fields
    kind = packet.kind
    name: str = NAMES[kind]
    if kind == PUBLISH:
        topic = fields.get("topic", "")
        qos = fields.get("qos", 0)
        if type(topic) is str and type(qos) is int:
            return _publish_summary(str(topic), int(qos))
        text = f"{name} {topic} qos{qos}"
    elif kind == CONNECT:
        text = f"{name} {fields.get('client_id', '')}".rstrip()
    elif kind == SUBSCRIBE:
        text = f"{name} " + ", ".join(t["topic"] for t in fields.get("topics", []))
    elif kind == UNSUBSCRIBE:
        text = f"{name} " + ", ".join(fields.get("topics", []))
    elif "packet_id" in fields:
        text = f"{name} {fields['packet_id']}"
    else:
        text = name
    text = text.strip()
    return text if len(text) <= SUMMARY_LIMIT else text[:SUMMARY_LIMIT - 3] + "..."


def _publish_summary(topic: str, qos: int) -> str:
    """_summary of a PUBLISH whose topic is a str and QoS an int: typed, a native string
    build (the f-string of two untyped values formats each through Python); the same text."""
    text = f"PUBLISH {topic} qos{qos}".strip()
    return text if len(text) <= SUMMARY_LIMIT else text[:SUMMARY_LIMIT - 3] + "..."


class MqttDissector:
    name = "mqtt"
    transports = frozenset({"tcp"})
    ports = frozenset({1883})
    client_first = True         # CONNECT

    def detect(self, client: bytes, server: bytes) -> Detect:
        return detect(client, server)

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> MqttSession:
        return MqttSession(flow, emit, body_limit)
