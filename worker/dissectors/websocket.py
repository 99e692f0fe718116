"""WebSocket (RFC 6455) after an HTTP/1.1 Upgrade: frames, messages, close and ping/pong.

The HTTP/1 session hands the flow over after "101 Switching Protocols" (see
worker.dissectors.upgrades); from then on each direction is a sequence of frames. A _Reader
per direction is a small state machine fed chunk by chunk: it buffers only an incomplete
frame header (at most 14 bytes), skips payloads by length, and unmasks and keeps only the
bytes it shows (the first TEXT_LIMIT characters of a text message, or body_limit bytes in the
detail view). Fragmented messages (continuation frames, control frames in between) are
reassembled. permessage-deflate (RSV1 on a message's first frame) is inflated with one
decompressor per direction (context takeover works; a smaller window is fine); the inflated
output beyond what is shown is discarded, and inflating stops past INFLATE_LIMIT per message.

Entries: one per data message, as the request (response None), with `direction` saying who
sent it; a close frame paired with the peer's close reply (status = the close code); a ping
paired with the peer's next pong (an unsolicited pong is an entry alone).

Losses: a gap inside a payload keeps the framing (the message is marked incomplete); a gap
that passes a frame's end loses it, and the reader resyncs on the next chunk that starts with
a plausible frame header (mask bit as the direction requires, a known opcode, frames that
end exactly at the chunk's end or chain to another plausible header); else it drops chunks.
"""

from __future__ import annotations

import re
import zlib
from collections import deque
from typing import Any, Final

from worker.dissectors.base import Detect, Direction, Emit, Exchange, FlowInfo
from worker.packet import PacketRef
from worker.dissectors.stream import in_order

# Final: compiled, a module's other names are looked up in its dict at every use (the reader's
# states and limits: ~1.7k instructions a message).
OPCODES: Final = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
TEXT_LIMIT: Final = 1000          # characters of a text message shown (and of a close reason)
_TEXT_BYTES: Final = 4 * TEXT_LIMIT   # enough UTF-8 for TEXT_LIMIT characters
INFLATE_LIMIT: Final = 64 * 1024 * 1024   # inflated bytes per message before inflating is abandoned
_INFLATE_STEP: Final = 256 * 1024
_DEFLATE_TAIL: Final = b"\x00\x00\xff\xff"
RESYNC_LIMIT: Final = 64 * 1024   # bytes a resync candidate may need to be decided
# Data messages' labels by length, opcode and side (_label_key): a connection's messages repeat
# their lengths, and the f-string was ~1.4k instructions an entry (the arrow makes it a string
# of 2-byte characters). At most _LABEL_CACHE, then emptied.
_LABELS: Final[dict[int, str]] = {}
_LABEL_CACHE: Final = 4096


def _start_class(client: bool) -> re.Pattern[bytes]:
    """First two bytes of a plausible frame header: RSV2/3 clear, a known opcode, the mask bit
    as the direction requires (clients mask, servers do not)."""
    first = bytes(b for b in range(256) if not b & 0x30 and b & 0x0F in (0, 1, 2, 8, 9, 10))
    second = bytes(range(0x80, 0x100)) if client else bytes(range(0x80))
    return re.compile(b"[" + re.escape(first) + b"][" + re.escape(second) + b"]", re.DOTALL)


_CLIENT_START: Final = _start_class(True)
_SERVER_START: Final = _start_class(False)

HEADER: Final = 0
PAYLOAD: Final = 1
RESYNC: Final = 2
# A frame header as parse_header gives it: (header length, fin, rsv bits, opcode, mask or None,
# payload length), header length 0 when incomplete (_PARTIAL). Never None: compiled, a tuple
# of this exact type is passed by value, its ints unboxed (an optional one is a tuple object of
# boxed ints: ~8 made per frame).
Header = tuple[int, int, int, int, bytes | None, int]
_PARTIAL: Final[Header] = (0, 0, 0, 0, None, 0)

CLOSE_CODES = {
    1000: "normal closure", 1001: "going away", 1002: "protocol error",
    1003: "unsupported data", 1005: "no status", 1006: "abnormal closure",
    1007: "invalid payload", 1008: "policy violation", 1009: "message too big",
    1010: "mandatory extension", 1011: "internal error", 1012: "service restart",
    1013: "try again later", 1014: "bad gateway", 1015: "TLS handshake",
}


def _unmask(data: bytes, mask: bytes, start: int) -> bytes:
    """XOR data with the mask, data[0] being payload byte number `start`."""
    n = len(data)
    if not n:
        return b""
    shift = start & 3
    key = mask[shift:] + mask[:shift] if shift else mask     # (a frame's first piece: 0)
    key = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def parse_header(buf: bytes | bytearray, i: int = 0) -> Header:
    """(header length, fin, rsv bits, opcode, mask or None, payload length) of the frame
    header at buf[i:], or _PARTIAL (header length 0) when buf holds only part of it."""
    n = len(buf) - i
    if n < 2:
        return _PARTIAL
    b0, b1 = buf[i], buf[i + 1]
    length = b1 & 0x7F
    hlen = 2
    if length == 126:
        hlen = 4
    elif length == 127:
        hlen = 10
    masked = b1 & 0x80
    if masked:
        hlen += 4
    if n < hlen:
        return _PARTIAL
    if length == 126:
        length = (buf[i + 2] << 8) | buf[i + 3]
    elif length == 127:
        length = int.from_bytes(buf[i + 2:i + 10], "big")
    mask = bytes(buf[i + hlen - 4:i + hlen]) if masked else None
    return hlen, b0 >> 7, (b0 >> 4) & 7, b0 & 0x0F, mask, length


def header_problem(fin: int, opcode: int, length: int) -> str:
    """Why a frame header is invalid, or "" when it is fine."""
    if opcode not in OPCODES:
        return f"reserved opcode {opcode}"
    if opcode >= 8 and (not fin or length > 125):
        return "control frame fragmented or longer than 125 bytes"
    if length >> 63:
        return "payload length with the most significant bit set"
    return ""


class _Message:
    """A data message being assembled, or one control frame."""

    __slots__ = ("opcode", "client", "start", "ts", "ref", "end_ts", "end_ref", "frames",
                 "length", "wire", "kept", "keep", "compressed", "inflated", "inflate_error",
                 "tail_inflated", "fin", "complete", "notes")

    def __init__(self, opcode: int, client: bool, start: int, ts: int, ref: PacketRef,
                 keep: int) -> None:
        self.opcode = opcode
        self.client = client
        self.start = start
        self.ts = self.end_ts = ts
        self.ref = self.end_ref = ref
        self.frames = 0
        self.length = 0              # payload bytes as sent
        self.wire = 0                # frame bytes, headers included
        self.kept = bytearray()      # the unmasked (inflated) payload bytes shown
        self.keep = keep
        self.compressed = False
        self.inflated = 0            # bytes after inflating (compressed messages)
        self.inflate_error = ""
        self.tail_inflated = False   # the deflate tail went in with the last payload bytes
        self.fin = False
        self.complete = True
        self.notes: list[str] = []


class _Reader:
    __slots__ = ("s", "client", "state", "hbuf", "hmark", "expected", "fin", "opcode", "mask",
                 "remaining", "payload_pos", "frame", "msg", "inflater", "last_ts", "last_ref",
                 "skipped", "rbuf", "rstart", "rmarks", "rscan")

    def __init__(self, session: WebSocketSession, client: bool, start: int | None) -> None:
        self.s = session
        self.client = client
        self.state = HEADER
        self.hbuf = bytearray()                 # an incomplete frame header
        self.hmark: tuple[int, int, PacketRef] = (0, 0, (0, 0))   # where hbuf began
        self.expected = start                   # stream offset of the next byte
        self.fin = 0
        self.opcode = 0
        self.mask: bytes | None = None
        self.remaining = 0
        self.payload_pos = 0
        self.frame: _Message | None = None      # what the current frame's payload belongs to
        self.msg: _Message | None = None        # the data message being assembled
        self.inflater: Any = None
        self.last_ts = 0
        self.last_ref: PacketRef = (0, 0)
        self.skipped = 0
        # While resyncing: the bytes not decided yet, where they start, their chunks' marks.
        self.rbuf = bytearray()
        self.rstart = 0
        self.rmarks: list[tuple[int, int, PacketRef]] = []
        self.rscan = 0

    def feed(self, data: bytes, offset: int, ts: int, ref: PacketRef) -> None:
        if self.expected is not None and offset != self.expected:
            missing, data, offset = in_order(self.expected, data, offset)
            if missing:
                self.gap(missing, ts)
            elif not data:
                return
        self.expected = offset + len(data)
        self.last_ts, self.last_ref = ts, ref
        if self.state != RESYNC:
            pos = self._parse(data, offset, ts, ref)
            if pos >= len(data):
                return
            data, offset = data[pos:], offset + pos
        self._resync(data, offset, ts, ref)

    # The hot path: one pass per chunk; payload bytes nobody shows are skipped by length.
    def _parse(self, data: bytes, offset: int, ts: int, ref: PacketRef) -> int:
        """Frames from data; returns len(data), or where a malformed header put the reader
        into RESYNC."""
        n = len(data)
        pos = 0
        while pos < n:
            if self.state == PAYLOAD:
                take = n - pos
                if take > self.remaining:
                    take = self.remaining
                frame = self.frame
                assert frame is not None
                if frame.compressed or len(frame.kept) < frame.keep:
                    self._payload(frame, data, pos, take)
                pos += take
                self.payload_pos += take
                self.remaining -= take
                if not self.remaining:
                    self._frame_end(ts, ref)
                continue
            # HEADER
            held = b""
            if self.hbuf:
                held = bytes(self.hbuf)
                work = held + data[pos:pos + 14]
                header = parse_header(work)
                if not header[0]:
                    self.hbuf = bytearray(work)
                    return n
                start, fts, fref = self.hmark
                pos += header[0] - len(held)
                self.hbuf = bytearray()
            else:
                header = parse_header(data, pos)
                if not header[0]:
                    self.hbuf = bytearray(data[pos:])
                    self.hmark = (offset + pos, ts, ref)
                    return n
                start, fts, fref = offset + pos, ts, ref
                pos += header[0]
            self._frame_start(header, start, fts, fref, ts, ref)
            if self.state == RESYNC:      # a malformed header: look for a frame after it
                if start >= offset:
                    return start - offset + 1
                # It began in the previous chunk: the search starts at its second byte there,
                # as in one chunk (the bytes it took of this one may hold the next frame).
                self.rbuf = bytearray(held[1:])
                self.rstart = start + 1
                self.rmarks = [(start + 1, fts, fref)] if len(held) > 1 else []
                self.rscan = 0
                return 0
        return n

    def _frame_start(self, header: Header, start: int, ts: int, ref: PacketRef, now_ts: int,
                     now_ref: PacketRef) -> None:
        hlen, fin, rsv, opcode, mask, length = header
        problem = header_problem(fin, opcode, length)
        if problem:
            self.s.malformed += 1
            if self.msg is not None:
                self._cut(self.msg, f"malformed frame: {problem}")
                self.msg = None
            self.state = RESYNC
            return
        session = self.s
        frame: _Message | None
        if opcode >= 8:
            frame = _Message(opcode, self.client, start, ts, ref, 125)
        else:
            frame = self.msg
            if opcode == 0 and frame is None:
                keep = max(_TEXT_BYTES, session.body_limit)
                frame = _Message(0, self.client, start, ts, ref, keep)
                frame.notes.append("continuation without the message's first frame")
                frame.complete = False
                self.msg = frame
            elif opcode != 0:
                if frame is not None:
                    self._cut(frame, "message interrupted by a new message")
                keep = _TEXT_BYTES if opcode == 1 else 0
                frame = _Message(opcode, self.client, start, ts, ref,
                                 max(keep, session.body_limit))
                frame.compressed = bool(rsv & 4)
                self.msg = frame
        assert frame is not None      # a continuation's message is self.msg, made above if none
        frame.frames += 1
        frame.length += length
        frame.wire += hlen + length
        self.frame = frame
        self.fin = fin
        self.opcode = opcode
        self.mask = mask
        self.remaining = length
        self.payload_pos = 0
        if length:
            self.state = PAYLOAD
        else:
            self._frame_end(now_ts, now_ref)

    def _payload(self, frame: _Message, data: bytes, pos: int, take: int) -> None:
        if not frame.compressed:
            room = frame.keep - len(frame.kept)
            piece = data[pos:pos + min(take, room)]
            if self.mask is not None:
                piece = _unmask(piece, self.mask, self.payload_pos)
            frame.kept += piece
            return
        if frame.inflate_error:
            return
        piece = data[pos:pos + take]
        if self.mask is not None:
            piece = _unmask(piece, self.mask, self.payload_pos)
        if self.fin and take == self.remaining and not self.s.body_limit:
            # The message's last bytes: its tail is inflated with them, not in a second
            # decompress call at the frame's end (~3k instructions a message). Not in the
            # detail view: there the bytes inflated before a bad tail are shown (a call that
            # fails gives none of its output).
            piece += _DEFLATE_TAIL
            frame.tail_inflated = True
        self._inflate(frame, piece)

    def _inflate(self, frame: _Message, piece: bytes) -> None:
        if self.inflater is None:
            self.inflater = zlib.decompressobj(-15)
        inflater = self.inflater
        try:
            while piece:
                out: bytes = inflater.decompress(piece, _INFLATE_STEP)
                frame.inflated += len(out)
                room = frame.keep - len(frame.kept)
                if room > 0:
                    frame.kept += out[:room]
                if frame.inflated > INFLATE_LIMIT:
                    frame.inflate_error = f"inflated past {INFLATE_LIMIT} bytes: not shown"
                    self.inflater = None
                    return
                piece = inflater.unconsumed_tail
        except zlib.error as exc:
            frame.inflate_error = f"compressed payload could not be inflated: {exc}"
            self.inflater = None     # the next message may inflate with a fresh context

    def _frame_end(self, ts: int, ref: PacketRef) -> None:
        frame = self.frame
        assert frame is not None
        self.state = HEADER
        self.frame = None
        frame.end_ts, frame.end_ref = ts, ref
        if frame.opcode >= 8:
            if self.mask is not None and len(frame.kept) < frame.length:
                frame.notes.append("control payload partly lost")
            self.s._control(frame)
            return
        if not self.fin:
            return
        frame.fin = True
        self.msg = None
        if frame.compressed and not frame.inflate_error and not frame.tail_inflated:
            self._inflate(frame, _DEFLATE_TAIL)
        self.s._data(frame)

    def _cut(self, msg: _Message, why: str) -> None:
        msg.complete = False
        msg.notes.append(why)
        msg.end_ts, msg.end_ref = self.last_ts, self.last_ref
        if msg.opcode >= 8:
            self.s._control(msg)
        else:
            self.s._data(msg)

    def _resync(self, data: bytes, offset: int, ts: int, ref: PacketRef) -> None:
        """Buffer bytes until a frame start is found (see _find_start), then parse from it.
        Decided by content only, so how the bytes were split into chunks does not matter."""
        if not self.rbuf:
            self.rstart = offset
            self.rmarks = []
        self.rbuf += data
        self.rmarks.append((offset, ts, ref))
        while self.state == RESYNC:
            i = self._find_start()
            if i < 0:
                return
            buf, marks, base = self.rbuf, self.rmarks, self.rstart
            self.rbuf, self.rmarks, self.rscan = bytearray(), [], 0
            self.skipped += i
            self.state = HEADER
            start = base + i
            for k, (mark_offset, mark_ts, mark_ref) in enumerate(marks):
                stop = marks[k + 1][0] if k + 1 < len(marks) else base + len(buf)
                if stop <= start:
                    continue
                seg_offset = max(mark_offset, start)
                segment = bytes(buf[seg_offset - base:stop - base])
                if self.state == RESYNC:       # parse failed again: the rest is buffered
                    if not self.rbuf:
                        self.rstart = seg_offset
                    self.rbuf += segment
                    self.rmarks.append((seg_offset, mark_ts, mark_ref))
                    continue
                pos = self._parse(segment, seg_offset, mark_ts, mark_ref)
                if pos < len(segment):
                    # (after what _parse kept of a bad header begun in the segment before)
                    if not self.rbuf:
                        self.rstart = seg_offset + pos
                    self.rbuf += segment[pos:]
                    self.rmarks.append((seg_offset + pos, mark_ts, mark_ref))

    def _find_start(self) -> int:
        """The first position of rbuf where a plausible frame header is followed by another
        one (the direction's mask bit, a known opcode, RSV2/3 clear, sane lengths), or -1.
        Keeps rbuf from the first position that cannot be decided yet."""
        buf = self.rbuf
        n = len(buf)
        candidates = _CLIENT_START if self.client else _SERVER_START
        i = self.rscan
        while True:
            m = candidates.search(buf, i)
            if m is None:
                self._keep_from(max(i, n - 1))
                return -1
            i = m.start()
            verdict = self._chain(buf, i, n)
            if verdict > 0:
                return i
            if verdict == 0:              # not enough bytes to tell yet
                self._keep_from(i)
                return -1
            i += 1

    def _chain(self, buf: bytearray, i: int, n: int) -> int:
        """1: a valid header at i and another right after its frame; -1: no; 0: undecided."""
        first = i
        for _ in range(2):
            header = parse_header(buf, i)
            if not header[0]:
                return 0 if n - first < RESYNC_LIMIT else -1
            hlen, fin, rsv, opcode, mask, length = header
            if (header_problem(fin, opcode, length) or rsv & 3
                    or (mask is not None) != self.client):
                return -1
            i += hlen + length
            if i - first > RESYNC_LIMIT:
                return -1
        return 1

    def _keep_from(self, i: int) -> None:
        if i > 0:
            self.skipped += i
            del self.rbuf[:i]
            self.rstart += i
            marks = self.rmarks
            while len(marks) > 1 and marks[1][0] <= self.rstart:
                del marks[0]
        self.rscan = 0

    def gap(self, length: int, ts: int) -> None:
        if self.expected is not None:
            self.expected += length
        if self.state == RESYNC:
            self.reset()              # bytes before a gap never join those after it
            return
        side = "client" if self.client else "server"
        if self.state == PAYLOAD and length < self.remaining:
            # The frame goes on after the gap: framing is kept, the payload has a hole.
            frame = self.frame
            assert frame is not None
            if frame.complete:
                frame.complete = False
                frame.notes.append(f"gap in {side} payload")
            if frame.compressed and not frame.inflate_error:
                frame.inflate_error = "compressed payload cut by a gap: not shown"
                self.inflater = None
            frame.keep = len(frame.kept)      # bytes after the hole would be misplaced
            self.remaining -= length
            self.payload_pos += length
            return
        if self.state == PAYLOAD and length == self.remaining:
            frame = self.frame
            assert frame is not None
            frame.complete = False
            frame.notes.append(f"gap in {side} payload")
            self.remaining = 0
            self.payload_pos += length
            self._frame_end(ts, self.last_ref)
            self.inflater = None
            return
        current = self.frame if self.frame is not None and self.frame.opcode >= 8 else self.msg
        if current is not None:
            self._cut(current, f"gap in {side} frames")
        if self.msg is not None and self.msg is not current:
            self._cut(self.msg, f"gap in {side} frames")
        self.inflater = None
        self.reset()

    def reset(self) -> None:
        """Forget the frame state and look for the next frame start (RESYNC)."""
        self.msg = self.frame = None
        self.hbuf = bytearray()
        self.skipped += len(self.rbuf)
        self.rbuf = bytearray()
        self.rmarks = []
        self.rscan = 0
        self.state = RESYNC

    def close(self) -> None:
        side = "client" if self.client else "server"
        frame = self.frame
        if self.state == PAYLOAD and frame is not None and frame.opcode >= 8:
            self._cut(frame, "cut by the end of the connection")
        if self.msg is not None:
            self._cut(self.msg, f"{side} message cut by the end of the connection")
        self.reset()


class WebSocketSession:
    """The frames of one upgraded connection. start_offsets: the stream offsets (client,
    server) where the WebSocket bytes begin, when known (else the first byte seen)."""

    def __init__(self, flow: FlowInfo, emit: Emit, body_limit: int = 0,
                 start_offsets: tuple[int, int] | None = None) -> None:
        self.flow = flow
        self.emit = emit
        self.body_limit = body_limit
        starts = start_offsets or (None, None)
        self.readers = (_Reader(self, True, starts[0]), _Reader(self, False, starts[1]))
        self.close_sent: _Message | None = None     # a close waiting for the peer's reply
        self.pings: tuple[deque[_Message], deque[_Message]] = (deque(), deque())
        self.malformed = 0          # invalid frame headers met
        self.errors = 0             # unexpected exceptions caught (bugs)
        self._closed = False

    @property
    def skipped_bytes(self) -> int:
        return self.readers[0].skipped + self.readers[1].skipped

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        if self._closed or not data:
            return
        reader = self.readers[direction]
        try:
            reader.feed(data, offset, ts_ns, ref)
        except Exception:      # never out of a session: count it, drop the frame state
            self.errors += 1
            reader.reset()

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        if self._closed:
            return
        reader = self.readers[direction]
        if reader.expected is None:
            reader.expected = offset
        try:
            reader.gap(offset + length - reader.expected if offset + length > reader.expected
                       else 0, ts_ns)
        except Exception:
            self.errors += 1
            reader.reset()

    def held_bytes(self) -> int:
        """Incomplete frame headers, resync buffers and the payload kept of messages being
        assembled or waiting for their reply (pings, a close)."""
        if self._closed:
            return 0
        messages = [*self.pings[0], *self.pings[1], self.close_sent]
        held = 0
        for reader in self.readers:
            held += len(reader.hbuf) + len(reader.rbuf)
            messages.append(reader.msg)
        return held + sum(len(msg.kept) for msg in messages if msg is not None)

    def on_close(self, ts_ns: int) -> None:
        if self._closed:
            return
        for reader in self.readers:
            try:
                reader.close()
            except Exception:
                self.errors += 1
        self._closed = True
        if self.close_sent is not None:
            close, self.close_sent = self.close_sent, None
            self._emit(close, None, "no close reply")
        pending = sorted([*self.pings[0], *self.pings[1]], key=lambda m: m.ts)
        self.pings[0].clear()
        self.pings[1].clear()
        for ping in pending:
            self._emit(ping, None, "no pong")

    # -- called by the readers --

    def _data(self, msg: _Message) -> None:
        self._emit(msg, None, None)

    def _control(self, frame: _Message) -> None:
        side = 0 if frame.client else 1
        if frame.opcode == 8:
            waiting = self.close_sent
            if waiting is not None and waiting.client != frame.client:
                self.close_sent = None
                self._emit(waiting, frame, None)
                return
            if waiting is not None:
                self._emit(waiting, None, "no close reply")
            self.close_sent = frame
        elif frame.opcode == 9:
            self.pings[side].append(frame)
        else:     # a pong answers the oldest ping from the other side
            waiting_pings = self.pings[1 - side]
            if waiting_pings:
                self._emit(waiting_pings.popleft(), frame, None)
            else:
                self._emit(frame, None, None)

    def _fields(self, msg: _Message) -> dict[str, Any]:
        opcode = OPCODES.get(msg.opcode)     # (no default: its str() was made on every call)
        if opcode is None:
            opcode = str(msg.opcode)
        fields: dict[str, Any] = {
            "direction": "client" if msg.client else "server",
            "opcode": opcode,
            "length": msg.inflated if msg.compressed and not msg.inflate_error else msg.length,
            "fin": msg.fin or msg.opcode >= 8,
            "frames": msg.frames,
        }
        if msg.compressed:
            fields["compressed"] = True
            fields["wire_length"] = msg.length
        if msg.opcode == 1 or (msg.opcode == 0 and msg.kept and not self.body_limit):
            if not msg.inflate_error:
                kept = msg.kept
                # (up to TEXT_LIMIT bytes decode to at most as many characters: no cut, no copy)
                fields["text"] = kept.decode("utf-8", "replace") if len(kept) <= TEXT_LIMIT \
                    else bytes(kept[:_TEXT_BYTES]).decode("utf-8", "replace")[:TEXT_LIMIT]
        elif msg.opcode == 8:
            payload = bytes(msg.kept)
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            fields["code"] = code
            fields["reason"] = payload[2:].decode("utf-8", "replace")[:TEXT_LIMIT]
            if len(payload) == 1:
                msg.notes.append("malformed: close payload of 1 byte")
        elif msg.opcode in (9, 10) and msg.kept:
            fields["data"] = bytes(msg.kept).decode("utf-8", "replace")[:TEXT_LIMIT]
        return fields

    @staticmethod
    def _label(msg: _Message, fields: dict[str, Any]) -> str:
        opcode: str = fields["opcode"]
        if msg.opcode < 8:
            length: int = fields["length"]
            key = (length << 5) | (msg.opcode << 1) | (1 if msg.client else 0)
            label = _LABELS.get(key)
            if label is None:
                label = f"{opcode} {length} bytes →" if msg.client else f"← {opcode} {length} bytes"
                if len(_LABELS) >= _LABEL_CACHE:
                    _LABELS.clear()
                _LABELS[key] = label
            return label
        if msg.opcode == 8:
            text = f"close {fields['code']}" if fields["code"] is not None else "close"
        else:
            text = opcode
        return f"{text} →" if msg.client else f"← {text}"

    def _emit(self, msg: _Message, reply: _Message | None, missing: str | None) -> None:
        request = self._fields(msg)
        notes = list(msg.notes)
        if msg.inflate_error:
            notes.append(msg.inflate_error)
        reader_client, reader_server = self.readers
        client_offset = msg.start if msg.client else (reader_client.expected or 0)
        server_offset = None if msg.client else msg.start
        ex = Exchange(
            protocol="websocket", start_ns=msg.ts, end_ns=None,
            summary=self._label(msg, request), request=request, response=None,
            status=request["code"] if msg.opcode == 8 else None,     # (only a close has one)
            request_size=msg.wire, complete=msg.complete,
            first_ref=msg.ref, last_ref=msg.end_ref, client_offset=client_offset,
            server_offset=server_offset, notes=notes)
        if reply is not None:
            response = self._fields(reply)
            ex.response = response
            ex.end_ns = reply.end_ts
            ex.last_ref = reply.end_ref
            ex.response_size = reply.wire
            ex.complete = msg.complete and reply.complete
            notes += reply.notes
            if reply.client:
                ex.client_offset = reply.start
            else:
                ex.server_offset = reply.start
        elif missing is not None:
            ex.complete = False
            notes.append(missing)
        if self.body_limit > 0 and msg.opcode < 8:
            ex.request_body = bytes(msg.kept[:self.body_limit])
        self.emit(ex)


class WebSocketDissector:
    """Not found by content: sessions are made by the HTTP/1 upgrade hook (upgrades.py)."""

    name = "websocket"
    transports = frozenset({"tcp"})
    ports: frozenset[int] = frozenset()
    client_first = False        # only reached by an HTTP upgrade, never by detection

    def detect(self, client: bytes, server: bytes) -> Detect:
        return Detect.NO

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0,
                start_offsets: tuple[int, int] | None = None) -> WebSocketSession:
        return WebSocketSession(flow, emit, body_limit, start_offsets)
