"""HTTP/1.0 and HTTP/1.1: requests and responses of one connection, paired FIFO.

Each direction has a _Reader, a small state machine fed chunk by chunk: it keeps only the
bytes it cannot consume yet (a header block, a chunk-size line), remembers where it stopped
looking for the end of a header block, and skips bodies by length without copying them
(bodies are copied only when the session keeps them, body_limit > 0).

Pairing: every request head goes to the back of `unanswered`; the next final response
(not 1xx) answers the front one, so pipelined requests pair in order. An exchange is emitted
once both its request and its response have ended (or were cut), in request order.

Losses: a gap inside a message cuts it (emitted with complete=False); the reader then
resyncs by scanning for the next line that starts a message ("METHOD target HTTP/1.x" or
"HTTP/1.x NNN"). A gap or an unparsable head where a message should start means a message
was lost there: a lost request leaves a stand-in in `unanswered` (its response is emitted
as "request not captured"), a lost response ends the request waiting for it (incomplete).
The stream's first bytes may be the tail of a message (capture started late): on the client
side that is a request whose response is still to come (a stand-in again), on the server
side the tail of a response to a request never seen (skipped).

Header values are decoded as UTF-8 (invalid bytes replaced), names lower-cased; a repeated
header is joined with ", ", except set-cookie, joined with "\n" (cookie values hold commas).
"""

from __future__ import annotations

import re
import zlib
from collections import deque
from typing import Any, Callable, Final, Protocol
from urllib.parse import parse_qs, urlsplit

from worker.dissectors.base import Detect, Direction, Emit, Exchange, FlowInfo, Session
from worker.packet import PacketRef
from worker.dissectors.stream import StreamReader, TwoWaySession
from worker.dissectors.websocket import WebSocketSession

HEAD_LIMIT: Final = 64 * 1024   # a longer header block is not HTTP (resync)
LINE_LIMIT: Final = 8 * 1024    # request/status line, chunk-size line, trailer line
SUMMARY_LIMIT: Final = 256
# Requests awaiting their responses kept per connection (each up to HEAD_LIMIT of headers:
# 8 MiB at most). Pipelining that deep is not seen from real clients (wrk pipelines ~16), so
# beyond it the connection is given up: what was pending becomes entries noted
# "cut: http1 pending", and the rest of the connection is not dissected.
MAX_PENDING: Final = 128

METHODS: Final[frozenset[bytes]] = frozenset({
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT",
    b"SEARCH", b"PURGE", b"LINK", b"UNLINK", b"MKCALENDAR", b"ACL", b"BIND", b"REBIND",
    b"UNBIND", b"MERGE", b"CHECKOUT", b"MKACTIVITY", b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE",
})
_METHOD_MAX: Final = max(len(m) for m in METHODS)
_LONGEST_FIRST: Final[list[bytes]] = sorted(METHODS, key=len, reverse=True)
_METHOD_ALT: Final = b"|".join(_LONGEST_FIRST)
_TARGET: Final = rb"[^\x00-\x20\x7f]+"
_REQUEST_LINE: Final = re.compile(rb"(?:" + _METHOD_ALT + rb") " + _TARGET + rb" HTTP/1\.[01]\r?\n")
_STATUS_LINE: Final = re.compile(rb"HTTP/1\.[01] [0-9]{3}(?:[ \t][^\r\n]*)?\r?\n")
_TARGET_BAD: Final = re.compile(rb"[\x00-\x20\x7f]")
_HEX: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")
_HTTP1: Final = b"HTTP/1."
_DIGITS: Final = frozenset(b"0123456789")


# -- detection ---------------------------------------------------------------------------

def request_line_state(data: bytes | bytearray, start: int = 0) -> Detect:
    """Whether data[start:] begins with "METHOD SP target SP HTTP/1." (MORE: a prefix)."""
    end = len(data)
    sp = data.find(b" ", start, start + _METHOD_MAX + 1)
    if sp < 0:
        head = bytes(data[start:start + _METHOD_MAX + 1])
        if len(head) > _METHOD_MAX or not any(m.startswith(head) for m in METHODS):
            return Detect.NO
        return Detect.MORE
    if bytes(data[start:sp]) not in METHODS:
        return Detect.NO
    target_end = min(end, sp + 1 + LINE_LIMIT)
    sp2 = data.find(b" ", sp + 1, target_end)
    if sp2 < 0:
        if _TARGET_BAD.search(data, sp + 1, target_end):
            return Detect.NO
        return Detect.MORE if target_end == end else Detect.NO
    if sp2 == sp + 1 or _TARGET_BAD.search(data, sp + 1, sp2):
        return Detect.NO
    version = bytes(data[sp2 + 1:sp2 + 1 + len(_HTTP1)])
    if not _HTTP1.startswith(version):
        return Detect.NO
    return Detect.MATCH if len(version) == len(_HTTP1) else Detect.MORE


def status_line_state(data: bytes | bytearray, start: int = 0) -> Detect:
    """Whether data[start:] begins with "HTTP/1.x NNN" (MORE: a prefix of it)."""
    head = bytes(data[start:start + 12])
    fixed = head[:7]
    if not _HTTP1.startswith(fixed):
        return Detect.NO
    for i in range(7, len(head)):
        c = head[i]
        if (i == 8 and c != 0x20) or (i != 8 and c not in _DIGITS):
            return Detect.NO
    return Detect.MATCH if len(head) == 12 else Detect.MORE


def detect(client: bytes, server: bytes) -> Detect:
    """MATCH when either direction begins with a request/status line; NO when both
    directions have bytes and neither can; else MORE. A direction that begins mid-message
    (capture started late) waits for the other one."""
    c = request_line_state(client) if client else None
    s = status_line_state(server) if server else None
    if c is Detect.MATCH or s is Detect.MATCH:
        return Detect.MATCH
    if c is Detect.NO and s is Detect.NO:
        return Detect.NO
    return Detect.MORE


# -- messages and bodies -----------------------------------------------------------------

class _Message:
    __slots__ = ("is_request", "start", "ts", "ref", "end", "end_ts", "end_ref", "version",
                 "method", "target", "status", "reason", "headers", "trailers", "body_len",
                 "complete", "notes", "sink", "pair")

    def __init__(self, is_request: bool, version: str, headers: dict[str, str]) -> None:
        self.is_request = is_request
        self.version = version
        self.headers = headers
        self.method = self.target = self.reason = ""
        self.status = 0
        self.start = self.end = self.ts = self.end_ts = 0
        self.ref = self.end_ref = (0, 0)
        self.trailers: dict[str, str] | None = None
        self.body_len = 0
        self.complete = True
        self.notes: list[str] = []
        self.sink: _BodySink | None = None
        self.pair: _Pair | None = None


class _Pair:
    """A request and the final response that answers it. req is None for a stand-in (a
    request lost in a gap or unparsable) and for a response nobody was waiting for."""

    __slots__ = ("req", "resp", "req_done", "resp_done", "notes", "client_offset", "ts", "ref")

    def __init__(self, req: _Message | None, client_offset: int = 0, ts: int = 0,
                 ref: PacketRef = (0, 0)) -> None:
        self.req = req
        self.resp: _Message | None = None
        self.req_done = req is None
        self.resp_done = False
        self.notes: list[str] = []
        self.client_offset = client_offset
        self.ts = ts
        self.ref = ref


def fields_bytes(fields: dict[str, str]) -> int:
    """What a decoded header (or trailer) dict holds of the flow: its names and values."""
    return sum(len(name) + len(value) for name, value in fields.items())


def _content_coding(headers: dict[str, str]) -> str:
    value = headers.get("content-encoding", "").strip().lower()
    if value in ("", "identity"):
        return ""
    if value in ("gzip", "x-gzip"):
        return "gzip"
    return value


class _BodySink:
    """Keeps up to `limit` bytes of a body, decoding gzip/deflate with a bounded output so a
    compression bomb never costs more than `limit` bytes. The raw (de-chunked) prefix is kept
    too, as the fallback when decoding fails or the coding is unknown."""

    __slots__ = ("limit", "coding", "raw", "out", "decoder", "pending", "error", "truncated")

    def __init__(self, limit: int, coding: str) -> None:
        self.limit = limit
        self.coding = coding
        self.raw = bytearray()
        self.out = bytearray()
        self.decoder: Any = None
        self.pending = b""
        self.error = ""
        self.truncated = False

    def add(self, data: bytes | bytearray) -> None:
        room = self.limit - len(self.raw)
        if room > 0:
            self.raw += data[:room]
        if self.coding not in ("gzip", "deflate") or self.error or not data:
            return
        if self.decoder is None:
            if self.coding == "gzip":
                self.decoder = zlib.decompressobj(31)
            else:
                self.pending += data
                if len(self.pending) < 2:
                    return
                data, self.pending = self.pending, b""
                # RFC 9110 "deflate" is zlib-wrapped; some servers send raw deflate.
                zlib_header = (data[0] & 0x0F) == 8 and (data[0] << 8 | data[1]) % 31 == 0
                self.decoder = zlib.decompressobj(15 if zlib_header else -15)
        if self.decoder.eof:
            return
        room = self.limit - len(self.out)
        if room <= 0:
            self.truncated = True
            return
        try:
            self.out += self.decoder.decompress(data, room)
        except zlib.error as exc:
            self.error = str(exc)
            return
        if self.decoder.unconsumed_tail:
            self.truncated = True

    def held_bytes(self) -> int:
        return len(self.raw) + len(self.out) + len(self.pending)

    def finish(self, side: str, body_len: int, complete: bool) -> tuple[bytes, list[str]]:
        coding = self.coding
        if not coding:
            if body_len > self.limit:
                return bytes(self.raw), [f"{side} body truncated at {self.limit} bytes"]
            return bytes(self.raw), []
        if coding not in ("gzip", "deflate"):
            why = "no brotli decoder installed" if coding == "br" else "no decoder for it"
            return bytes(self.raw), [f"{side} body left {coding}-encoded ({why})"]
        if self.decoder is None and self.pending:
            self.error = "body too short"
        if self.error:
            notes = [f"{side} {coding} body could not be decoded: {self.error}"]
            if body_len > self.limit:
                notes.append(f"{side} body truncated at {self.limit} bytes")
            return bytes(self.raw), notes
        notes = []
        if self.decoder is not None and not self.decoder.eof and not self.truncated:
            try:
                self.out += self.decoder.flush()[:max(0, self.limit - len(self.out))]
            except zlib.error as exc:
                notes.append(f"{side} {coding} body could not be decoded: {exc}")
            if complete and body_len:
                notes.append(f"{side} {coding} body ended early")
        if self.truncated:
            notes.append(f"{side} body truncated at {self.limit} bytes (decoded)")
        return bytes(self.out), notes


# -- header blocks -----------------------------------------------------------------------

def _parse_fields(lines: list[str], headers: dict[str, str]) -> bool:
    """Header lines into `headers`; False on a line that is not a header field."""
    last = ""
    for line in lines:
        if line and line[-1] == "\r":
            line = line[:-1]
        if not line:
            continue
        if line[0] in " \t":        # obsolete line folding: continues the previous value
            if not last:
                return False
            headers[last] = f"{headers[last]} {line.strip()}"
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t":
            return False
        name = name.lower()
        value = value.strip()
        old = headers.get(name)
        if old is None:
            headers[name] = value
        else:
            headers[name] = f"{old}\n{value}" if name == "set-cookie" else f"{old}, {value}"
        last = name
    return True


def _parse_head(block: bytes | bytearray, is_request: bool) -> _Message | None:
    """A header block (first line included, terminator optional) -> message, or None."""
    lines = block.decode("utf-8", "replace").split("\n")
    first = lines[0]
    if first and first[-1] == "\r":
        first = first[:-1]
    headers: dict[str, str] = {}
    if is_request:
        parts = first.split(" ")
        if (len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0")
                or parts[0].encode() not in METHODS or not parts[1]):
            return None
        if not _parse_fields(lines[1:], headers):
            return None
        msg = _Message(True, parts[2], headers)
        msg.method, msg.target = parts[0], parts[1]
        return msg
    version, _, rest = first.partition(" ")
    code, _, reason = rest.partition(" ")
    if (version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isascii()
            or not code.isdigit()):
        return None
    if not _parse_fields(lines[1:], headers):
        return None
    msg = _Message(False, version, headers)
    msg.status, msg.reason = int(code), reason.strip()
    return msg


def _content_length(headers: dict[str, str]) -> int | None:
    """-1 when absent, None when malformed."""
    value = headers.get("content-length")
    if value is None:
        return -1
    if "," in value:
        values = {v.strip() for v in value.split(",")}
        if len(values) != 1:
            return None
        (value,) = values
    else:
        value = value.strip()
    if not value or len(value) > 18 or not value.isascii() or not value.isdigit():
        return None
    return int(value)


# -- one direction -----------------------------------------------------------------------

HEAD: Final = 0
BODY: Final = 1
CHUNK_SIZE: Final = 2
CHUNK_DATA: Final = 3
CHUNK_END: Final = 4
TRAILERS: Final = 5
UNTIL_CLOSE: Final = 6
RESYNC: Final = 7
DEAD: Final = 8


class _Sink(Protocol):
    """All an HTTP/1 reader calls on its session."""

    successor: Session | None       # the session an upgrade handed the flow to

    def on_head(self, msg: _Message) -> bool:
        """A head was parsed; whether a body may follow it."""

    def on_end(self, msg: _Message) -> None:
        """A message ended (complete or cut)."""

    def on_lost(self, direction: Direction, why: str, offset: int, ts: int,
                ref: PacketRef) -> None:
        """A message start was lost ("gap"), unparsable ("malformed") or not captured
        ("initial")."""


class _Reader(StreamReader):
    """Cuts one direction into heads and bodies (a state machine over the chunks)."""

    __slots__ = ("s", "is_request", "state", "synced", "scanned", "msg", "remaining")

    def __init__(self, session: _Sink, direction: Direction) -> None:
        super().__init__(direction)
        self.s = session
        self.is_request = direction == Direction.CLIENT_TO_SERVER
        self.state = HEAD
        self.synced = False             # a head was parsed: later garbage is a loss
        self.scanned = 0                # stream offset up to which no head end was found
        self.msg: _Message | None = None
        self.remaining = 0

    def stop(self) -> None:
        """The connection was upgraded: what follows belongs to another protocol."""
        self.state = DEAD
        self.dead = True

    # The loop below is the hot path: one pass per chunk, no re-parsing of earlier bytes.
    def parse(self, work: bytes | bytearray, base: int, ts: int, ref: PacketRef) -> int:
        n = len(work)
        pos = 0
        while pos < n:
            st = self.state
            if st == BODY or st == CHUNK_DATA or st == UNTIL_CLOSE:
                msg = self.msg
                assert msg is not None
                take = n - pos
                if st != UNTIL_CLOSE and take > self.remaining:
                    take = self.remaining
                if msg.sink is not None:
                    msg.sink.add(work[pos:pos + take])
                pos += take
                msg.body_len += take
                if st != UNTIL_CLOSE:
                    self.remaining -= take
                    if not self.remaining:
                        if st == BODY:
                            self._end(base + pos)
                        else:
                            self.state = CHUNK_END
            elif st == HEAD:
                while pos < n and work[pos] in b"\r\n":   # blank lines between messages
                    pos += 1
                if pos == n:
                    break
                search_from = max(pos, self.scanned - base - 3)
                i = work.find(b"\n\r\n", search_from)
                j = work.find(b"\n\n", search_from, i + 1 if i >= 0 else n)
                if j >= 0:
                    end = j + 2
                elif i >= 0:
                    end = i + 3
                else:
                    # Reject a first line that cannot start a head now, not after 64 KiB;
                    # once it was complete in the bytes scanned before, it was checked.
                    checked = search_from > pos and work.find(b"\n", pos, search_from) >= 0
                    line_state = (Detect.MATCH if checked else request_line_state(work, pos)
                                  if self.is_request else status_line_state(work, pos))
                    if n - pos > HEAD_LIMIT or line_state is Detect.NO:
                        pos = self._malformed(pos, base)
                        continue
                    self.scanned = base + n
                    break
                pos = self._head(work, pos, end, base)
            elif st == CHUNK_SIZE or st == TRAILERS:
                i = work.find(b"\n", pos)
                if i < 0:
                    if n - pos > LINE_LIMIT:
                        self._cut("malformed chunked body", base + pos)
                    break
                line = bytes(work[pos:i]).rstrip(b"\r")
                pos = i + 1
                if st == CHUNK_SIZE:
                    size = line.split(b";", 1)[0].strip(b" \t")
                    if not _HEX.fullmatch(size):
                        self._cut("malformed chunk size", base + pos)
                        continue
                    self.remaining = int(size, 16)
                    self.state = CHUNK_DATA if self.remaining else TRAILERS
                elif not line:
                    self._end(base + pos)
                else:
                    self._trailer(line, base + pos)
            elif st == CHUNK_END:
                c = work[pos]
                if c == 10:
                    pos += 1
                    self.state = CHUNK_SIZE
                elif c == 13 and pos + 1 < n:
                    if work[pos + 1] == 10:
                        pos += 2
                        self.state = CHUNK_SIZE
                    else:
                        self._cut("malformed chunked body", base + pos)
                elif c == 13:
                    break
                else:
                    self._cut("malformed chunked body", base + pos)
            elif st == RESYNC:
                pos = self._resync(work, pos)
                if self.state == RESYNC:
                    break
            else:   # DEAD: the connection was upgraded; the rest belongs to another protocol
                successor = self.s.successor
                if successor is not None:
                    successor.on_data(self.direction, bytes(work[pos:]), base + pos, ts, ref)
                return n
        return pos

    def _head(self, work: bytes | bytearray, pos: int, end: int, base: int) -> int:
        if end - pos > HEAD_LIMIT:
            return self._malformed(pos, base)
        msg = _parse_head(work[pos:end], self.is_request)
        if msg is None:
            return self._malformed(pos, base)
        self.synced = True
        self.scanned = 0
        msg.start = base + pos
        _, msg.ts, msg.ref = self.where(msg.start)
        has_body = self.s.on_head(msg)
        headers = msg.headers
        self.msg = msg
        if not has_body:
            self._end(base + end)
            return end
        te = headers.get("transfer-encoding")
        if te is not None:
            if te.lower().rsplit(",", 1)[-1].strip() == "chunked":
                self.state = CHUNK_SIZE
                return end
            if self.is_request:
                self._cut("request with an unknown transfer-encoding", base + end)
                return end
            self.state = UNTIL_CLOSE
            return end
        length = _content_length(headers)
        if length is None:
            self._cut("malformed content-length", base + end)
        elif length > 0:
            self.remaining = length
            self.state = BODY
        elif length == 0 or self.is_request:
            self._end(base + end)
        else:
            self.state = UNTIL_CLOSE
        return end

    def _trailer(self, line: bytes, offset: int) -> None:
        msg = self.msg
        assert msg is not None
        trailers = msg.trailers if msg.trailers is not None else {}
        text = line.decode("utf-8", "replace")
        if offset - msg.start > 2 * HEAD_LIMIT or not _parse_fields([text], trailers):
            self._cut("malformed chunk trailer", offset)
            return
        msg.trailers = trailers

    def _end(self, end: int) -> None:
        """The current message ended at stream offset `end` (exclusive)."""
        msg = self.msg
        assert msg is not None
        msg.end = end
        _, msg.end_ts, msg.end_ref = self.where(end - 1)
        self.msg = None
        if self.state != DEAD:
            self.state = HEAD
        self.s.on_end(msg)

    def _cut(self, why: str, end: int, resync: bool = True) -> None:
        """The current message cannot be read to its end: emit it incomplete."""
        msg = self.msg
        assert msg is not None
        msg.complete = False
        msg.notes.append(why)
        msg.end, msg.end_ts, msg.end_ref = end, self.last_ts, self.last_ref
        self.msg = None
        self.state = RESYNC if resync else HEAD
        self.s.on_end(msg)

    def _malformed(self, pos: int, base: int) -> int:
        """Where a head should start there is none: resync after its first byte."""
        # The stream's first bytes may be a message's tail (capture started late). On the
        # client side that is a request whose response is still to come: it gets a
        # stand-in. On the server side it is a response to a request never seen.
        if self.synced or self.is_request:
            _, ts, ref = self.where(base + pos)
            why = "malformed" if self.synced else "initial"
            self.s.on_lost(self.direction, why, base + pos, ts, ref)
        self.state = RESYNC
        self.scanned = 0
        self.skipped += 1
        return pos + 1          # the line at pos is not a head: never match it again

    def _resync(self, work: bytes | bytearray, pos: int) -> int:
        """Skip to the next request/status line. Not only at line starts: a body need not
        end with a newline, and the next message follows its last byte directly."""
        line = _REQUEST_LINE if self.is_request else _STATUS_LINE
        # Every such line ends with a newline: without one, nothing can match yet.
        m = line.search(work, pos) if work.find(b"\n", pos) >= 0 else None
        if m is not None:
            self.skipped += m.start() - pos
            self.state = HEAD
            return m.start()
        # A line that completes later starts after the last newline seen: keep from there.
        n = len(work)
        keep = work.rfind(b"\n", pos) + 1 or pos
        keep = max(keep, n - LINE_LIMIT)
        self.skipped += keep - pos
        return keep

    def lose(self, offset: int, end: int, ts: int) -> None:
        side = "request" if self.is_request else "response"
        st = self.state
        if st == HEAD:
            pending = self.buf.lstrip(b"\r\n")
            if pending:
                msg = _parse_head(pending[:pending.rfind(b"\n") + 1], self.is_request) \
                    if b"\n" in pending else None
                if msg is not None:
                    start = self.expected - len(pending)
                    msg.start = start
                    _, msg.ts, msg.ref = self.where(start)
                    self.s.on_head(msg)
                    self.msg = msg
                    self._cut(f"gap in {side} headers", self.expected)
                else:
                    self.s.on_lost(self.direction, "gap", self.expected, ts, self.last_ref)
            else:
                self.s.on_lost(self.direction, "gap", offset, ts, self.last_ref)
        elif st != RESYNC:
            self._cut(f"gap in {side} body", self.expected)
        self.state = RESYNC

    def close(self) -> None:
        st = self.state
        side = "request" if self.is_request else "response"
        if st == UNTIL_CLOSE:
            msg = self.msg
            assert msg is not None
            msg.end, msg.end_ts, msg.end_ref = self.expected, self.last_ts, self.last_ref
            self.msg = None
            self.state = HEAD
            self.s.on_end(msg)
        elif st == HEAD:
            pending = self.buf.lstrip(b"\r\n")
            if b"\n" in pending:
                msg = _parse_head(pending[:pending.rfind(b"\n") + 1], self.is_request)
                if msg is not None:
                    msg.start = self.expected - len(pending)
                    _, msg.ts, msg.ref = self.where(msg.start)
                    self.s.on_head(msg)
                    self.msg = msg
                    self._cut(f"{side} headers cut by the end of the connection", self.expected)
        elif st not in (RESYNC, DEAD):
            self._cut(f"{side} cut by the end of the connection", self.expected)
        self.state = DEAD
        super().close()


# -- the session -------------------------------------------------------------------------

# Called after a 101 Switching Protocols or a CONNECT tunnel with the protocol name
# ("websocket", "h2c", "tunnel", ...); may return the Session that takes the flow over.
# Called as hook(protocol, flow, emit, body_limit).
UpgradeHook = Callable[[str, FlowInfo, Emit, int], "Session | None"]


class HttpSession(TwoWaySession[_Reader]):
    def __init__(self, flow: FlowInfo, emit: Emit, body_limit: int = 0,
                 upgrade_hook: UpgradeHook | None = None) -> None:
        super().__init__(_Reader(self, Direction.CLIENT_TO_SERVER),
                         _Reader(self, Direction.SERVER_TO_CLIENT))
        self.flow = flow
        self.emit = emit
        self.body_limit = body_limit
        self.pairs: deque[_Pair] = deque()        # in request order, not emitted yet
        self.unanswered: deque[_Pair] = deque()   # waiting for their final response
        self.upgraded: str | None = None          # protocol after 101 / CONNECT
        self.successor: Session | None = None     # what the upgrade hook returned
        self._upgrade_hook = upgrade_hook
        self._gave_up = False                     # over MAX_PENDING: nothing more is read

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        successor = self.successor
        if successor is not None:
            # An upgraded flow's every packet: to a WebSocket session by a direct call
            # (compiled; through the Session protocol ~1k instructions a packet more).
            if type(successor) is WebSocketSession:
                successor.on_data(direction, data, offset, ts_ns, ref)
            else:
                successor.on_data(direction, data, offset, ts_ns, ref)
        elif not self.dead and not self._gave_up:
            self.readers[direction].feed(data, offset, ts_ns, ref)

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        if self.successor is not None:
            self.successor.on_gap(direction, offset, length, ts_ns)
        elif not self.dead:
            self.readers[direction].gap(offset, length, ts_ns)
            self._flush()

    def on_close(self, ts_ns: int) -> None:
        if self.successor is not None:
            self.successor.on_close(ts_ns)
            return
        if self.dead:
            return
        self.dead = True
        self.client.close()
        self.server.close()
        for pair in self.pairs:
            pair.req_done = pair.resp_done = True
            if pair.resp is None and pair.req is not None and not pair.notes:
                pair.notes.append("no response")
        self._flush()

    def held_bytes(self) -> int:
        held = super().held_bytes()
        return held if self.successor is None else held + self.successor.held_bytes()

    def kept_bytes(self) -> int:
        """Heads (and kept bodies) of messages waiting for their exchange: up to 128
        pipelined requests of up to 64 KiB each."""
        kept = 0
        for pair in self.pairs:
            for msg in (pair.req, pair.resp):
                if msg is not None:
                    kept += len(msg.target) + fields_bytes(msg.headers)
                    if msg.trailers:
                        kept += fields_bytes(msg.trailers)
                    if msg.sink is not None:
                        kept += msg.sink.held_bytes()
        return kept

    # -- called by the readers --

    def on_head(self, msg: _Message) -> bool:
        """A head was parsed; returns whether a body may follow it."""
        if self._gave_up:
            return False
        if msg.is_request and len(self.unanswered) >= MAX_PENDING:
            self._give_up(f"cut: http1 pending: over {MAX_PENDING} requests awaited responses; "
                          "the rest of this connection is not dissected")
            return False
        if msg.is_request:
            pair = _Pair(msg)
            msg.pair = pair
            self.pairs.append(pair)
            self.unanswered.append(pair)
            if self.body_limit > 0:
                msg.sink = _BodySink(self.body_limit, _content_coding(msg.headers))
            return True
        status = msg.status
        if 100 <= status < 200 and status != 101:
            return False                  # informational: the final response follows
        if self.unanswered:
            pair = self.unanswered.popleft()
        else:                              # capture started after the request
            pair = _Pair(None, self.client.expected, msg.ts, msg.ref)
            pair.notes.append("request not captured")
            self.pairs.append(pair)
        pair.resp = msg
        msg.pair = pair
        method = pair.req.method if pair.req is not None else ""
        if status == 101 or (method == "CONNECT" and 200 <= status < 300):
            return False
        if self.body_limit > 0:
            msg.sink = _BodySink(self.body_limit, _content_coding(msg.headers))
        return not (method == "HEAD" or status in (204, 304))

    def on_end(self, msg: _Message) -> None:
        """A message ended (complete or cut)."""
        pair = msg.pair
        if pair is None:                   # a 1xx response
            return
        # The reader hands each message here once, as it lets go of it, and nothing else reads
        # msg.pair: dropping it breaks the message <-> pair cycle, so an exchange's objects are
        # freed when it is emitted instead of piling up for the garbage collector (119,970
        # cyclic objects on a 20k-exchange capture; collecting them took 10-27% of the compiled
        # dissection: docs/BENCHMARKS.md, branch shard-cpu).
        msg.pair = None
        if msg.is_request:
            pair.req_done = True
        else:
            pair.resp_done = True
            method = pair.req.method if pair.req is not None else ""
            if msg.complete and (msg.status == 101 or (method == "CONNECT"
                                                        and 200 <= msg.status < 300)):
                self._upgrade(msg, method)
        self._flush()

    def _give_up(self, note: str) -> None:
        self._gave_up = True
        for reader in (self.client, self.server):
            reader.buf = bytearray()
        for pair in self.pairs:
            if not (pair.req_done and pair.resp_done):
                pair.notes.append(note)
            for msg in (pair.req, pair.resp):
                if msg is not None and msg.end < msg.start:    # cut mid-body
                    msg.end, msg.end_ts, msg.end_ref, msg.complete = msg.start, msg.ts, msg.ref, False
            pair.req_done = pair.resp_done = True
        self.unanswered.clear()
        self._flush()

    def on_lost(self, direction: Direction, why: str, offset: int, ts: int,
                ref: PacketRef) -> None:
        """A whole message start was lost (gap) or unparsable (malformed) at a boundary."""
        if self._gave_up:
            return
        if direction == Direction.CLIENT_TO_SERVER:
            pair = _Pair(None, offset, ts, ref)
            pair.notes.append({"gap": "request lost in a gap", "initial": "request not captured"}
                              .get(why, "request could not be parsed"))
            self.pairs.append(pair)
            self.unanswered.append(pair)
        elif self.unanswered:
            pair = self.unanswered.popleft()
            pair.resp_done = True
            pair.notes.append("response lost in a gap" if why == "gap"
                              else "response could not be parsed")
            self._flush()

    def _upgrade(self, msg: _Message, method: str) -> None:
        """101 or a CONNECT tunnel: stop dissecting; hand the flow to the hook's session."""
        if msg.status == 101:
            self.upgraded = msg.headers.get("upgrade", "").strip().lower() or "unknown"
        else:
            self.upgraded = "tunnel"
        self.client.stop()
        self.server.stop()
        for pair in self.pairs:     # nothing more of them will be read as HTTP
            pair.req_done = pair.resp_done = True
        if self._upgrade_hook is None:
            return
        successor = self._upgrade_hook(self.upgraded, self.flow, self.emit, self.body_limit)
        if successor is None:
            return
        self.successor = successor
        # Bytes already read past the switch (the client's first frames right after the
        # upgrade request, the server's right after the 101) belong to the new protocol.
        for reader, direction in ((self.client, Direction.CLIENT_TO_SERVER),
                                  (self.server, Direction.SERVER_TO_CLIENT)):
            pending = reader.buf
            if pending:
                start = reader.expected - len(pending)
                reader.buf = bytearray()
                successor.on_data(direction, bytes(pending), start, reader.last_ts,
                                  reader.last_ref)

    def _flush(self) -> None:
        pairs = self.pairs
        while pairs:
            pair = pairs[0]
            if not (pair.req_done and pair.resp_done):
                break
            pairs.popleft()
            if pair.req is None and pair.resp is None:
                continue                   # a lost request nobody answered: nothing known
            self.emit(self._exchange(pair))

    def _exchange(self, pair: _Pair) -> Exchange:
        req, resp = pair.req, pair.resp
        notes: list[str] = []
        if req is not None:
            request = _request_fields(req)
            notes += req.notes
            summary = f"{req.method} {req.target}"
            if len(summary) > SUMMARY_LIMIT:
                summary = summary[:SUMMARY_LIMIT - 3] + "..."
            start_ns, first_ref, client_offset = req.ts, req.ref, req.start
            request_size = req.end - req.start
        else:
            assert resp is not None
            request = {}
            summary = f"{resp.status} {resp.reason}".strip() + " (request not captured)"
            start_ns, first_ref, client_offset = resp.ts, resp.ref, pair.client_offset
            request_size = 0
        # Positional, in Exchange's field order: a dozen keywords cost a microsecond more.
        ex = Exchange("http", start_ns, None, summary, request, None, None, request_size, 0,
                      True, first_ref, req.end_ref if req is not None else first_ref,
                      client_offset, None, None, None, notes)
        if resp is not None:
            ex.response = _response_fields(resp)
            if resp.complete and self.upgraded and (resp.status == 101 or req is not None
                                                    and req.method == "CONNECT"
                                                    and 200 <= resp.status < 300):
                ex.response["upgrade"] = self.upgraded
            notes += resp.notes
            ex.status = resp.status
            ex.end_ns = resp.end_ts
            ex.last_ref = resp.end_ref
            ex.server_offset = resp.start
            ex.response_size = resp.end - resp.start
        notes += pair.notes
        ex.complete = (req is not None and req.complete and resp is not None
                       and resp.complete)
        if self.body_limit > 0:
            if req is not None and req.sink is not None:
                ex.request_body, more = req.sink.finish("request", req.body_len, req.complete)
                notes += more
            if resp is not None and resp.sink is not None:
                ex.response_body, more = resp.sink.finish("response", resp.body_len,
                                                          resp.complete)
                notes += more
        return ex


def _request_fields(msg: _Message) -> dict[str, Any]:
    target = msg.target
    headers = msg.headers
    host = headers.get("host", "")
    if target[0] == "/" or target == "*":
        path, _, query = target.partition("?")
    elif "://" in target:                   # absolute form (to a proxy)
        parts = urlsplit(target)
        path, query = parts.path or "/", parts.query
        host = host or parts.netloc
    else:                                   # authority form (CONNECT host:port)
        path, query = target, ""
    fields: dict[str, Any] = {
        "method": msg.method,
        "path": path,
        "query": parse_qs(query, keep_blank_values=True) if query else {},
        "version": msg.version,
        "headers": headers,
        "host": host,
        "content_type": headers.get("content-type", ""),
        "content_length": msg.body_len,
    }
    if msg.trailers:
        fields["trailers"] = msg.trailers
    return fields


def _response_fields(msg: _Message) -> dict[str, Any]:
    headers = msg.headers
    fields: dict[str, Any] = {
        "status": msg.status,
        "reason": msg.reason,
        "version": msg.version,
        "headers": headers,
        "content_type": headers.get("content-type", ""),
        "content_length": msg.body_len,
    }
    if msg.trailers:
        fields["trailers"] = msg.trailers
    return fields


class Http1Dissector:
    name = "http"
    transports = frozenset({"tcp"})
    ports = frozenset({80, 8080, 8000, 3000, 5000, 8888, 9090})
    client_first = True         # a request

    def detect(self, client: bytes, server: bytes) -> Detect:
        return detect(client, server)

    def __init__(self, upgrade_hook: UpgradeHook | None = None) -> None:
        self.upgrade_hook = upgrade_hook   # the websocket/h2c issue plugs in here

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> HttpSession:
        return HttpSession(flow, emit, body_limit, self.upgrade_hook)
