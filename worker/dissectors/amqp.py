"""AMQP 0-9-1: frames, methods, content, and the pairing of requests with their replies.

Framing: the client opens with the protocol header "AMQP\\x00\\x00\\x09\\x01"; then both sides
send frames `type(1) channel(2) size(4) payload(size) 0xCE`: method (1), content header (2),
content body (3) and heartbeat (8). Each direction has a _Reader that keeps only the bytes of
an unfinished method/header frame and passes body frames through by length (bytes copied only
when the session keeps bodies, body_limit > 0). A frame that does not end in 0xCE, an unknown
type or an oversized frame is malformed: the reader resyncs by scanning for a plausible method
frame (known class and method ids, a frame end at the right place). A direction that starts
mid-stream (capture started late, or a detail view re-reading one entry) is synced the same way.

Messages: a method with content (basic.publish, basic.deliver, basic.get-ok, basic.return) is
finished by its content header (properties, body size) and body frames on the same channel.

Pairing, per channel:
- a synchronous method (queue.declare, basic.consume, connection.open, channel.close, ...) waits
  for its reply from the other side (queue.declare-ok, basic.get-ok or get-empty, ...), unless
  sent with no-wait. A channel.close / connection.close from the other side answers the waiting
  requests of that channel (of every channel) with its reply code and text;
- basic.publish is an entry alone, or, on a channel in confirm mode (confirm.select), waits for
  the broker's basic.ack / basic.nack of its sequence number (`multiple` acknowledges all up to
  it);
- basic.deliver to a consumer that acknowledges (basic.consume without no-ack, seen in this
  capture) waits for the client's basic.ack / nack / reject of its delivery tag; other
  deliveries are entries alone;
- anything else (heartbeats aside) is an entry alone.
Status: 200 (reply-success) when a request got its -ok reply or an ack, the reply code of a
channel.close / connection.close / basic.return, None otherwise. response.error is the reply
text of a close with a code other than 200 ("NOT_FOUND - no queue 'x' in vhost '/'"), or
"nack" / "reject".

Never a SASL response in the fields (it holds the password).
"""

from __future__ import annotations

import re
import struct
from collections import deque
from typing import Any, Protocol

from worker.dissectors.base import Detect, Direction, Emit, Exchange, FlowInfo
from worker.dissectors.stream import Span, StreamReader, TwoWaySession
from worker.packet import PacketRef

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_TYPES = frozenset({FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT})
FRAME_END = 0xCE
BUFFERED_FRAME_LIMIT = 1 << 20      # a method or content-header frame larger is not AMQP
BODY_FRAME_LIMIT = 1 << 26
STRING_LIMIT = 1000                 # longer strings are cut in the fields
TABLE_DEPTH = 4
SUMMARY_LIMIT = 256
C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT

# Argument types: o octet, s short, l long, L long long, S shortstr, T longstr, F table,
# b bit (consecutive bits share an octet), t timestamp. Names starting with "reserved" are
# parsed and dropped.
METHODS: dict[tuple[int, int], tuple[str, tuple[tuple[str, str], ...]]] = {
    (10, 10): ("connection.start", (("version_major", "o"), ("version_minor", "o"),
                                    ("server_properties", "F"), ("mechanisms", "T"),
                                    ("locales", "T"))),
    (10, 11): ("connection.start-ok", (("client_properties", "F"), ("mechanism", "S"),
                                       ("response", "T"), ("locale", "S"))),
    (10, 20): ("connection.secure", (("challenge", "T"),)),
    (10, 21): ("connection.secure-ok", (("response", "T"),)),
    (10, 30): ("connection.tune", (("channel_max", "s"), ("frame_max", "l"), ("heartbeat", "s"))),
    (10, 31): ("connection.tune-ok", (("channel_max", "s"), ("frame_max", "l"),
                                      ("heartbeat", "s"))),
    (10, 40): ("connection.open", (("virtual_host", "S"), ("reserved_1", "S"),
                                   ("reserved_2", "b"))),
    (10, 41): ("connection.open-ok", (("reserved_1", "S"),)),
    (10, 50): ("connection.close", (("reply_code", "s"), ("reply_text", "S"), ("class_id", "s"),
                                    ("method_id", "s"))),
    (10, 51): ("connection.close-ok", ()),
    (10, 60): ("connection.blocked", (("reason", "S"),)),
    (10, 61): ("connection.unblocked", ()),
    (10, 70): ("connection.update-secret", (("new_secret", "T"), ("reason", "S"))),
    (10, 71): ("connection.update-secret-ok", ()),
    (20, 10): ("channel.open", (("reserved_1", "S"),)),
    (20, 11): ("channel.open-ok", (("reserved_1", "T"),)),
    (20, 20): ("channel.flow", (("active", "b"),)),
    (20, 21): ("channel.flow-ok", (("active", "b"),)),
    (20, 40): ("channel.close", (("reply_code", "s"), ("reply_text", "S"), ("class_id", "s"),
                                 ("method_id", "s"))),
    (20, 41): ("channel.close-ok", ()),
    (40, 10): ("exchange.declare", (("reserved_1", "s"), ("exchange", "S"), ("type", "S"),
                                    ("passive", "b"), ("durable", "b"), ("auto_delete", "b"),
                                    ("internal", "b"), ("no_wait", "b"), ("arguments", "F"))),
    (40, 11): ("exchange.declare-ok", ()),
    (40, 20): ("exchange.delete", (("reserved_1", "s"), ("exchange", "S"), ("if_unused", "b"),
                                   ("no_wait", "b"))),
    (40, 21): ("exchange.delete-ok", ()),
    (40, 30): ("exchange.bind", (("reserved_1", "s"), ("destination", "S"), ("source", "S"),
                                 ("routing_key", "S"), ("no_wait", "b"), ("arguments", "F"))),
    (40, 31): ("exchange.bind-ok", ()),
    (40, 40): ("exchange.unbind", (("reserved_1", "s"), ("destination", "S"), ("source", "S"),
                                   ("routing_key", "S"), ("no_wait", "b"), ("arguments", "F"))),
    (40, 51): ("exchange.unbind-ok", ()),
    (50, 10): ("queue.declare", (("reserved_1", "s"), ("queue", "S"), ("passive", "b"),
                                 ("durable", "b"), ("exclusive", "b"), ("auto_delete", "b"),
                                 ("no_wait", "b"), ("arguments", "F"))),
    (50, 11): ("queue.declare-ok", (("queue", "S"), ("message_count", "l"),
                                    ("consumer_count", "l"))),
    (50, 20): ("queue.bind", (("reserved_1", "s"), ("queue", "S"), ("exchange", "S"),
                              ("routing_key", "S"), ("no_wait", "b"), ("arguments", "F"))),
    (50, 21): ("queue.bind-ok", ()),
    (50, 30): ("queue.purge", (("reserved_1", "s"), ("queue", "S"), ("no_wait", "b"))),
    (50, 31): ("queue.purge-ok", (("message_count", "l"),)),
    (50, 40): ("queue.delete", (("reserved_1", "s"), ("queue", "S"), ("if_unused", "b"),
                                ("if_empty", "b"), ("no_wait", "b"))),
    (50, 41): ("queue.delete-ok", (("message_count", "l"),)),
    (50, 50): ("queue.unbind", (("reserved_1", "s"), ("queue", "S"), ("exchange", "S"),
                                ("routing_key", "S"), ("arguments", "F"))),
    (50, 51): ("queue.unbind-ok", ()),
    (60, 10): ("basic.qos", (("prefetch_size", "l"), ("prefetch_count", "s"), ("global", "b"))),
    (60, 11): ("basic.qos-ok", ()),
    (60, 20): ("basic.consume", (("reserved_1", "s"), ("queue", "S"), ("consumer_tag", "S"),
                                 ("no_local", "b"), ("no_ack", "b"), ("exclusive", "b"),
                                 ("no_wait", "b"), ("arguments", "F"))),
    (60, 21): ("basic.consume-ok", (("consumer_tag", "S"),)),
    (60, 30): ("basic.cancel", (("consumer_tag", "S"), ("no_wait", "b"))),
    (60, 31): ("basic.cancel-ok", (("consumer_tag", "S"),)),
    (60, 40): ("basic.publish", (("reserved_1", "s"), ("exchange", "S"), ("routing_key", "S"),
                                 ("mandatory", "b"), ("immediate", "b"))),
    (60, 50): ("basic.return", (("reply_code", "s"), ("reply_text", "S"), ("exchange", "S"),
                                ("routing_key", "S"))),
    (60, 60): ("basic.deliver", (("consumer_tag", "S"), ("delivery_tag", "L"),
                                 ("redelivered", "b"), ("exchange", "S"), ("routing_key", "S"))),
    (60, 70): ("basic.get", (("reserved_1", "s"), ("queue", "S"), ("no_ack", "b"))),
    (60, 71): ("basic.get-ok", (("delivery_tag", "L"), ("redelivered", "b"), ("exchange", "S"),
                                ("routing_key", "S"), ("message_count", "l"))),
    (60, 72): ("basic.get-empty", (("reserved_1", "S"),)),
    (60, 80): ("basic.ack", (("delivery_tag", "L"), ("multiple", "b"))),
    (60, 90): ("basic.reject", (("delivery_tag", "L"), ("requeue", "b"))),
    (60, 100): ("basic.recover-async", (("requeue", "b"),)),
    (60, 110): ("basic.recover", (("requeue", "b"),)),
    (60, 111): ("basic.recover-ok", ()),
    (60, 120): ("basic.nack", (("delivery_tag", "L"), ("multiple", "b"), ("requeue", "b"))),
    (85, 10): ("confirm.select", (("no_wait", "b"),)),
    (85, 11): ("confirm.select-ok", ()),
    (90, 10): ("tx.select", ()),
    (90, 11): ("tx.select-ok", ()),
    (90, 20): ("tx.commit", ()),
    (90, 21): ("tx.commit-ok", ()),
    (90, 30): ("tx.rollback", ()),
    (90, 31): ("tx.rollback-ok", ()),
}
# Synchronous requests -> the methods that answer them.
REPLIES: dict[tuple[int, int], tuple[tuple[int, int], ...]] = {
    (10, 10): ((10, 11),), (10, 20): ((10, 21),), (10, 30): ((10, 31),), (10, 40): ((10, 41),),
    (10, 50): ((10, 51),), (10, 70): ((10, 71),),
    (20, 10): ((20, 11),), (20, 20): ((20, 21),), (20, 40): ((20, 41),),
    (40, 10): ((40, 11),), (40, 20): ((40, 21),), (40, 30): ((40, 31),), (40, 40): ((40, 51),),
    (50, 10): ((50, 11),), (50, 20): ((50, 21),), (50, 30): ((50, 31),), (50, 40): ((50, 41),),
    (50, 50): ((50, 51),),
    (60, 10): ((60, 11),), (60, 20): ((60, 21),), (60, 30): ((60, 31),),
    (60, 70): ((60, 71), (60, 72)), (60, 110): ((60, 111),),
    (85, 10): ((85, 11),), (90, 10): ((90, 11),), (90, 20): ((90, 21),), (90, 30): ((90, 31),),
}
REPLY_METHODS = frozenset(r for replies in REPLIES.values() for r in replies)
WITH_CONTENT = frozenset({(60, 40), (60, 50), (60, 60), (60, 71)})
CONNECTION_CLOSE, CHANNEL_CLOSE = (10, 50), (20, 40)
CLOSE_OK = {CONNECTION_CLOSE: (10, 51), CHANNEL_CLOSE: (20, 41)}
PUBLISH, RETURN, DELIVER, GET_OK = (60, 40), (60, 50), (60, 60), (60, 71)
CONSUME, CONSUME_OK, CANCEL_OK = (60, 20), (60, 21), (60, 31)
ACK, NACK, REJECT = (60, 80), (60, 120), (60, 90)
CONFIRM_SELECT = (85, 10)
PROPERTIES = (("content_type", "S"), ("content_encoding", "S"), ("headers", "F"),
              ("delivery_mode", "o"), ("priority", "o"), ("correlation_id", "S"),
              ("reply_to", "S"), ("expiration", "S"), ("message_id", "S"), ("timestamp", "t"),
              ("type", "S"), ("user_id", "S"), ("app_id", "S"), ("cluster_id", "S"))
# Summary target per method: the argument that names what it acts on.
_TARGET_KEYS = ("queue", "exchange", "destination", "consumer_tag", "virtual_host")
_FINE = (0, 200)        # reply codes of a normal close (pika closes channels with 0)
_SECRET_KEYS = frozenset({"response", "challenge", "new_secret"})
# A method frame start: type 1, any channel, size < 1 MiB, a known class id.
_METHOD_FRAME = re.compile(rb"\x01[\x00-\xff]{2}\x00[\x00-\x0f][\x00-\xff]{2}\x00[" + b"".join(
    re.escape(bytes([c])) for c in sorted({k[0] for k in METHODS})) + rb"]", re.DOTALL)
_HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
# Methods only one side sends (detection: seen from the other side, the roles are the other
# way round, e.g. a capture that starts after the protocol header, on a port no hint knows).
# Either side sends close, flow, cancel, ack and nack and their replies.
_EITHER = frozenset({(10, 50), (10, 51), (20, 20), (20, 21), (20, 40), (20, 41), (60, 30),
                     (60, 31), (60, 80), (60, 120)})
_CONNECTION_SERVER = frozenset({(10, 10), (10, 20), (10, 30), (10, 41), (10, 60), (10, 61),
                                (10, 71)})
_SERVER_ONLY = _CONNECTION_SERVER | frozenset(
    k for k in METHODS
    if k[0] != 10 and k not in _EITHER and (k in REPLY_METHODS or k in (RETURN, DELIVER)))
_CLIENT_ONLY = frozenset(k for k in METHODS if k not in _EITHER and k not in _SERVER_ONLY)


class Malformed(ValueError):
    pass


# -- argument decoding -------------------------------------------------------------------

def _text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= STRING_LIMIT else text[:STRING_LIMIT] + "..."


def _table(data: bytes, pos: int, end: int, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    while pos < end:
        n = data[pos]
        key = _text(data[pos + 1:pos + 1 + n])
        pos += 1 + n
        value, pos = _field_value(data, pos, end, depth)
        out[key] = value
    if pos != end:
        raise Malformed("field table overruns its length")
    return out


_FIXED = {b"t"[0]: (1, ">?"), b"b"[0]: (1, ">b"), b"B"[0]: (1, ">B"), b"s"[0]: (2, ">h"),
          b"u"[0]: (2, ">H"), b"I"[0]: (4, ">i"), b"i"[0]: (4, ">I"), b"l"[0]: (8, ">q"),
          b"f"[0]: (4, ">f"), b"d"[0]: (8, ">d"), b"T"[0]: (8, ">Q")}


def _field_value(data: bytes, pos: int, end: int, depth: int) -> tuple[Any, int]:
    if pos >= end:
        raise Malformed("field value cut")
    kind = data[pos]
    pos += 1
    fixed = _FIXED.get(kind)
    if fixed is not None:
        size, fmt = fixed
        if pos + size > end:
            raise Malformed("field value cut")
        value = struct.unpack_from(fmt, data, pos)[0]
        if isinstance(value, float) and value != value:
            value = None                        # NaN is not JSON
        return value, pos + size
    if kind == 0x56:                            # V: void
        return None, pos
    if kind == 0x44:                            # D: decimal (scale, value)
        if pos + 5 > end:
            raise Malformed("field value cut")
        scale, value = struct.unpack_from(">BI", data, pos)
        return value / (10 ** scale) if scale else value, pos + 5
    if kind in (0x53, 0x78, 0x46, 0x41):        # S longstr, x bytes, F table, A array
        if pos + 4 > end:
            raise Malformed("field value cut")
        n = int.from_bytes(data[pos:pos + 4], "big")
        pos += 4
        stop = pos + n
        if stop > end:
            raise Malformed("field value overruns its table")
        if kind == 0x53:
            return _text(data[pos:stop]), stop
        if kind == 0x78:
            return data[pos:stop][:STRING_LIMIT].hex(), stop
        if depth >= TABLE_DEPTH:
            return None, stop
        if kind == 0x46:
            return _table(data, pos, stop, depth + 1), stop
        items = []
        while pos < stop:
            value, pos = _field_value(data, pos, stop, depth + 1)
            items.append(value)
        if pos != stop:
            raise Malformed("array overruns its length")
        return items, stop
    raise Malformed(f"unknown field type {kind:#04x}")


def decode_arguments(spec: tuple[tuple[str, str], ...], data: bytes, pos: int,
                     end: int) -> tuple[dict[str, Any], int]:
    """Arguments of `spec` from data[pos:end] -> ({name: value}, position after them)."""
    out: dict[str, Any] = {}
    bit = 8
    bits = 0
    for name, kind in spec:
        if kind == "b":
            if bit == 8:
                if pos >= end:
                    raise Malformed("arguments cut")
                bits, bit = data[pos], 0
                pos += 1
            value: Any = bool(bits >> bit & 1)
            bit += 1
        else:
            bit = 8
            if kind == "S":
                if pos >= end:
                    raise Malformed("arguments cut")
                n = data[pos]
                if pos + 1 + n > end:
                    raise Malformed("arguments cut")
                value = _text(data[pos + 1:pos + 1 + n])
                pos += 1 + n
            elif kind in "TF":
                if pos + 4 > end:
                    raise Malformed("arguments cut")
                n = int.from_bytes(data[pos:pos + 4], "big")
                stop = pos + 4 + n
                if stop > end:
                    raise Malformed("arguments cut")
                if kind == "F":
                    value = _table(data, pos + 4, stop, 0)
                elif name in _SECRET_KEYS:
                    value = n
                else:
                    value = _text(data[pos + 4:stop])
                pos = stop
            else:
                size = {"o": 1, "s": 2, "l": 4, "L": 8, "t": 8}[kind]
                if pos + size > end:
                    raise Malformed("arguments cut")
                value = int.from_bytes(data[pos:pos + size], "big")
                pos += size
        if not name.startswith("reserved"):
            out[name] = value
    return out, pos


def method_name(class_id: int, method_id: int) -> str:
    known = METHODS.get((class_id, method_id))
    return known[0] if known else f"unknown.{class_id}.{method_id}"


# -- detection ---------------------------------------------------------------------------

def _frame_at(data: bytes, pos: int, client: bool | None = None) -> Detect:
    """Whether a frame that looks like AMQP starts at data[pos:]: a known method (one the
    side sends, when `client` says which side) or a heartbeat, checked up to its frame end
    (MORE: a plausible prefix)."""
    head = data[pos:pos + 11]
    if not head:
        return Detect.MORE
    kind = head[0]
    if kind == FRAME_HEARTBEAT:
        return Detect.MATCH if head[:8] == _HEARTBEAT else (
            Detect.MORE if _HEARTBEAT.startswith(head[:8]) else Detect.NO)
    if kind != FRAME_METHOD:
        return Detect.NO
    if len(head) < 7:
        return Detect.MORE if len(head) < 4 or head[3] == 0 else Detect.NO
    size = int.from_bytes(head[3:7], "big")
    if size < 4 or size > BUFFERED_FRAME_LIMIT:
        return Detect.NO
    if len(head) < 11:
        return Detect.MORE
    key = (int.from_bytes(head[7:9], "big"), int.from_bytes(head[9:11], "big"))
    if key not in METHODS:
        return Detect.NO
    if client is not None and key in (_SERVER_ONLY if client else _CLIENT_ONLY):
        return Detect.NO
    end = pos + 7 + size
    if len(data) <= end:
        return Detect.MORE
    return Detect.MATCH if data[end] == FRAME_END else Detect.NO


def _direction_state(data: bytes, client: bool) -> Detect:
    if client and data[:1] == b"A":
        n = min(len(data), 8)
        if data[:n] == PROTOCOL_HEADER[:n]:
            return Detect.MATCH if n == 8 else Detect.MORE
        return Detect.NO
    state = _frame_at(data, 0, client)
    if state is not Detect.NO:
        return state
    # Mid-stream: a known method frame further in, ending right where it says.
    for m in _METHOD_FRAME.finditer(data, 0, 4096):
        if _frame_at(data, m.start(), client) is Detect.MATCH:
            return Detect.MATCH
    return Detect.NO


def _other_sides_frame(data: bytes, client: bool) -> bool:
    """The direction begins with a whole method frame only the other side sends (a
    connection.start from the "client"): the roles are the other way round."""
    return data[:1] == bytes([FRAME_METHOD]) and _frame_at(data, 0) is Detect.MATCH \
        and _frame_at(data, 0, client) is Detect.NO


def detect(client: bytes, server: bytes) -> Detect:
    if (client and _other_sides_frame(client, True)) or \
            (server and _other_sides_frame(server, False)):
        return Detect.NO
    c = _direction_state(client, True) if client else None
    s = _direction_state(server, False) if server else None
    if c is Detect.MATCH or s is Detect.MATCH:
        return Detect.MATCH
    if c is Detect.NO and s is Detect.NO:
        return Detect.NO
    return Detect.MORE


# -- messages ----------------------------------------------------------------------------

class _Msg:
    """One method (with its content, if any) as sent by one side."""

    __slots__ = ("key", "name", "direction", "channel", "fields", "start", "end", "ts",
                 "end_ts", "ref", "end_ref", "size", "complete", "notes", "body_size",
                 "received", "body", "has_header")

    def __init__(self, key: tuple[int, int], direction: Direction, channel: int,
                 fields: dict[str, Any], start: int, ts: int, ref: PacketRef) -> None:
        self.key = key
        self.name = method_name(*key)
        self.direction = direction
        self.channel = channel
        self.fields = fields
        self.start = self.end = start
        self.ts = self.end_ts = ts
        self.ref = self.end_ref = ref
        self.size = 0
        self.complete = True
        self.notes: list[str] = []
        self.body_size = 0
        self.received = 0
        self.body: bytearray | None = None
        self.has_header = False


class _Channel:
    __slots__ = ("waiting", "content", "confirm", "published", "unconfirmed", "unacked",
                 "consume_no_ack", "consumers")

    def __init__(self) -> None:
        self.waiting: tuple[deque[_Msg], deque[_Msg]] = (deque(), deque())  # per sender
        self.content: list[_Msg | None] = [None, None]   # per sender: waiting for content
        self.confirm = False
        self.published = 0
        self.unconfirmed: dict[int, _Msg] = {}
        self.unacked: dict[int, _Msg] = {}
        self.consume_no_ack: deque[bool] = deque()
        self.consumers: dict[str, bool] = {}             # consumer tag -> no_ack


# -- one direction -----------------------------------------------------------------------

class _Sink(Protocol):
    """All an AMQP reader calls on its session."""

    def protocol_header(self, direction: Direction, header: bytes, offset: int) -> None: ...

    def method(self, direction: Direction, number: int, payload: bytes, span: Span) -> None:
        """A method frame on channel `number`."""

    def header(self, direction: Direction, number: int, payload: bytes, span: Span) -> None:
        """A content header frame."""

    def body(self, direction: Direction, number: int, piece: bytes | bytearray | None,
             length: int, end: int, frame_done: bool) -> None:
        """`length` bytes of a body frame (piece: them, when bodies are kept)."""

    def lost(self, direction: Direction, offset: int, why: str) -> None:
        """Bytes from offset were lost or unreadable."""


class _Reader(StreamReader):
    """Cuts one direction into frames; body frames pass through by length, in pieces."""

    __slots__ = ("s", "synced", "body_left", "body_channel")

    def __init__(self, session: _Sink, direction: Direction) -> None:
        super().__init__(direction)
        self.s = session
        self.synced = False
        self.body_left = 0              # bytes of the current body frame still to come (+ end)
        self.body_channel = 0

    def take(self, data: bytes, offset: int, ts: int, ref: PacketRef) -> None:
        super().take(data, offset, ts, ref)
        if len(self.buf) > BUFFERED_FRAME_LIMIT + 16:
            self.s.lost(self.direction, self.base, "frame longer than the buffer limit")
            self.skipped += len(self.buf)
            self.drop()
            self.synced = False

    def parse(self, work: bytes | bytearray, base: int, ts: int, ref: PacketRef) -> int:
        n = len(work)
        pos = 0
        s = self.s
        direction = self.direction
        while pos < n:
            if self.body_left:
                take = min(n - pos, self.body_left)
                self.body_left -= take
                last = self.body_left == 0
                payload_take = take - 1 if last else take
                piece = work[pos:pos + payload_take] if s.body_limit > 0 else None
                if last and work[pos + take - 1] != FRAME_END:
                    s.body(direction, self.body_channel, piece, payload_take,
                           base + pos + take, False)
                    pos = self._malformed("body frame does not end with 0xCE",
                                          base + pos + take - 1, pos + take, base)
                    continue
                s.body(direction, self.body_channel, piece, payload_take, base + pos + take,
                       last)
                pos += take
                continue
            if not self.synced:
                pos = self._sync(work, pos, base)
                if not self.synced:
                    break
                continue
            if n - pos < 8:
                first = work[pos]
                if first not in FRAME_TYPES and not (first == 0x41 and direction == C2S):
                    pos = self._malformed(f"unknown frame type {first}", base + pos, pos + 1,
                                          base)
                    continue
                break
            kind = work[pos]
            if kind == 0x41 and work[pos:pos + 4] == b"AMQP":
                s.protocol_header(direction, bytes(work[pos:pos + 8]), base + pos)
                pos += 8
                continue
            channel = work[pos + 1] << 8 | work[pos + 2]
            size = int.from_bytes(work[pos + 3:pos + 7], "big")
            if kind not in FRAME_TYPES:
                pos = self._malformed(f"unknown frame type {kind}", base + pos, pos + 1, base)
                continue
            if kind == FRAME_BODY:
                if size > BODY_FRAME_LIMIT:
                    pos = self._malformed(f"body frame of {size} bytes", base + pos, pos + 1,
                                          base)
                    continue
                if n - pos - 7 < size + 1:
                    self.body_left = size + 1
                    self.body_channel = channel
                    pos += 7
                    continue
                if work[pos + 7 + size] != FRAME_END:
                    pos = self._malformed("frame does not end with 0xCE", base + pos, pos + 1,
                                          base)
                    continue
                piece = work[pos + 7:pos + 7 + size] if s.body_limit > 0 else None
                s.body(direction, channel, piece, size, base + pos + 8 + size, True)
                pos += 8 + size
                continue
            if size > BUFFERED_FRAME_LIMIT:
                pos = self._malformed(f"frame of {size} bytes", base + pos, pos + 1, base)
                continue
            end = pos + 8 + size
            if end > n:
                break
            if work[end - 1] != FRAME_END:
                pos = self._malformed("frame does not end with 0xCE", base + pos, pos + 1, base)
                continue
            if kind == FRAME_METHOD:
                s.method(direction, channel, bytes(work[pos + 7:end - 1]),
                         self.span_of(base + pos, base + end))
            elif kind == FRAME_HEADER:
                s.header(direction, channel, bytes(work[pos + 7:end - 1]),
                         self.span_of(base + pos, base + end))
            pos = end                       # heartbeats: nothing to say
        return pos

    def _sync(self, work: bytes | bytearray, pos: int, base: int) -> int:
        """Find a frame start from pos: the protocol header, a known method frame or a
        heartbeat checked up to its frame end. Returns where to go on from."""
        n = len(work)
        if self.direction == C2S and work[pos:pos + 4] == b"AMQP":
            self.synced = True
            return pos
        state = _frame_at(work, pos)
        if state is Detect.MATCH:
            self.synced = True
            return pos
        if state is Detect.MORE:
            return pos                      # wait for the rest of it
        for m in _METHOD_FRAME.finditer(work, pos + 1):
            state = _frame_at(work, m.start())
            if state is Detect.MATCH:
                self.skipped += m.start() - pos
                self.synced = True
                return m.start()
            if state is Detect.MORE:
                self.skipped += m.start() - pos
                return m.start()
        keep = max(pos, n - 10)             # a frame start may begin in the last bytes
        self.skipped += keep - pos
        return keep

    def _malformed(self, why: str, offset: int, resume: int, base: int) -> int:
        self.s.lost(self.direction, offset, f"malformed: {why}")
        self.synced = False
        self.body_left = 0
        self.skipped += 1
        return resume

    def lose(self, offset: int, end: int, ts: int) -> None:
        self.s.lost(self.direction, offset, "gap")
        self.synced = False
        self.body_left = 0


# -- the session -------------------------------------------------------------------------

class AmqpSession(TwoWaySession):
    def __init__(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> None:
        super().__init__(_Reader(self, C2S), _Reader(self, S2C))
        self.flow = flow
        self.emit = emit
        self.body_limit = body_limit
        self.channels: dict[int, _Channel] = {}
        self.version = ""
        self.malformed = 0

    def kept_bytes(self) -> int:
        """Bodies of messages waiting for their content, reply or acknowledgement."""
        seen: set[int] = set()
        kept = 0
        for channel in self.channels.values():
            waiting = [*channel.content, *channel.waiting[0], *channel.waiting[1],
                       *channel.unconfirmed.values(), *channel.unacked.values()]
            for msg in waiting:
                if msg is not None and msg.body is not None and id(msg) not in seen:
                    seen.add(id(msg))
                    kept += len(msg.body)
        return kept

    def on_close(self, ts_ns: int) -> None:
        if self.dead:
            return
        self.dead = True
        for number in sorted(self.channels):
            self._end_channel(number, "no response", None)

    # -- called by the readers --

    def _channel(self, number: int) -> _Channel:
        channel = self.channels.get(number)
        if channel is None:
            channel = self.channels[number] = _Channel()
        return channel

    def protocol_header(self, direction: Direction, header: bytes, offset: int) -> None:
        if len(header) == 8:
            self.version = f"{header[5]}-{header[6]}-{header[7]}"

    def lost(self, direction: Direction, offset: int, why: str) -> None:
        """Bytes of `direction` from offset were lost or unreadable: cut its content."""
        if why.startswith("malformed"):
            self.malformed += 1
        for channel in self.channels.values():
            msg = channel.content[direction]
            if msg is not None:
                channel.content[direction] = None
                msg.complete = False
                msg.notes.append(why if why.startswith("malformed") else "gap in content")
                reader = self.readers[direction]
                msg.end, msg.end_ts, msg.end_ref = offset, reader.last_ts, reader.last_ref
                self._dispatch(msg)

    def method(self, direction: Direction, number: int, payload: bytes, span: Span) -> None:
        start, end = span.start, span.end
        channel = self._channel(number)
        pending = channel.content[direction]
        if pending is not None:             # its content never came whole
            channel.content[direction] = None
            pending.complete = False
            pending.notes.append("content cut by the next method")
            self._dispatch(pending)
        if len(payload) < 4:
            self.malformed += 1
            return
        key = (payload[0] << 8 | payload[1], payload[2] << 8 | payload[3])
        known = METHODS.get(key)
        fields: dict[str, Any]
        notes: list[str] = []
        if known is None:
            fields = {}
            notes.append(f"malformed: unknown method {key[0]}.{key[1]}")
            self.malformed += 1
        else:
            try:
                fields, _ = decode_arguments(known[1], payload, 4, len(payload))
            except Malformed as exc:
                fields = {}
                notes.append(f"malformed: {known[0]}: {exc}")
                self.malformed += 1
        msg = _Msg(key, direction, number, fields, start, span.first_ts, span.first_ref)
        msg.notes += notes
        msg.end, msg.end_ts, msg.end_ref, msg.size = end, span.last_ts, span.last_ref, span.size
        if key in WITH_CONTENT and known is not None and not notes:
            channel.content[direction] = msg
            return
        self._dispatch(msg)

    def header(self, direction: Direction, number: int, payload: bytes, span: Span) -> None:
        end = span.end
        channel = self.channels.get(number)
        msg = channel.content[direction] if channel is not None else None
        if msg is None or msg.has_header:
            return                          # content of a method not seen (capture started late)
        msg.has_header = True
        msg.size += span.size
        if len(payload) < 14:
            msg.notes.append("malformed: content header too short")
            self._content_done(channel, msg, end, False)
            return
        msg.body_size = int.from_bytes(payload[4:12], "big")
        flags = payload[12] << 8 | payload[13]
        pos = 14
        while flags & 1 and pos + 2 <= len(payload):     # continuation flag words
            pos += 2
            flags &= ~1
        spec = tuple(p for i, p in enumerate(PROPERTIES) if flags >> (15 - i) & 1)
        try:
            props, _ = decode_arguments(spec, payload, pos, len(payload))
        except Malformed as exc:
            props = {}
            msg.notes.append(f"malformed: content header: {exc}")
        headers = props.pop("headers", None)
        if headers is not None:
            props["headers_count"] = len(headers)
            if self.body_limit > 0:
                props["headers"] = headers
        msg.fields["properties"] = props
        msg.fields["body_size"] = msg.body_size
        msg.end = end
        msg.end_ts, msg.end_ref = span.last_ts, span.last_ref
        if self.body_limit > 0:
            msg.body = bytearray()
        if msg.body_size == 0:
            self._content_done(channel, msg, end, True)

    def body(self, direction: Direction, number: int, piece: bytes | bytearray | None,
             length: int, end: int, frame_done: bool) -> None:
        channel = self.channels.get(number)
        msg = channel.content[direction] if channel is not None else None
        if msg is None or not msg.has_header:
            return
        msg.received += length
        msg.size += length + (8 if frame_done else 0)
        if piece is not None and msg.body is not None:
            room = self.body_limit - len(msg.body)
            if room > 0:
                msg.body += piece[:room]
        if frame_done:
            reader = self.readers[direction]
            msg.end = end
            msg.end_ts, msg.end_ref = reader.last_ts, reader.last_ref
            if msg.received >= msg.body_size:
                if msg.received > msg.body_size:
                    msg.notes.append(f"malformed: body of {msg.received} bytes, "
                                     f"{msg.body_size} announced")
                self._content_done(channel, msg, end, True)

    def _content_done(self, channel: _Channel, msg: _Msg, end: int, ok: bool) -> None:
        channel.content[msg.direction] = None
        msg.complete = msg.complete and ok
        self._dispatch(msg)

    # -- pairing --

    def _dispatch(self, msg: _Msg) -> None:
        key = msg.key
        channel = self._channel(msg.channel)
        sender = msg.direction
        other = 1 - sender
        fields = msg.fields
        if key == CONNECTION_CLOSE or key == CHANNEL_CLOSE:
            code = fields.get("reply_code")
            scope = list(self.channels.values()) if key == CONNECTION_CLOSE else [channel]
            for ch in scope:
                while ch.waiting[other]:
                    self._answer(ch.waiting[other].popleft(), msg, code)
            channel.waiting[sender].append(msg)
            return
        if key in REPLY_METHODS:
            self._on_reply(channel, msg)
            return
        if key in REPLIES:
            if key == CONSUME:
                channel.consume_no_ack.append(bool(fields.get("no_ack")))
            elif key == CONFIRM_SELECT:
                channel.confirm = True
            if fields.get("no_wait"):
                if key == CONSUME:
                    tag = fields.get("consumer_tag", "")
                    channel.consumers[tag] = channel.consume_no_ack.pop()
                self._lone(msg)
            else:
                channel.waiting[sender].append(msg)
            return
        if key == PUBLISH and sender == C2S:
            if channel.confirm:
                channel.published += 1
                channel.unconfirmed[channel.published] = msg
            else:
                self._lone(msg)
            return
        if key == DELIVER and sender == S2C:
            no_ack = channel.consumers.get(fields.get("consumer_tag", ""))
            if no_ack is False and isinstance(fields.get("delivery_tag"), int):
                channel.unacked[fields["delivery_tag"]] = msg
            else:
                self._lone(msg)
            return
        if key in (ACK, NACK, REJECT):
            waiting = channel.unconfirmed if sender == S2C else channel.unacked
            tag = fields.get("delivery_tag", -1)
            if fields.get("multiple"):
                tags = [t for t in waiting if t <= tag or tag == 0]
            else:
                tags = [tag] if tag in waiting else []
            if not tags:
                self._lone(msg)
                return
            for t in tags:
                self._answer(waiting.pop(t), msg, 200 if key == ACK else None)
            return
        self._lone(msg)

    def _on_reply(self, channel: _Channel, reply: _Msg) -> None:
        key = reply.key
        waiting = channel.waiting[1 - reply.direction]
        for i, request in enumerate(waiting):
            if key in REPLIES.get(request.key, ()):
                for _ in range(i):                  # earlier requests were never answered
                    lost = waiting.popleft()
                    lost.notes.append("no response")
                    self._answer(lost, None, None)
                waiting.popleft()
                self._answer(request, reply, 200)
                if key == CONSUME_OK and channel.consume_no_ack:
                    channel.consumers[reply.fields.get("consumer_tag", "")] = \
                        channel.consume_no_ack.popleft()
                elif key == CANCEL_OK:
                    channel.consumers.pop(reply.fields.get("consumer_tag", ""), None)
                elif key in (CLOSE_OK[CHANNEL_CLOSE], CLOSE_OK[CONNECTION_CLOSE]):
                    if key == CLOSE_OK[CONNECTION_CLOSE]:
                        for number in sorted(self.channels):
                            self._end_channel(number, "connection closed", reply)
                    else:
                        self._end_channel(reply.channel, "channel closed", reply)
                return
        reply.notes.append("request not captured")
        self._lone(reply)

    def _end_channel(self, number: int, why: str, closer: _Msg | None) -> None:
        channel = self.channels.pop(number, None)
        if channel is None:
            return
        leftovers: list[tuple[_Msg, str]] = []
        for side in (0, 1):
            msg = channel.content[side]
            if msg is not None:
                msg.complete = False
                leftovers.append((msg, "content cut by the end of the channel"))
            leftovers += [(m, why) for m in channel.waiting[side]]
        leftovers += [(m, "not confirmed") for m in channel.unconfirmed.values()]
        leftovers += [(m, "not acknowledged") for m in channel.unacked.values()]
        leftovers.sort(key=lambda item: (item[0].ts, item[0].start))
        for msg, note in leftovers:
            if note not in msg.notes:
                msg.notes.append(note)
            self._answer(msg, None, None)

    # -- exchanges --

    def _lone(self, msg: _Msg) -> None:
        status = None
        error = None
        if msg.key == RETURN:
            status = msg.fields.get("reply_code")
            error = msg.fields.get("reply_text") or None
        ex = self._exchange(msg)
        ex.status = status
        if error is not None:
            ex.notes.append(f"returned: {error}")
        self.emit(ex)

    def _answer(self, request: _Msg, reply: _Msg | None, status: int | None) -> None:
        ex = self._exchange(request)
        if reply is None:
            ex.complete = False
            self.emit(ex)
            return
        response = _fields(reply)
        if reply.key in (CONNECTION_CLOSE, CHANNEL_CLOSE):
            status = reply.fields.get("reply_code")
            response["failed_method"] = method_name(reply.fields.get("class_id", 0),
                                                    reply.fields.get("method_id", 0))
        error: Any = None
        if request.key in (CONNECTION_CLOSE, CHANNEL_CLOSE):
            status = request.fields.get("reply_code")
            if status not in _FINE:
                error = request.fields.get("reply_text") or f"reply code {status}"
        elif reply.key in (CONNECTION_CLOSE, CHANNEL_CLOSE):
            if status not in _FINE:
                error = reply.fields.get("reply_text") or f"reply code {status}"
        elif reply.key == NACK:
            error = "nack"
        elif reply.key == REJECT:
            error = "reject"
        response["error"] = error
        ex.response = response
        ex.status = status
        ex.end_ns = reply.end_ts
        ex.last_ref = reply.end_ref
        ex.response_size = reply.size
        ex.complete = ex.complete and reply.complete
        ex.notes += reply.notes
        if reply.direction == S2C:
            ex.server_offset = reply.start
        else:
            ex.server_offset = request.start
            ex.client_offset = reply.start
        if self.body_limit > 0 and reply.body is not None:
            ex.response_body = bytes(reply.body)
            if reply.body_size > self.body_limit:
                ex.notes.append(f"response body truncated at {self.body_limit} bytes")
        self.emit(ex)

    def _exchange(self, msg: _Msg) -> Exchange:
        request = _fields(msg)
        if self.version and msg.key == (10, 10):
            request["protocol"] = self.version
        ex = Exchange(protocol="amqp", start_ns=msg.ts, end_ns=None, summary=_summary(msg),
                      request=request, response=None, request_size=msg.size,
                      complete=msg.complete, first_ref=msg.ref, last_ref=msg.end_ref,
                      notes=list(msg.notes))
        if msg.direction == C2S:
            ex.client_offset = msg.start
        else:
            ex.client_offset = self.readers[C2S].expected
            ex.server_offset = msg.start
        if self.body_limit > 0 and msg.body is not None:
            ex.request_body = bytes(msg.body)
            if msg.body_size > self.body_limit:
                ex.notes.append(f"request body truncated at {self.body_limit} bytes")
        return ex


def _fields(msg: _Msg) -> dict[str, Any]:
    """The message as request/response fields: no secrets, peer properties cut down to the
    names that identify the peer."""
    fields: dict[str, Any] = {"method": msg.name, "channel": msg.channel,
                              "sender": "server" if msg.direction == S2C else "client"}
    fields.update(msg.fields)
    if msg.key[0] == 10:                # only connection methods carry secrets
        for key in _SECRET_KEYS:
            fields.pop(key, None)
    if msg.key[0] == 10 and msg.key[1] in (10, 11):
        props = fields.pop("server_properties" if msg.key[1] == 10 else
                           "client_properties", None) or {}
        for name in ("product", "version", "platform", "connection_name"):
            if isinstance(props.get(name), str):
                fields[name] = props[name]
    return fields


def _summary(msg: _Msg) -> str:
    fields = msg.fields
    name = msg.name
    if "routing_key" in fields and msg.key[0] == 60:
        exchange = fields.get("exchange", "")
        target = f"{exchange} {fields['routing_key']}" if exchange else fields["routing_key"]
    elif "reply_code" in fields:
        target = f"{fields['reply_code']} {fields.get('reply_text', '')}"
    else:
        target = next((str(fields[k]) for k in _TARGET_KEYS if fields.get(k)), "")
        if msg.key == (50, 20) or msg.key == (50, 50):
            target = f"{fields.get('queue', '')} {fields.get('exchange', '')} " \
                     f"{fields.get('routing_key', '')}".strip()
        elif msg.key in (ACK, NACK, REJECT) and "delivery_tag" in fields:
            target = str(fields["delivery_tag"])
    summary = f"{name} {target}".strip()
    if len(summary) > SUMMARY_LIMIT:
        summary = summary[:SUMMARY_LIMIT - 3] + "..."
    return summary


class AmqpDissector:
    name = "amqp"
    transports = frozenset({"tcp"})
    ports = frozenset({5672})
    client_first = True         # the AMQP protocol header

    def detect(self, client: bytes, server: bytes) -> Detect:
        return detect(client, server)

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> AmqpSession:
        return AmqpSession(flow, emit, body_limit)
