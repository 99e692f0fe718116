"""HTTP/2 (cleartext: prior knowledge and Upgrade: h2c) and gRPC over it.

Each direction has a _Reader that cuts its bytes into frames (RFC 9113 section 4.1) and
decodes header blocks with its own HPACK decoder (hpack_decode): the dynamic tables live per
connection and per direction, as on the wire. Frames are handed to the session, which keeps
one _Stream per stream id: the client's HEADERS (+CONTINUATION) and DATA are the request, the
server's the response; the exchange is emitted when both sides ended (END_STREAM) or the
stream was reset (RST_STREAM), in the order streams finish.

gRPC (content-type application/grpc...) streams become "grpc" entries: service and method from
:path, the length-prefixed messages counted each way (streaming calls are one entry per call),
grpc-status and grpc-message from the trailers (or a trailers-only response). With
body_limit > 0 the messages are kept and decoded as protobuf without a schema
(worker.dissectors.protobuf) into request.body / response.body.

Capture that starts mid-connection: without the client preface the frames are still found
(detection and resync look for a chain of valid frame headers), but the HPACK tables are
unknown. A decoder that started late still decodes correctly every block that refers only to
entries inserted since it started (the newest entries sit at the front of the table); a block
referring to older ones fails and resets the decoder, so a wrong header is never shown: its
stream keeps the fields that do not depend on the table (static references, literals) and is
marked "headers partly decodable" or "headers not decodable". Streams begun before the
capture give entries with the part that was seen. Without headers to tell, a stream whose
data is wholly gRPC-framed is taken for gRPC. A gap or a malformed frame cuts the open messages of that direction,
resets its decoder and resyncs on the next chain of valid frames.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Final
from urllib.parse import parse_qs, unquote

from hpack.exceptions import InvalidTableSizeError
from hpack.hpack import decode_integer
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

from worker.dissectors.base import Detect, Direction, Emit, Exchange, FlowInfo
from worker.dissectors.hpack_decode import HpackDecoder
from worker.dissectors.http1 import _BodySink, _content_coding, fields_bytes
from worker.dissectors.protobuf import decode_message
from worker.packet import PacketRef
from worker.dissectors.stream import Span, StreamReader, TwoWaySession

_GRPC_PATH = re.compile(r"/[A-Za-z_][\w.]*/\w+")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6); Final: compiled (shark/compiled.py) they are constants.
DATA: Final = 0
HEADERS: Final = 1
PRIORITY: Final = 2
RST_STREAM: Final = 3
SETTINGS: Final = 4
PUSH_PROMISE: Final = 5
PING: Final = 6
GOAWAY: Final = 7
WINDOW_UPDATE: Final = 8
CONTINUATION: Final = 9
END_STREAM: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

DEFAULT_MAX_FRAME: Final = 16384
UNKNOWN_MAX_FRAME: Final = 1 << 20   # frame size limit when the peer's SETTINGS were not seen
MAX_OPEN_STREAMS: Final = 1000
CLOSED_MEMORY: Final = 1024
MAX_SIZES: Final = 100               # gRPC message sizes listed per direction
SUMMARY_LIMIT: Final = 256
HEADER_LIST_LIMIT: Final = 1 << 20
# Per-session byte caps: memory per flow stays bounded whatever a peer (or a forged capture)
# sends, across up to the assembler's 65,536 flows. What is cut is noted in the entry as
# "cut: <what>: ..." and counted in /status (dissection.cut).
# HEADERS + CONTINUATION kept for one block (4x the 64 KiB header lists common servers accept)
HEADER_BLOCK_LIMIT: Final = 256 * 1024
# HPACK dynamic table per direction (16x the 4 KiB default; the protocol allows up to 4 GiB,
# hpack's own cap is 16 MiB)
HPACK_TABLE_LIMIT: Final = 64 * 1024
FRAME_LIMIT: Final = 1 << 20    # one frame buffered whole; SETTINGS may allow up to 16 MiB

# Flags each frame type defines; a frame with others set is not taken as a frame start when
# looking for one (detection, resync), though a synced reader ignores unknown flags.
_FLAGS = (0x09, 0x2D, 0, 0, 0x01, 0x0C, 0x01, 0, 0, 0x04)
_STREAM_TYPES = frozenset({DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION})
_CONN_TYPES = frozenset({SETTINGS, PING, GOAWAY})
_FIXED_LENGTH = {PRIORITY: 5, RST_STREAM: 4, PING: 8, WINDOW_UPDATE: 4}

ERROR_CODES = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
               "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
               "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
               "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")
GRPC_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
              "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
              "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
              "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")


def _error_name(code: int) -> str:
    return ERROR_CODES[code] if code < len(ERROR_CODES) else f"0x{code:x}"


# -- frame headers and detection ---------------------------------------------------------

def _plausible(data: bytes | bytearray, pos: int, max_len: int, strict: bool) -> bool:
    """Whether data[pos:pos+9] is a frame header a peer could send (strict: only the frame
    types and flags RFC 9113 defines, as used when looking for a frame start)."""
    length = data[pos] << 16 | data[pos + 1] << 8 | data[pos + 2]
    ftype = data[pos + 3]
    if length > max_len:
        return False
    if ftype > CONTINUATION:
        return not strict
    if strict and data[pos + 4] & ~_FLAGS[ftype]:
        return False
    sid = (data[pos + 5] & 0x7F) << 24 | data[pos + 6] << 16 | data[pos + 7] << 8 | data[pos + 8]
    if ftype in _STREAM_TYPES:
        if sid == 0:
            return False
    elif ftype in _CONN_TYPES:
        if sid:
            return False
    fixed = _FIXED_LENGTH.get(ftype)
    if fixed is not None and length != fixed:
        return False
    if ftype == SETTINGS and length % 6:
        return False
    if ftype == GOAWAY and length < 8:
        return False
    if strict and ftype == SETTINGS and data[pos + 4] & 1 and length:
        return False
    return True


def _chain_state(data: bytes) -> Detect:
    """MATCH when data begins with two valid frames, or with valid frames that end exactly at
    its end; MORE when the first frame is plausible but incomplete; else NO."""
    n = len(data)
    pos = count = 0
    while pos + 9 <= n:
        if not _plausible(data, pos, DEFAULT_MAX_FRAME, True):
            return Detect.NO
        pos += 9 + (data[pos] << 16 | data[pos + 1] << 8 | data[pos + 2])
        if pos > n:
            return Detect.MATCH if count >= 2 else Detect.MORE
        count += 1
        if count >= 2:
            return Detect.MATCH
    if pos == n and count:
        return Detect.MATCH
    # Fewer than 9 bytes of a header: refuse what can already not be one.
    head = data[pos:]
    if head and (head[0] or len(head) > 1 and head[1] > DEFAULT_MAX_FRAME >> 8
                 or len(head) > 3 and head[3] > CONTINUATION
                 or len(head) > 4 and head[4] & ~_FLAGS[head[3]]):
        return Detect.NO
    return Detect.MORE


def _block_kind(data: bytes, pos: int, length: int, flags: int) -> str:
    """"request" / "response" when the header block of the HEADERS frame at pos begins with a
    static-table pseudo-header (:method, :path, :scheme, :authority / :status), else ""."""
    p, end = pos + 9, pos + 9 + length
    if flags & PADDED:
        p += 1
    if flags & PRIORITY_FLAG:
        p += 5
    if p >= end or p >= len(data):
        return ""
    b = data[p]
    if b & 0x80:
        index = b & 0x7F
    elif b & 0xC0 == 0x40:
        index = b & 0x3F
    elif b & 0xE0 == 0x20:
        return ""                      # a table size update comes first
    else:
        index = b & 0x0F
    if 1 <= index <= 7:
        return "request"
    if 8 <= index <= 14:
        return "response"
    if index == 0 and not b & 0x80 and p + 2 < end:
        # A literal with a new name: a pseudo-header's name tells too.
        size = data[p + 1] & 0x7F
        raw = bytes(data[p + 2:min(p + 2 + size, end)])
        if len(raw) != size or size > 16:
            return ""
        if data[p + 1] & 0x80:
            try:
                raw = decode_huffman(raw)
            except Exception:   # not a valid Huffman string: no sign
                return ""
        if raw == b":status":
            return "response"
        if raw in (b":method", b":path", b":authority", b":scheme", b":protocol"):
            return "request"
    return ""


def _kinds(data: bytes) -> set[str]:
    """What the first frames of one direction say about who sent them."""
    kinds: set[str] = set()
    n = len(data)
    pos = 0
    for _ in range(8):
        if pos + 9 > n or not _plausible(data, pos, DEFAULT_MAX_FRAME, True):
            break
        length = data[pos] << 16 | data[pos + 1] << 8 | data[pos + 2]
        ftype = data[pos + 3]
        if ftype == HEADERS:
            kind = _block_kind(data, pos, length, data[pos + 4])
            if kind:
                kinds.add(kind)
        elif ftype == PUSH_PROMISE:
            kinds.add("response")
        pos += 9 + length
    return kinds


def detect(client: bytes, server: bytes) -> Detect:
    """The client preface, or (capture started mid-connection) a chain of valid frames in
    either direction. One direction refused while the other has sent nothing is NO: HTTP/2
    does not hold up the detectors after it."""
    c: Detect | None = None
    if server[:len(PREFACE)] == PREFACE:
        return Detect.NO       # the client's preface from our "server": roles the other way
    if client:
        head = client[:len(PREFACE)]
        if head == PREFACE:
            return Detect.MATCH
        c = Detect.MORE if PREFACE.startswith(head) else _chain_state(client)
    s = _chain_state(server) if server else None
    if c is Detect.MATCH or s is Detect.MATCH:
        # Without the preface the roles may have been guessed wrong: a "client" sending
        # responses or a "server" sending requests is HTTP/2 the other way round.
        wrong = ({"response"} if c is Detect.MATCH and "response" in _kinds(client) else set()) \
            | ({"request"} if s is Detect.MATCH and "request" in _kinds(server) else set())
        right = ("request" in _kinds(client) if c is Detect.MATCH else False) \
            or ("response" in _kinds(server) if s is Detect.MATCH else False)
        if wrong and not right:
            return Detect.NO
        if not right and (c is None or s is None):
            return Detect.MORE     # one direction alone: wait for a sign of who is who
        return Detect.MATCH
    if c is Detect.NO or s is Detect.NO:
        return Detect.NO if (c is not Detect.MORE and s is not Detect.MORE) else Detect.MORE
    return Detect.MORE


def _self_contained(block: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """The fields of a header block that do not depend on the dynamic table (static-table
    references and literals with a literal or static name), and how many were left out.
    Used when the table state is unknown: these fields are right whatever it holds."""
    static = HeaderTable.STATIC_TABLE
    fields: list[tuple[bytes, bytes]] = []
    skipped = 0
    pos, n = 0, len(block)

    def string(at: int) -> tuple[bytes, int]:
        length, used = decode_integer(block[at:], 7)
        start = at + used
        if start + length > n:
            raise ValueError("string beyond the block")
        raw = block[start:start + length]
        return (decode_huffman(raw) if block[at] & 0x80 else raw), start + length

    try:
        while pos < n:
            b = block[pos]
            if b & 0x80:
                index, used = decode_integer(block[pos:], 7)
                pos += used
                if 1 <= index <= len(static):
                    fields.append(static[index - 1])
                else:
                    skipped += 1
                continue
            if b & 0xE0 == 0x20:
                _, used = decode_integer(block[pos:], 5)
                pos += used
                continue
            index, used = decode_integer(block[pos:], 6 if b & 0x40 else 4)
            pos += used
            name = b""
            if index == 0:
                name, pos = string(pos)
            elif index <= len(static):
                name = static[index - 1][0]
            value, pos = string(pos)
            if name:
                fields.append((name, value))
            else:
                skipped += 1
    except Exception:   # garbage: keep what was read before it
        skipped += 1
    return fields, skipped


# -- messages and streams ----------------------------------------------------------------

class _Msg:
    """One side of a stream: its header block, data and trailers."""

    __slots__ = ("start", "ts", "ref", "end", "end_ts", "end_ref", "headers", "pseudo",
                 "trailers", "data_len", "size", "ended", "complete", "notes", "decoded", "partial",
                 "grpc", "gpre", "gremain", "gflag", "gcount", "gsizes", "gcompressed",
                 "gkept", "gkeep", "sink", "kept_room")

    def __init__(self, start: int, ts: int, ref: PacketRef) -> None:
        self.start = self.end = start
        self.ts = self.end_ts = ts
        self.ref = self.end_ref = ref
        self.headers: dict[str, str] = {}
        self.pseudo: dict[str, str] = {}
        self.trailers: dict[str, str] | None = None
        self.data_len = 0
        self.size = 0
        self.ended = False
        self.complete = True
        self.notes: list[str] = []
        self.decoded: bool | None = None   # None: headers never seen; False: not decodable
        self.partial = False               # decoded, but only the table-independent fields
        self.grpc: bool | None = False   # None: not known yet (no headers to tell)
        self.gpre = b""                    # partial 5-byte gRPC message prefix
        self.gremain = 0                   # bytes left of the current gRPC message
        self.gflag = 0
        self.gcount = 0
        self.gsizes: list[int] = []
        self.gcompressed = 0
        # Detail view: gRPC messages kept as [flag, bytearray, full length], within kept_room.
        self.gkept: list[list[Any]] | None = None
        self.gkeep: list[Any] | None = None
        self.sink: _BodySink | None = None
        self.kept_room = 0


class _Stream:
    __slots__ = ("sid", "req", "resp", "notes", "reset", "push", "client_offset", "ts", "ref")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.req: _Msg | None = None
        self.resp: _Msg | None = None
        self.notes: list[str] = []
        self.reset: tuple[str, int] | None = None     # (who, error code)
        self.push = False
        self.client_offset = 0
        self.ts = 0
        self.ref: PacketRef | None = None   # where the stream was first seen, if it was


# Header names (lower-cased) and short values as text, by their bytes: the same ones come in
# every block, most of them the very table entries' objects (bytes keep their hash). Bounded
# by count and by the length of what is kept; emptied whole when full.
TEXT_CACHE_MAX: Final = 4096
TEXT_CACHE_LEN: Final = 64
_names: dict[bytes, str] = {}
_values: dict[bytes, str] = {}


def _name_text(raw: bytes) -> str:
    text = _names.get(raw)
    if text is None:
        text = raw.decode("utf-8", "replace").lower()
        if len(raw) <= TEXT_CACHE_LEN:
            if len(_names) >= TEXT_CACHE_MAX:
                _names.clear()
            _names[raw] = text
    return text


def _value_text(raw: bytes) -> str:
    text = _values.get(raw)
    if text is None:
        text = raw.decode("utf-8", "replace")
        if len(raw) <= TEXT_CACHE_LEN:
            if len(_values) >= TEXT_CACHE_MAX:
                _values.clear()
            _values[raw] = text
    return text


def _headers(pairs: list[tuple[bytes, bytes]], msg: _Msg | None,
             into: dict[str, str]) -> dict[str, str]:
    """Decoded header pairs into `into` (pseudo-headers into msg.pseudo when msg is given)."""
    for raw_name, raw_value in pairs:
        name = _name_text(raw_name)
        value = _value_text(raw_value)
        if name[:1] == ":":
            if msg is not None:
                msg.pseudo.setdefault(name, value)
            continue
        old = into.get(name)
        if old is None:
            into[name] = value
        elif name == "cookie":
            into[name] = f"{old}; {value}"
        else:
            into[name] = f"{old}\n{value}" if name == "set-cookie" else f"{old}, {value}"
    return into


# -- one direction -----------------------------------------------------------------------

START: Final = 0
FRAMES: Final = 1
RESYNC: Final = 2


class _Block:
    """A header block (HEADERS or PUSH_PROMISE and its CONTINUATIONs) being read."""

    __slots__ = ("kind", "sid", "fragments", "start", "ts", "ref", "size", "end_stream",
                 "promised")

    def __init__(self, kind: int, sid: int, fragments: list[bytes] | None, start: int, ts: int,
                 ref: PacketRef, size: int, end_stream: bool, promised: int) -> None:
        self.kind = kind
        self.sid = sid
        self.fragments = fragments       # None once over HEADER_BLOCK_LIMIT: counted, not kept
        self.start, self.ts, self.ref = start, ts, ref
        self.size = size                 # frame bytes, headers included
        self.end_stream = end_stream
        self.promised = promised

    def span(self, end: int, last: tuple[int, PacketRef] | None = None) -> Span:
        """From its first byte to `end`, whose byte came at `last` (its first's if None)."""
        last_ts, last_ref = last if last is not None else (self.ts, self.ref)
        return Span(self.start, end, self.ts, self.ref, last_ts, last_ref)


class _Reader(StreamReader):
    """Cuts one direction into frames and decodes its header blocks (HPACK is per side)."""

    __slots__ = ("s", "is_client", "state", "started", "decoder", "known", "why_unknown",
                 "block", "max_frame")

    def __init__(self, session: Http2Session, direction: Direction) -> None:
        super().__init__(direction)
        self.s = session
        self.is_client = direction == Direction.CLIENT_TO_SERVER
        self.state = START
        self.started = False                 # a stream is read from wherever it was joined
        self.decoder = self._new_decoder()
        self.known = False                   # HPACK state followed from the connection start
        self.why_unknown = "capture started mid-connection"
        self.block: _Block | None = None     # a header block waiting for CONTINUATION
        self.max_frame = UNKNOWN_MAX_FRAME   # the peer's SETTINGS_MAX_FRAME_SIZE when seen

    @staticmethod
    def _new_decoder() -> HpackDecoder:
        return HpackDecoder(HPACK_TABLE_LIMIT, HEADER_LIST_LIMIT)

    def feed(self, data: bytes, offset: int, ts: int, ref: PacketRef) -> None:
        if not self.started and data:
            self.started = True
            self.expected = offset
        super().feed(data, offset, ts, ref)

    def parse(self, work: bytes | bytearray, base: int, ts: int, ref: PacketRef) -> int:
        n = len(work)
        pos = 0
        while pos < n:
            st = self.state
            if st == FRAMES:
                if n - pos < 9:
                    break
                length = work[pos] << 16 | work[pos + 1] << 8 | work[pos + 2]
                if FRAME_LIMIT < length <= self.max_frame:
                    self._lost(base + pos, f"cut: http2 frame: a frame of {length} bytes is "
                                           f"over the {FRAME_LIMIT >> 20} MiB kept per direction")
                    continue
                if not _plausible(work, pos, self.max_frame, False):
                    self._lost(base + pos, "malformed frame header")
                    continue
                end = pos + 9 + length
                if end > n:
                    break
                self._frame(work, pos, length, base)
                pos = end
            elif st == START:
                # The client preface, or the server's first SETTINGS (its preface), say the
                # connection is seen from its start; otherwise look for a frame chain.
                if self.is_client:
                    head = bytes(work[pos:pos + len(PREFACE)])
                    if PREFACE.startswith(head):
                        if len(head) < len(PREFACE):
                            break
                        pos += len(PREFACE)
                        self.known = True
                        self.s.connection_start = True
                        self.state = FRAMES
                    else:
                        self.state = RESYNC
                else:
                    if n - pos < 9:
                        break
                    if work[pos + 3] == SETTINGS and not work[pos + 4] & 1 \
                            and _plausible(work, pos, self.max_frame, True):
                        self.known = True
                        self.state = FRAMES
                    else:
                        self.state = RESYNC
            else:
                pos = self._resync(work, pos, base)
                if self.state == RESYNC:
                    break
        return pos

    def _resync(self, work: bytes | bytearray, pos: int, base: int) -> int:
        """Skip to a frame header followed by another one (or by the end of the data, to be
        confirmed when more comes)."""
        n = len(work)
        limit = min(self.max_frame, DEFAULT_MAX_FRAME * 4)
        start = pos
        while pos + 9 <= n:
            if work[pos + 3] <= CONTINUATION and _plausible(work, pos, limit, True):
                nxt = pos + 9 + (work[pos] << 16 | work[pos + 1] << 8 | work[pos + 2])
                if nxt == n:         # ends where the data ends: segments end at frames
                    self.state = FRAMES
                    break
                if nxt + 9 > n:
                    break            # wait for the next header to confirm
                if _plausible(work, nxt, limit, True):
                    self.state = FRAMES
                    break
            pos += 1
        self.skipped += pos - start
        return pos

    def _lost(self, offset: int, why: str) -> None:
        """Bytes of this direction were lost or unreadable at `offset`: cut what was open,
        forget the HPACK state, look for the next frame."""
        self.state = RESYNC
        self.block = None
        self.decoder = self._new_decoder()
        self.known = False
        self.why_unknown = "a gap in the capture" if why == "gap" else "a malformed frame"
        self.s.cut_side(self.direction, why)

    def gap(self, offset: int, length: int, ts: int = 0) -> None:
        if length > 0:
            self.started = True
            self.drop()
        super().gap(offset, length, ts)

    def lose(self, offset: int, end: int, ts: int) -> None:
        if self.state == START:
            self.state = RESYNC
        elif self.state == FRAMES:
            self._lost(offset, "gap")

    # -- frames --

    def _frame(self, work: bytes | bytearray, pos: int, length: int, base: int) -> None:
        ftype = work[pos + 3]
        flags = work[pos + 4]
        sid = (work[pos + 5] & 0x7F) << 24 | work[pos + 6] << 16 | work[pos + 7] << 8 \
            | work[pos + 8]
        start = base + pos
        size = 9 + length
        p, end = pos + 9, pos + 9 + length
        s = self.s
        block = self.block
        if block is not None:
            if ftype == CONTINUATION and sid == block.sid:
                block.size += size
                if block.fragments is not None:
                    block.fragments.append(bytes(work[p:end]))
                    if block.size > HEADER_BLOCK_LIMIT:
                        block.fragments = None   # cut: the rest is counted, not kept
                if flags & END_HEADERS:
                    self.block = None
                    self._headers_done(block, start + size - 1)
                return
            # A header block left unfinished: its stream gets it as undecodable.
            self.block = None
            self.decoder = self._new_decoder()
            self.known = False
            self.why_unknown = "a header block without its CONTINUATION"
            s.header_block(self.direction, block, None, block.span(start),
                           "malformed: header block without its CONTINUATION")
        if ftype == DATA:
            if flags & PADDED:
                if length < 1 or work[p] >= length:
                    s.malformed_frame(sid, "malformed: padding")
                    return
                end -= work[p]
                p += 1
            s.data(self.direction, sid, work, p, end, bool(flags & END_STREAM),
                   self.span_of(start, start + size))
        elif ftype == HEADERS or ftype == PUSH_PROMISE:
            if flags & PADDED:
                if length < 1 or work[p] >= length:
                    s.malformed_frame(sid, "malformed: padding")
                    return
                end -= work[p]
                p += 1
            promised = 0
            if ftype == HEADERS and flags & PRIORITY_FLAG:
                p += 5
            elif ftype == PUSH_PROMISE:
                if p + 4 <= end:
                    promised = (work[p] & 0x7F) << 24 | work[p + 1] << 16 | work[p + 2] << 8 \
                        | work[p + 3]
                p += 4
            if p > end:
                s.malformed_frame(sid, "malformed: header frame")
                return
            _, ts, ref = self.where(start)
            block = _Block(ftype, sid, [bytes(work[p:end])] if size <= HEADER_BLOCK_LIMIT else None,
                           start, ts, ref, size, ftype == HEADERS and bool(flags & END_STREAM),
                           promised)
            if flags & END_HEADERS:
                self._headers_done(block, start + size - 1)
            else:
                self.block = block
        elif ftype == RST_STREAM:
            code = int.from_bytes(work[p:p + 4], "big")
            s.rst(self.direction, sid, code, self.span_of(start, start + size))
        elif ftype == SETTINGS:
            if not flags & 1:
                other = s.server if self.is_client else s.client
                for i in range(p, end - 5, 6):
                    ident = work[i] << 8 | work[i + 1]
                    value = int.from_bytes(work[i + 2:i + 6], "big")
                    if ident == 5 and DEFAULT_MAX_FRAME <= value < 1 << 24:
                        other.max_frame = value   # what the peer may send us
        elif ftype == CONTINUATION:
            s.malformed_frame(sid, "malformed: CONTINUATION without a header block")
        # PRIORITY, PING, GOAWAY, WINDOW_UPDATE and extension frames carry nothing we show.

    def _headers_done(self, block: _Block, last: int) -> None:
        pairs: list[tuple[bytes, bytes]] | None
        if block.fragments is None:
            # Over HEADER_BLOCK_LIMIT: not decoded, and the HPACK state it would have
            # changed is unknown from here on.
            side = "request" if self.is_client else "response"
            self.decoder = self._new_decoder()
            self.known = False
            self.why_unknown = "a header block over the size kept"
            _, end_ts, end_ref = self.where(last)
            self.s.header_block(
                self.direction, block, None, block.span(last + 1, (end_ts, end_ref)),
                f"cut: http2 header block: the {side} header block of {block.size} bytes is "
                f"over the {HEADER_BLOCK_LIMIT >> 10} KiB kept; its headers are not decoded")
            return
        data = b"".join(block.fragments)
        note = ""
        try:
            pairs = self.decoder.decode(data)
        except Exception as exc:   # hpack raises a zoo of errors on unknown state or garbage
            pairs, skipped = _self_contained(data)
            side = "request" if self.is_client else "response"
            if isinstance(exc, InvalidTableSizeError):
                note = (f"cut: hpack table: the {side} side set an HPACK table over the "
                        f"{HPACK_TABLE_LIMIT >> 10} KiB kept; its headers are not decoded")
            elif self.known:
                note = (f"malformed: {side} header block could not be decoded "
                        f"({type(exc).__name__})")
            elif pairs:
                note = (f"{side} headers partly decodable: {self.why_unknown} ({skipped} "
                        "fields referring to earlier headers left out)")
            else:
                note = f"{side} headers not decodable: {self.why_unknown}"
            if not pairs:
                pairs = None
            # Entries this block would have added are missing now: start over so a later
            # reference to them fails instead of hitting the wrong entry.
            self.decoder = self._new_decoder()
            self.known = False
        _, end_ts, end_ref = self.where(last)
        self.s.header_block(self.direction, block, pairs, block.span(last + 1, (end_ts, end_ref)),
                            note)


# -- the session -------------------------------------------------------------------------

class Http2Session(TwoWaySession[_Reader]):
    def __init__(self, flow: FlowInfo, emit: Emit, body_limit: int = 0,
                 upgraded: bool = False) -> None:
        super().__init__(_Reader(self, Direction.CLIENT_TO_SERVER),
                         _Reader(self, Direction.SERVER_TO_CLIENT))
        self.flow = flow
        self.emit = emit
        self.body_limit = body_limit
        self.connection_start = False      # the client preface was seen
        self.streams: dict[int, _Stream] = {}
        # Streams already emitted (the latest CLOSED_MEMORY): frames still in flight on them
        # (DATA after a reset, say) are ignored rather than taken for new streams.
        self.closed: dict[int, None] = {}
        self.late_frames = 0
        self.malformed = 0
        if upgraded:
            # Upgrade: h2c. Stream 1 is the HTTP/1.1 request (an "http" entry of its own);
            # its response comes here, as HTTP/2.
            stream = _Stream(1)
            stream.notes.append("request sent as HTTP/1.1 with Upgrade: h2c")
            self.streams[1] = stream
            self.connection_start = True
            self.client.known = self.server.known = True

    def on_close(self, ts_ns: int) -> None:
        if self.dead:
            return
        self.dead = True
        for reader in self.readers:
            if reader.block is not None:
                block, reader.block = reader.block, None
                block.end_stream = False
                self.header_block(reader.direction, block, None, block.span(block.start + 1),
                                  "header block cut by the end of the connection")
        for sid in sorted(self.streams):
            stream = self.streams[sid]
            for msg, side in ((stream.req, "request"), (stream.resp, "response")):
                if msg is not None and not msg.ended:
                    msg.complete = False
                    msg.notes.append(f"{side} cut by the end of the connection")
            if stream.resp is None and stream.reset is None:
                stream.notes.append("no response")
            self._finish(stream)
        self.streams.clear()

    def kept_bytes(self) -> int:
        """Decoded headers and kept bodies of open streams, both HPACK tables and a header
        block being read."""
        kept = 0
        for stream in self.streams.values():
            for msg in (stream.req, stream.resp):
                if msg is None:
                    continue
                kept += fields_bytes(msg.headers) + fields_bytes(msg.pseudo)
                if msg.trailers:
                    kept += fields_bytes(msg.trailers)
                if msg.sink is not None:
                    kept += msg.sink.held_bytes()
                if msg.gkept is not None:
                    kept += sum(len(part[1]) for part in msg.gkept)
        for reader in self.readers:
            kept += reader.decoder.table_size   # RFC 7541 4.1: name, value and 32 per entry
            if reader.block is not None and reader.block.fragments is not None:
                kept += sum(map(len, reader.block.fragments))
        return kept

    # -- called by the readers (frames, header blocks, losses) --

    def _stream(self, sid: int, is_client: bool, offset: int, ts: int,
                ref: PacketRef) -> _Stream:
        stream = self.streams.get(sid)
        if stream is None:
            if len(self.streams) >= MAX_OPEN_STREAMS:
                oldest = min(self.streams)
                victim = self.streams.pop(oldest)
                victim.notes.append("too many open streams: emitted early")
                self._forget(oldest)
                self._emit(victim)
            stream = _Stream(sid)
            stream.client_offset = offset if is_client else (self.client.expected or 0)
            stream.ts, stream.ref = ts, ref
            self.streams[sid] = stream
        return stream

    def _msg(self, stream: _Stream, is_client: bool, start: int, ts: int, ref: PacketRef,
             what: str) -> _Msg:
        """The message of that side, made when its first frame seen is not a header block."""
        msg = stream.req if is_client else stream.resp
        if msg is None:
            msg = _Msg(start, ts, ref)
            side = "request" if is_client else "response"
            reader = self.client if is_client else self.server
            why = reader.why_unknown if not reader.known else "stream began earlier"
            msg.notes.append(f"{side} headers not captured ({what}: {why})")
            self._body_start(msg, None if is_client else stream.req)
            if is_client:
                stream.req = msg
            else:
                stream.resp = msg
        return msg

    def _body_start(self, msg: _Msg, grpc_from: _Msg | None) -> None:
        """Decide how the data of `msg` is read (gRPC framing or not) and kept."""
        ctype = msg.headers.get("content-type", "")
        if not ctype and grpc_from is not None:
            ctype = grpc_from.headers.get("content-type", "")
        msg.grpc = ctype.startswith("application/grpc")
        if not ctype and (msg.decoded is not True or msg.partial):
            # Headers not decoded or only partly (the content-type was a reference to an
            # unknown table entry): a POST to /package.Service/Method is taken for gRPC;
            # without a path either, the data decides (None: framing read, kept both ways).
            ref = grpc_from or msg
            path = ref.pseudo.get(":path")
            if path is not None:
                msg.grpc = (ref.pseudo.get(":method", "POST") == "POST"
                            and _GRPC_PATH.fullmatch(path) is not None)
            else:
                msg.grpc = ref.grpc if grpc_from is not None and ref.grpc is not None else None
        if self.body_limit > 0:
            if msg.grpc is not False:
                msg.gkept = []
                msg.kept_room = self.body_limit
            if not msg.grpc:
                msg.sink = _BodySink(self.body_limit, _content_coding(msg.headers))

    def header_block(self, direction: Direction, block: _Block,
                     pairs: list[tuple[bytes, bytes]] | None, span: Span, note: str) -> None:
        """A header block ended (decoded into pairs, or None with a note saying why not)."""
        is_client = direction == Direction.CLIENT_TO_SERVER
        ftype, sid, size, end_stream, promised = (block.kind, block.sid, block.size,
                                                  block.end_stream, block.promised)
        start, ts, ref = span.start, span.first_ts, span.first_ref
        if ftype == PUSH_PROMISE:
            if is_client or not promised:
                self.malformed += 1
                return
            stream = self._stream(promised, True, self.client.expected or 0, ts, ref)
            stream.push = True
            stream.notes.append(f"server push (promised on stream {sid})")
            pushed = _Msg(start, ts, ref)
            pushed.size = 0
            pushed.end, pushed.end_ts, pushed.end_ref = start, ts, ref
            pushed.ended = True
            self._fill(pushed, pairs, note)
            stream.req = pushed
            return
        if sid in self.closed:
            self.late_frames += 1
            return
        stream = self._stream(sid, is_client, start, ts, ref)
        msg = stream.req if is_client else stream.resp
        if msg is None or msg.decoded is None and msg.data_len == 0 and not msg.ended:
            if not is_client and pairs is not None and self._informational(pairs):
                return      # 1xx: the final response follows on the same stream
            msg = _Msg(start, ts, ref)
            self._fill(msg, pairs, note)
            grpc_from = stream.req if not is_client else None
            self._body_start(msg, grpc_from)
            if is_client:
                stream.req = msg
            else:
                stream.resp = msg
        elif msg.ended:
            msg.notes.append("malformed: headers after the end of the stream")
            self.malformed += 1
            return
        else:
            # Trailers (after data), or a late header block of a message begun by data.
            if pairs is not None:
                msg.trailers = _headers(pairs, None, msg.trailers or {})
            if note:
                msg.notes.append(note.replace("headers", "trailers", 1))
        msg.size += size
        msg.end, msg.end_ts, msg.end_ref = span.end, span.last_ts, span.last_ref
        if end_stream:
            self._ended(stream, msg, is_client)

    @staticmethod
    def _informational(pairs: list[tuple[bytes, bytes]]) -> bool:
        for name, value in pairs:
            if name == b":status":
                return value[:1] == b"1" and value != b"101"
        return False

    @staticmethod
    def _fill(msg: _Msg, pairs: list[tuple[bytes, bytes]] | None, note: str) -> None:
        if note:
            msg.notes.append(note)
        if pairs is None:
            msg.decoded = False
        else:
            msg.decoded = True
            msg.partial = bool(note)
            _headers(pairs, msg, msg.headers)

    def data(self, direction: Direction, sid: int, work: bytes | bytearray, p: int, end: int,
             end_stream: bool, span: Span) -> None:
        """A DATA frame (span) whose payload is work[p:end]."""
        is_client = direction == Direction.CLIENT_TO_SERVER
        start, size, ts, ref = span.start, span.size, span.first_ts, span.first_ref
        if sid in self.closed:
            self.late_frames += 1
            return
        stream = self._stream(sid, is_client, start, ts, ref)
        msg = self._msg(stream, is_client, start, ts, ref, "data")
        if msg.ended:
            msg.notes.append("malformed: data after the end of the stream")
            self.malformed += 1
            return
        msg.size += size
        msg.data_len += end - p
        if msg.grpc is not False:
            self._grpc(msg, work, p, end)
        if msg.sink is not None:
            msg.sink.add(work[p:end])
        msg.end, msg.end_ts, msg.end_ref = span.end, span.last_ts, span.last_ref
        if end_stream:
            self._ended(stream, msg, is_client)

    @staticmethod
    def _grpc(msg: _Msg, work: bytes | bytearray, p: int, end: int) -> None:
        """Length-prefixed messages (flag byte, 4-byte length) across DATA frames."""
        while p < end:
            remain = msg.gremain
            if remain:
                take = min(remain, end - p)
                keep = msg.gkeep
                if keep is not None and msg.kept_room > 0:
                    part = work[p:p + min(take, msg.kept_room)]
                    keep[1] += part
                    msg.kept_room -= len(part)
                msg.gremain = remain - take
                p += take
                continue
            need = 5 - len(msg.gpre)
            msg.gpre += bytes(work[p:p + need])
            p += need
            if len(msg.gpre) < 5:
                return
            pre, msg.gpre = msg.gpre, b""
            if pre[0] > 1 and msg.grpc is None:      # not gRPC framing after all
                msg.grpc = False
                msg.gkept = msg.gkeep = None
                return
            length = int.from_bytes(pre[1:5], "big")
            msg.gcount += 1
            if pre[0] & 1:
                msg.gcompressed += 1
            if len(msg.gsizes) < MAX_SIZES:
                msg.gsizes.append(length)
            msg.gremain = length
            if msg.gkept is not None:
                msg.gkeep = [pre[0], bytearray(), length]
                msg.gkept.append(msg.gkeep)

    def rst(self, direction: Direction, sid: int, code: int, span: Span) -> None:
        """RST_STREAM: the sender's side of the stream ends here."""
        is_client = direction == Direction.CLIENT_TO_SERVER
        stream = self.streams.get(sid)
        if stream is None:
            return
        stream.reset = ("client" if is_client else "server", code)
        msg = stream.req if is_client else stream.resp
        if msg is not None and not msg.ended:
            msg.size += span.size
            msg.end, msg.end_ts, msg.end_ref = span.end, span.last_ts, span.last_ref
        for other in (stream.req, stream.resp):
            if other is not None:
                other.ended = True
        self._finish(stream)

    def malformed_frame(self, sid: int, note: str) -> None:
        self.malformed += 1
        stream = self.streams.get(sid)
        if stream is not None:
            stream.notes.append(note)

    def _ended(self, stream: _Stream, msg: _Msg, is_client: bool) -> None:
        msg.ended = True
        if msg.grpc and (msg.gremain or msg.gpre):
            msg.notes.append("malformed: gRPC message cut by the end of the stream")
        req, resp = stream.req, stream.resp
        if resp is not None and resp.ended and (req is None or req.ended):
            self._finish(stream)

    def cut_side(self, direction: Direction, why: str) -> None:
        """A gap or a malformed frame in one direction: its open messages are cut."""
        is_client = direction == Direction.CLIENT_TO_SERVER
        if why != "gap":
            self.malformed += 1
        side = "request" if is_client else "response"
        note = f"gap in {side}" if why == "gap" else f"{side}: {why}"
        for stream in self.streams.values():
            msg = stream.req if is_client else stream.resp
            if msg is not None and not msg.ended:
                msg.complete = False
                msg.notes.append(note)
                msg.gremain = 0
                msg.gpre = b""
                msg.gkeep = None

    def _finish(self, stream: _Stream) -> None:
        if self.streams.get(stream.sid) is stream:
            del self.streams[stream.sid]
        self._forget(stream.sid)
        self._emit(stream)

    def _forget(self, sid: int) -> None:
        closed = self.closed
        closed[sid] = None
        if len(closed) > CLOSED_MEMORY:
            del closed[next(iter(closed))]

    def _emit(self, stream: _Stream) -> None:
        if stream.req is None and stream.resp is None:
            return
        self.emit(self._exchange(stream))

    # -- exchanges --

    def _exchange(self, stream: _Stream) -> Exchange:
        req, resp = stream.req, stream.resp
        grpc = _is_grpc(req, resp)
        notes: list[str] = []
        request: dict[str, Any] = {"stream_id": stream.sid}
        summary = ""
        if req is not None:
            notes += req.notes
            request.update(_grpc_request(req) if grpc else _http_request(req))
            if req.decoded and ":path" in req.pseudo:
                summary = (request["path"] if grpc else
                           f"{req.pseudo.get(':method', '?')} {req.pseudo[':path']}")
        if not summary:
            if req is not None and req.decoded is not None:
                what = "headers not decodable"
            elif stream.sid == 1 and "request sent as HTTP/1.1 with Upgrade: h2c" in stream.notes:
                what = "h2c upgrade request"
            else:
                what = "request not captured"
            status = resp.pseudo.get(":status", "") if resp is not None else ""
            summary = f"stream {stream.sid} ({what})" + (f" -> {status}" if status else "")
        if len(summary) > SUMMARY_LIMIT:
            summary = summary[:SUMMARY_LIMIT - 3] + "..."
        first = req if req is not None else resp
        assert first is not None
        ex = Exchange(protocol="grpc" if grpc else "http2", start_ns=first.ts, end_ns=None,
                      summary=summary, request=request, response=None, notes=notes)
        if req is not None:
            ex.first_ref, ex.client_offset = req.ref, req.start
            ex.request_size = req.size
            ex.last_ref = req.end_ref
            ex.complete = req.complete and req.ended
        else:
            # An upgraded stream 1 has no HTTP/2 request: it starts with its response.
            ex.first_ref = stream.ref if stream.ref is not None else first.ref
            ex.client_offset = stream.client_offset
            ex.start_ns = min(stream.ts, first.ts) if stream.ts else first.ts
            ex.complete = stream.sid == 1 and "request sent as HTTP/1.1 with Upgrade: h2c" \
                in stream.notes
        error: Any = None
        if stream.reset is not None:
            who, code = stream.reset
            error = f"stream reset by {who}: {_error_name(code)}"
            notes.append(error)
        if resp is not None:
            notes += resp.notes
            response = _grpc_response(resp) if grpc else _http_response(resp)
            ex.response = response
            ex.status = response.get("grpc_status") if grpc else response.get("status")
            if grpc and response.get("grpc_status") not in (None, 0):
                code = response["grpc_status"]
                error = {"code": code,
                         "name": GRPC_CODES[code] if 0 <= code < len(GRPC_CODES) else "",
                         "message": response.get("grpc_message", "")}
            response["error"] = error
            ex.end_ns = resp.end_ts
            ex.last_ref = resp.end_ref
            ex.server_offset = resp.start
            ex.response_size = resp.size
            ex.complete = ex.complete and resp.complete and (resp.ended or False)
            if resp.decoded is None and stream.reset is None:
                ex.complete = False
        else:
            ex.complete = False
        notes += stream.notes
        ex.notes = list(dict.fromkeys(notes))
        if self.body_limit > 0:
            for msg, side in ((req, "request"), (resp, "response")):
                if msg is None:
                    continue
                target = request if side == "request" else ex.response
                if grpc and msg.gkept is not None and target is not None:
                    target["body"] = _grpc_body(msg, msg.headers.get("grpc-encoding", ""),
                                                self.body_limit)
                elif msg.sink is not None:
                    body, more = msg.sink.finish(side, msg.data_len, msg.complete)
                    ex.notes += more
                    if side == "request":
                        ex.request_body = body
                    else:
                        ex.response_body = body
        return ex


def _is_grpc(req: _Msg | None, resp: _Msg | None) -> bool:
    """Known from a content-type (or a path), or, with no headers to tell, when every side
    seen holds whole gRPC-framed messages."""
    if (req is not None and req.grpc) or (resp is not None and resp.grpc):
        return True
    sides = [m for m in (req, resp) if m is not None]
    if not sides or any(m.grpc is False for m in sides):
        return False
    return all(not m.gremain and not m.gpre for m in sides) and any(m.gcount for m in sides)


def _split_path(path: str) -> tuple[str, dict[str, list[str]]]:
    clean, _, query = path.partition("?")
    return clean, parse_qs(query, keep_blank_values=True) if query else {}


def _http_request(msg: _Msg) -> dict[str, Any]:
    p = msg.pseudo
    path, query = _split_path(p.get(":path", ""))
    fields: dict[str, Any] = {
        "method": p.get(":method", ""),
        "path": path,
        "query": query,
        "authority": p.get(":authority", "") or msg.headers.get("host", ""),
        "scheme": p.get(":scheme", ""),
        "headers": msg.headers,
        "content_type": msg.headers.get("content-type", ""),
        "content_length": msg.data_len,
    }
    if p.get(":protocol"):
        fields["protocol"] = p[":protocol"]
    if msg.trailers:
        fields["trailers"] = msg.trailers
    return fields


def _http_response(msg: _Msg) -> dict[str, Any]:
    status = msg.pseudo.get(":status", "")
    fields: dict[str, Any] = {
        "status": int(status) if status.isascii() and status.isdigit() else None,
        "headers": msg.headers,
        "content_type": msg.headers.get("content-type", ""),
        "content_length": msg.data_len,
    }
    if msg.trailers:
        fields["trailers"] = msg.trailers
    return fields


def _grpc_request(msg: _Msg) -> dict[str, Any]:
    path = msg.pseudo.get(":path", "")
    service, _, method = path.lstrip("/").rpartition("/")
    fields: dict[str, Any] = {
        "service": service,
        "method": method,
        "path": path,
        "authority": msg.pseudo.get(":authority", ""),
        "headers": msg.headers,
        "content_type": msg.headers.get("content-type", ""),
        "content_length": msg.data_len,
        "messages": msg.gcount,
        "message_sizes": msg.gsizes,
    }
    if msg.gcompressed:
        fields["compressed_messages"] = msg.gcompressed
    if msg.trailers:
        fields["trailers"] = msg.trailers
    return fields


def _grpc_response(msg: _Msg) -> dict[str, Any]:
    fields = _http_response(msg)
    source = msg.trailers if msg.trailers is not None else msg.headers
    raw = source.get("grpc-status")
    if raw is None and msg.trailers is not None:
        raw = msg.headers.get("grpc-status")
    status = int(raw) if raw is not None and raw.strip().isdigit() else None
    message = source.get("grpc-message", "")
    fields["grpc_status"] = status
    fields["grpc_message"] = unquote(message) if message else ""
    fields["messages"] = msg.gcount
    fields["message_sizes"] = msg.gsizes
    if msg.gcompressed:
        fields["compressed_messages"] = msg.gcompressed
    if msg.trailers is None:
        fields["trailers"] = {}
    return fields


def _grpc_body(msg: _Msg, encoding: str, limit: int) -> dict[str, Any]:
    """The kept gRPC messages decoded as protobuf without a schema."""
    messages: list[dict[str, Any]] = []
    truncated = False
    for flag, data, length in msg.gkept or ():
        item: dict[str, Any] = {"size": length}
        raw = bytes(data)
        if len(raw) < length:
            item["truncated"] = True
            truncated = True
        if flag & 1:
            item["compressed"] = True
            if encoding in ("gzip", "deflate") and not item.get("truncated"):
                try:
                    d = zlib.decompressobj(31 if encoding == "gzip" else 15)
                    raw = d.decompress(raw, limit)
                except zlib.error:
                    item["error"] = f"{encoding} could not be decoded"
            else:
                item["error"] = f"compressed ({encoding or 'unknown'}): not decoded"
        if "error" not in item:
            fields = decode_message(raw) if not item.get("truncated") else None
            if fields is not None:
                item["fields"] = fields
            else:
                item["bytes"] = raw[:256].hex()
        messages.append(item)
    body: dict[str, Any] = {"encoding": "protobuf", "messages": messages}
    if truncated or msg.gcount > len(messages):
        body["truncated"] = True
    return body


class Http2Dissector:
    name = "http2"
    protocols = frozenset({"http2", "grpc"})   # Entry.protocol values its sessions produce
    transports = frozenset({"tcp"})
    ports = frozenset({50051})
    client_first = False        # a server may send its SETTINGS before the client preface

    def detect(self, client: bytes, server: bytes) -> Detect:
        return detect(client, server)

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> Http2Session:
        return Http2Session(flow, emit, body_limit)
