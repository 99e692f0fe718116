"""PostgreSQL frontend/backend protocol 3.0: startup, simple and extended queries, errors.

Framing: every message is a type byte + int32 length (which counts itself), except the
client's first ones (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest: int32 length +
int32 code) and the server's one-byte answer to SSLRequest/GSSENCRequest ('S'/'G' = TLS or
GSS encryption follows, 'N' = plaintext goes on). Each direction has a _Reader that cuts its
stream into messages incrementally: it keeps only the bytes of a message not complete yet,
and skips by length what it does not need (DataRow and CopyData contents beyond what the
detail view keeps), so a large result costs no copy.

Pairing: the backend answers frontend messages strictly in order. Every frontend message that
expects an answer becomes an op in a FIFO queue (Query, Parse, Bind, Describe, Execute, Close,
Sync, FunctionCall, the startup); each backend message either belongs to the op at the head
of the queue or ends it. Ops belong to units, and a unit is one entry:
- the startup (StartupMessage, the authentication exchange, up to the first ReadyForQuery),
- a simple Query (its results up to ReadyForQuery),
- an extended-protocol group: the Parse/Bind/Describe messages up to and including an
  Execute (one entry per Execute; a group that ends at Sync without an Execute is an entry
  too). The statement text comes from the Parse of the statement that the executed portal
  was bound to, remembered per statement name, so prepared statements executed many times
  show their text. After an ErrorResponse the backend ignores messages up to Sync: the ops
  up to there end without an answer, their units noted as not executed.
Asynchronous messages (NoticeResponse, ParameterStatus, NotificationResponse) may come at
any time: notices go to the unit being answered, notifications are entries of their own.

Losses: a gap inside a skipped message body only shortens the skip (the entry is marked
incomplete); elsewhere the reader resyncs by looking for a plausible run of messages. A lost
client message leaves a stand-in op that takes the backend's answers up to the next
ReadyForQuery ("request lost in a gap"); after a lost backend message its answers are
dropped up to the next ReadyForQuery, which ends the ops waiting for it (incomplete). Backend
messages nobody waits for (the capture started after the request) are entries with the note
"request not captured". A capture that starts mid-connection begins with typed messages.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, Final, cast

from mypy_extensions import i64

from worker.dissectors.base import Detect, Direction, Emit, Exchange, FlowInfo, db_status
from worker.dissectors.stream import (Frame, LengthPrefixedReader, Span, TwoWaySession,
                                      chunk_at)
from worker.packet import PacketRef

QUERY_LIMIT: Final = 1000          # request.query is capped at this many characters
SUMMARY_LIMIT: Final = 200
KEEP_LIMIT: Final = 64 * 1024      # message bytes kept for parsing; the rest is skipped
MAX_LEN: Final = 1 << 30           # a longer message is not PostgreSQL (resync)
RESYNC_LIMIT: Final = 64 * 1024    # a resync candidate must prove itself within this many bytes
NAMES_LIMIT: Final = 4096          # remembered statement and portal names
COLUMNS_LIMIT: Final = 64
NOTICES_LIMIT: Final = 16
DETECT_SCAN: Final = 8192          # detection looks for a message start in this many first bytes
NUL_SCAN: Final = 32               # bytes _nul looks at natively before a find

SSL_CODE: Final = 80877103
GSS_CODE: Final = 80877104
CANCEL_CODE: Final = 80877102

FRONTEND: Final = frozenset(b"QPBDESHXCpdcfF")
BACKEND: Final = frozenset(b"RKSZTDCEINA123nstvGHWdcV")

AUTH_METHODS: Final = {0: "trust", 2: "kerberos_v5", 3: "password", 5: "md5", 6: "scm_credentials",
                7: "gss", 9: "sspi", 10: "sasl"}
ERROR_FIELDS: Final = {"S": "severity", "V": "severity", "C": "code", "M": "message", "D": "detail",
                "H": "hint", "P": "position", "W": "where", "s": "schema", "t": "table",
                "c": "column", "n": "constraint", "F": "file", "L": "line", "R": "routine",
                "q": "internal_query", "p": "internal_position", "d": "data_type"}

# 1 at the index of each type byte of the direction: a native lookup in the fast path.
FRONTEND_TYPES: Final = bytes(int(i in FRONTEND) for i in range(256))
BACKEND_TYPES: Final = bytes(int(i in BACKEND) for i in range(256))
_CANDIDATE: Final = {True: re.compile(b"[" + re.escape(bytes(sorted(FRONTEND))) + b"]\x00"),
              False: re.compile(b"[" + re.escape(bytes(sorted(BACKEND))) + b"]\x00")}


def _u32(b: bytes | bytearray, i: int) -> int:
    return int.from_bytes(b[i:i + 4], "big")


def _i32(b: bytes | bytearray, i: int) -> int:
    return int.from_bytes(b[i:i + 4], "big", signed=True)


def _u16(b: bytes, i: int) -> int:
    if 0 <= i <= len(b) - 2:     # two indexings of a typed bytes (native): no slice, no call
        return (b[i] << 8) | b[i + 1]
    return int.from_bytes(b[i:i + 2], "big")


def _nul(b: bytes, i: int) -> int:
    """The index of the first NUL at or after b[i] (i >= 0), or -1. Names and tags end within
    a few bytes: looked at natively, the index an i64 (a find is a generic method call whose
    arguments are parsed, ~1,000 instructions); past NUL_SCAN bytes, find."""
    n: i64 = len(b)
    j: i64 = i
    stop: i64 = j + NUL_SCAN
    if stop > n:
        stop = n
    while j < stop:
        if b[j] == 0:
            return j
        j += 1
    return b.find(b"\0", stop) if stop < n else -1


def _cstr(b: bytes, i: int) -> tuple[str, int]:
    """A NUL-terminated string at i -> (text, index after the NUL); ValueError if none."""
    end = _nul(b, i) if i >= 0 else b.index(b"\0", i)
    if end < 0:
        raise ValueError("a string without its NUL")
    return b[i:end].decode("utf-8", "replace"), end + 1


def _tag(body: bytes) -> str:
    """A CommandComplete's tag: its C string (_cstr's), or all of it as ASCII without a NUL.
    Not `b"\\0" in body` first (a bytes `in` bytes tries the operand as an int: a TypeError
    raised and cleared each time, ~4,000 instructions)."""
    nul = _nul(body, 0)
    return body.decode("ascii", "replace") if nul < 0 else body[:nul].decode("utf-8", "replace")


def _short(text: str, limit: int = SUMMARY_LIMIT) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _one_line(text: str) -> str:
    """" ".join(text.split()): the words, one space between them. Without the list of words
    when the only whitespace is ASCII spaces (isprintable() is False for every other
    whitespace character), the common case."""
    if not text.isprintable():
        return " ".join(text.split())
    # Printable: its only whitespace is ASCII spaces, whose runs (mysqlslap's "id =  '1'")
    # replace makes single at C speed (split and join made a list of every word).
    while "  " in text:
        text = text.replace("  ", " ")
    if text.startswith(" ") or text.endswith(" "):
        return text.strip(" ")
    return text


# -- content checks (detection and resync) --------------------------------------------------

def _exact_values(body: bytes, i: int, count: int) -> int:
    """Walks `count` int32-length-prefixed values from i; returns the end index or -1."""
    n = len(body)
    for _ in range(count):
        if i + 4 > n:
            return -1
        size = _i32(body, i)
        i += 4
        if size > 0:
            i += size
        elif size < -1:
            return -1
    return i if i <= n else -1


def _strength(t: int, body: bytes, frontend: bool) -> int:
    """How well a complete message body fits its type: 0 not at all, 1 plausibly, 2 surely."""
    n = len(body)
    try:
        if frontend:
            if t in b"SHXc":                          # Sync Flush Terminate CopyDone
                return 2 if n == 0 else 0
            if t == 0x51:                              # Q
                return 2 if n and body.index(b"\0") == n - 1 else 0
            if t == 0x50:                              # P
                _, i = _cstr(body, 0)
                _, i = _cstr(body, i)
                return 2 if i + 2 + 4 * _u16(body, i) == n else 0
            if t == 0x42:                              # B
                _, i = _cstr(body, 0)
                _, i = _cstr(body, i)
                i += 2 + 2 * _u16(body, i)
                count = _u16(body, i)
                i = _exact_values(body, i + 2, count)
                if i < 0:
                    return 0
                return 2 if i + 2 + 2 * _u16(body, i) == n else 0
            if t in b"DC":                             # Describe / Close
                return 2 if n >= 2 and body[0] in b"SP" and body.index(b"\0", 1) == n - 1 else 0
            if t == 0x45:                              # E
                _, i = _cstr(body, 0)
                return 2 if i + 4 == n else 0
            return 1                                   # p d f F
        if t in b"123nIc":
            return 2 if n == 0 else 0
        if t == 0x5A:                                  # Z
            return 2 if n == 1 and body[0] in b"IET" else 0
        if t == 0x43:                                  # CommandComplete
            return 2 if n >= 2 and 0x41 <= body[0] <= 0x5A and body.index(b"\0") == n - 1 else 0
        if t == 0x44:                                  # DataRow
            return 2 if n >= 2 and _exact_values(body, 2, _u16(body, 0)) == n else 0
        if t == 0x54:                                  # RowDescription
            i = 2
            for _ in range(_u16(body, 0)):
                i = body.index(b"\0", i) + 19
            return 2 if i == n else 0
        if t in b"EN":
            if n < 2 or body[-1] != 0 or chr(body[0]) not in ERROR_FIELDS:
                return 0
            return 2
        if t == 0x53:                                  # ParameterStatus
            _, i = _cstr(body, 0)
            _, i = _cstr(body, i)
            return 2 if i == n else 0
        if t == 0x4B:                                  # BackendKeyData
            return 2 if n == 8 else 0
        if t == 0x52:                                  # Authentication
            return 2 if n >= 4 and _u32(body, 0) in (0, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12) else 0
        if t == 0x74:                                  # ParameterDescription
            return 2 if n >= 2 and 2 + 4 * _u16(body, 0) == n else 0
        return 1
    except (ValueError, IndexError):
        return 0


def _run_state(data: bytes, start: int, frontend: bool, need: int) -> Detect:
    """Whether data[start:] begins a run of well-formed typed messages: MATCH after `need`
    sure messages (or a sure one ending exactly at the end of data), NO at the first one
    that does not fit, MORE when data ends before that is known."""
    types = FRONTEND if frontend else BACKEND
    end = len(data)
    i, sure = start, 0
    while True:
        if end - i < 5:
            if i == end and sure:
                return Detect.MATCH
            if i < end and data[i] not in types:
                return Detect.NO
            return Detect.MORE
        t = data[i]
        length = _u32(data, i + 1)
        if t not in types or length < 4 or length > MAX_LEN:
            return Detect.NO
        if i + 1 + length > end:
            return Detect.MATCH if sure else Detect.MORE
        s = _strength(t, bytes(data[i + 5:i + 1 + length]), frontend)
        if s == 0:
            return Detect.NO
        sure += s == 2
        i += 1 + length
        if sure >= need:
            return Detect.MATCH


def _untyped_state(data: bytes) -> Detect:
    """The client's first message: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest."""
    if len(data) < 8:
        if len(data) >= 4 and not 8 <= _u32(data, 0) <= 10000:
            return Detect.NO
        return Detect.MORE if not data or data[0] == 0 else Detect.NO
    length, code = _u32(data, 0), _u32(data, 4)
    if (length == 8 and code in (SSL_CODE, GSS_CODE)) or (length == 16 and code == CANCEL_CODE):
        return Detect.MATCH
    if code >> 16 == 3 and 8 < length <= 10000:
        if len(data) < length:
            return Detect.MORE
        return Detect.MATCH if _startup_parameters(data[8:length]) else Detect.NO
    return Detect.NO


def _startup_parameters(body: bytes) -> bool:
    """A StartupMessage's body: printable name/value pairs, each NUL-terminated, then a NUL,
    with `user` among the names (it is required). A Kafka Metadata v0 request begins with the
    same 8 bytes as a startup of protocol 3.0, but not with this."""
    if not body.endswith(b"\0\0") and body != b"\0":
        return False
    fields = body[:-2].split(b"\0") if len(body) > 1 else []
    if len(fields) % 2 or any(c < 0x20 for f in fields for c in f):
        return False
    return b"user" in fields[0::2]


def _scan(data: bytes, frontend: bool) -> Detect:
    """A run at the start (one sure message), or at a later candidate (two)."""
    first = _run_state(data, 0, frontend, 1)
    if first is not Detect.NO:
        return first
    more = False
    for m in _CANDIDATE[frontend].finditer(data, 1, min(len(data), DETECT_SCAN)):
        state = _run_state(data, m.start(), frontend, 2)
        if state is Detect.MATCH:
            return state
        more = more or state is Detect.MORE
    return Detect.MORE if more else Detect.NO



def detect(client: bytes, server: bytes) -> Detect:
    c = s = None
    if client:
        c = _untyped_state(client)
        if c is Detect.NO:
            c = _scan(client, True)
    if server:
        s = _scan(server, False)
    if c is Detect.MATCH or s is Detect.MATCH:
        return Detect.MATCH
    if (c is Detect.NO or c is None) and (s is Detect.NO or s is None):
        return Detect.NO
    return Detect.MORE


# -- per direction framing -----------------------------------------------------------------

class _Reader(LengthPrefixedReader["PgSession"]):
    """Cuts one direction into messages; the SKIP state, gaps and marks are the base's."""

    __slots__ = ("frontend", "resyncing", "untyped")

    def __init__(self, session: PgSession, direction: Direction) -> None:
        super().__init__(session, direction)
        self.frontend = direction == Direction.CLIENT_TO_SERVER
        self.resyncing = False
        self.untyped = self.frontend        # the next client message may be untyped

    def parse(self, buf: bytes | bytearray, base: int, ts: int, ref: PacketRef) -> int:
        n = len(buf)
        pos = 0
        frontend = self.frontend
        sink = self.sink
        types = FRONTEND if frontend else BACKEND
        while pos < n and not self.dead:
            if self.resyncing:
                p, more = self._find(buf, pos)
                if p < 0:
                    # keep a tail that may hold the start of a candidate
                    keep = max(pos, n - 5)
                    self.skipped += keep - pos
                    pos = keep
                    break
                if more:                     # a candidate that needs more bytes
                    self.skipped += p - pos
                    pos = p
                    break
                self.skipped += p - pos
                pos = p
                self.resyncing = False
                continue
            if not frontend and sink.expects_byte():
                start = base + pos
                _, byte_ts, byte_ref = self.where(start)
                sink.answer_byte(buf[pos], self.span(start, start + 1, byte_ts, byte_ref))
                pos += 1
                continue
            if self.untyped and frontend:
                if n - pos < 8:
                    break
                state = _untyped_state(bytes(buf[pos:pos + 8]))
                length = _u32(buf, pos)
                if state is Detect.NO and not (buf[pos] == 0 and 8 <= length <= 10000):
                    self.untyped = False
                    continue
                if n - pos < length:
                    break
                body = bytes(buf[pos + 4:pos + length])
                self.untyped = _u32(body, 0) in (SSL_CODE, GSS_CODE)
                self.frame(0, body, base + pos, base + pos + length, ts, ref)
                pos += length
                continue
            if n - pos < 5:
                break
            whole = self._whole(buf, pos, n, base, ts, ref)
            if whole != pos:
                pos = whole
                continue
            t = buf[pos]
            length = _u32(buf, pos + 1)
            if t not in types or length < 4 or length > MAX_LEN:
                self._malformed(base + pos)
                pos += 1
                continue
            total = 1 + length
            keep = sink.keep(self.direction, t, length - 4)
            if n - pos >= total:
                body = bytes(buf[pos + 5:pos + 5 + min(keep, length - 4)])
                self.frame(t, body, base + pos, base + pos + total, ts, ref)
                pos += total
            elif keep < length - 4:
                if n - pos < 5 + keep:
                    break
                self.skip(t, bytes(buf[pos + 5:pos + 5 + keep]), base + pos, total)
                pos = n
            else:
                break
        return pos

    def _whole(self, buf: bytes | bytearray, pos: int, n: int, base: int, ts: int,
               ref: PacketRef) -> int:
        """The fast path: typed messages that lie whole in buf[pos:], cut and handed to the
        session one after another exactly as the loop of `parse` would. Returns where it
        stopped (a message cut by the end of buf, a bad header, the server's one-byte answer
        due, the reader closed, a RowDescription that does not parse): `parse` goes on from
        there."""
        if isinstance(buf, bytes):
            return self._whole_bytes(buf, pos, n, base, ts, ref)
        # Bytes held from an earlier chunk: indexing a bytearray is a generic call per byte
        # (mypyc boxes the index and the byte), a typed bytes' is native; so the fast path
        # reads a copy, made only when a whole message is there (not for each chunk of a
        # long one).
        if n - pos < 5 or n - pos < 1 + _u32(buf, pos + 1):
            return pos
        return pos + self._whole_bytes(bytes(buf[pos:]), 0, n - pos, base + pos, ts, ref)

    def _whole_bytes(self, data: bytes, pos: int, n: int, base: int, ts: int,
                     ref: PacketRef) -> int:
        frontend = self.frontend
        types = FRONTEND_TYPES if frontend else BACKEND_TYPES
        # sink.on_message called on it, not bound to a local: compiled, that is a direct call,
        # a bound method goes through the argument-parsing wrapper.
        sink = self.sink
        ops = None if frontend else sink.ops
        # PgSession.keep, inline: a DataRow's body only for the detail view.
        data_rows = 0 if frontend else 0x44
        row_limit = max(0, sink.body_limit)
        chunk_start = self.marks[-1][0]       # messages from here on began in this chunk
        while n - pos >= 5:
            t = data[pos]
            length = (data[pos + 1] << 24) | (data[pos + 2] << 16) | (data[pos + 3] << 8) \
                | data[pos + 4]
            total = 1 + length
            if n - pos < total or not types[t] or length < 4 or length > MAX_LEN or \
                    (ops and ops[0][0] == SSL):
                break
            size = length - 4
            start = base + pos
            if ops and not row_limit and not sink.server_lost:
                kind, unit = ops[0]
                if kind == QUERY and (t == 0x44 or t == 0x43 or t == 0x5A or t == 0x54) \
                        or kind == EXECUTE and t == 0x44:
                    # The row description, rows, tag and ReadyForQuery of a simple query (rows
                    # of a portal): what on_message -> _backend does with them, without the
                    # calls and the Span (the detail view's rows take that path).
                    names: list[str] | None = None
                    if t == 0x54:
                        try:
                            names = _row_names(data[pos + 5:pos + 5 + min(size, KEEP_LIMIT)])
                        except (ValueError, IndexError):
                            break            # on_message notes it malformed: parse's loop
                    if unit.resp_start is None:
                        if start >= chunk_start:
                            first_ts, first_ref = ts, ref
                        else:
                            _, first_ts, first_ref = chunk_at(self.marks, start)
                        unit.resp_start, unit.resp_ts, unit.resp_ref = start, first_ts, first_ref
                    unit.resp_end, unit.end_ts, unit.end_ref = start + total, ts, ref
                    if t == 0x44:
                        unit.rows += 1
                    elif t == 0x43:
                        unit.tags.append(_tag(data[pos + 5:pos + 5 + min(size, KEEP_LIMIT)]))
                    elif t == 0x54:
                        unit.columns = names
                        sink.flush_if_due()
                    else:                                        # ReadyForQuery: the end
                        unit.extra["transaction_status"] = chr(data[pos + 5]) if size else ""
                        ops.popleft()
                        unit.ops -= 1
                        sink.flush_if_due()
                    pos += total
                    if self.dead:
                        break
                    continue
            if t == data_rows:
                keep = min(size, row_limit)
            elif t == 0x64:
                keep = 0
            else:
                keep = min(size, KEEP_LIMIT)
            if start >= chunk_start:
                first_ts, first_ref = ts, ref
            else:
                _, first_ts, first_ref = chunk_at(self.marks, start)
            body = data[pos + 5:pos + 5 + min(keep, size)]
            if t == 0x51 and frontend:
                # A simple Query: what on_message -> _frontend does with it, without the Span.
                sink.query(body, start, start + total, first_ts, first_ref)
                sink.flush_if_due()
            else:
                sink.on_message(frontend, t, body,
                                Span(start, start + total, first_ts, first_ref, ts, ref))
            pos += total
            if self.dead:
                break
        return pos

    def _find(self, buf: bytes | bytearray, pos: int) -> tuple[int, bool]:
        """The next plausible message start at or after pos, and whether it still needs
        more bytes to be sure; (-1, False) when none can start before the last 4 bytes."""
        data = bytes(buf)
        n = len(data)
        for m in _CANDIDATE[self.frontend].finditer(data, pos):
            p = m.start()
            state = _run_state(data, p, self.frontend, 1)
            if state is Detect.MATCH:
                return p, False
            if state is Detect.MORE and n - p < RESYNC_LIMIT:
                return p, True
        return -1, False

    def _malformed(self, offset: int) -> None:
        self.resyncing = True
        self.skipped += 1
        _, ts, ref = self.where(offset)
        self.sink.on_lost(self.direction, "malformed", offset, offset + 1, ts, ref)

    def lose(self, offset: int, end: int, ts: int) -> None:
        if not self.resyncing:
            ts, ref = self.last_mark(0)
            self.sink.on_lost(self.direction, "gap", offset, end, ts, ref)
        self.resyncing = True
        self.untyped = False


# -- units and ops -------------------------------------------------------------------------

STARTUP: Final = 0
SSL: Final = 1
QUERY: Final = 2
PARSE: Final = 3
BIND: Final = 4
DESCRIBE: Final = 5
EXECUTE: Final = 6
CLOSE: Final = 7
OP_SYNC: Final = 8
FUNCTION: Final = 9
LOST: Final = 10

_ACCEPTS: Final = {
    STARTUP: frozenset(b"RSKEv"), QUERY: frozenset(b"TDCIEGHWdc"), FUNCTION: frozenset(b"VE"),
    PARSE: frozenset(b"1E"), BIND: frozenset(b"2E"), DESCRIBE: frozenset(b"tTnE"),
    EXECUTE: frozenset(b"DCIsEGHWdc"), CLOSE: frozenset(b"3E"), OP_SYNC: frozenset(),
    LOST: frozenset(BACKEND), SSL: frozenset(),
}
_ENDS_AT_Z: Final = frozenset({STARTUP, QUERY, FUNCTION, OP_SYNC, LOST})


class _Unit:
    __slots__ = ("kind", "request", "start", "ts", "ref", "req_end", "resp_start", "resp_ts",
                 "resp_ref", "resp_end", "end_ts", "end_ref", "ops", "closed", "notes",
                 "complete", "rows", "tags", "error", "columns", "notices", "extra", "body",
                 "summary", "executed", "emitted")

    def __init__(self, kind: str, start: int, ts: int, ref: PacketRef,
                 request: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.request: dict[str, Any] = {} if request is None else request
        self.start = self.req_end = start
        self.ts, self.ref = ts, ref
        self.resp_start: int | None = None
        self.resp_ts = self.resp_end = 0
        self.resp_ref: PacketRef = (0, 0)
        self.end_ts: int | None = None
        self.end_ref = ref
        self.ops = 0
        self.closed = True
        self.notes: list[str] = []
        self.complete = True
        self.rows = 0
        self.tags: list[str] = []
        self.error: dict[str, str] | None = None
        self.columns: list[str] | None = None
        self.notices: list[str] = []
        self.extra: dict[str, Any] = {}
        self.body: bytearray | None = None
        self.summary = ""
        self.executed = False
        self.emitted = False


def _error_fields(body: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    i, n = 0, len(body)
    while i < n and body[i]:
        key = chr(body[i])
        end = body.find(b"\0", i + 1)
        if end < 0:
            end = n
        name = ERROR_FIELDS.get(key)
        if name and not (key == "S" and "severity" in fields):
            fields[name] = body[i + 1:end].decode("utf-8", "replace")
        i = end + 1
    return fields


def _row_names(body: bytes) -> list[str]:
    """A RowDescription's column names; ValueError or IndexError if it does not parse."""
    names = []
    i = 2
    for _ in range(_u16(body, 0)):
        name, i = _cstr(body, i)
        i += 18
        names.append(name)
    return names


def _tag_rows(tag: str) -> int | None:
    if tag.startswith("SELECT ") and tag[7:].isdigit():     # the commonest, without split
        return int(tag[7:])
    parts = tag.split()
    if len(parts) >= 2 and parts[0] in ("SELECT", "INSERT", "UPDATE", "DELETE", "COPY", "FETCH",
                                        "MOVE", "MERGE") and parts[-1].isdigit():
        return int(parts[-1])
    return None


class PgSession(TwoWaySession[_Reader]):
    def __init__(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> None:
        super().__init__(_Reader(self, Direction.CLIENT_TO_SERVER),
                         _Reader(self, Direction.SERVER_TO_CLIENT))
        self.flow = flow
        self.emit = emit
        self.body_limit = body_limit
        self.units: deque[_Unit] = deque()       # in request order, not emitted yet
        self.ops: deque[tuple[int, _Unit]] = deque()
        self.group: _Unit | None = None          # the extended-protocol group being sent
        self.statements: dict[str, str] = {}
        self.portals: dict[str, str] = {}
        self.orphan: _Unit | None = None         # backend answers to a request not seen
        self.discard_until_sync = False          # the backend skips to Sync after an error
        self.server_lost = False                 # drop backend messages up to ReadyForQuery
        self.startup: _Unit | None = None
        self.encryption: list[str] = []          # refused SSL/GSS requests before startup
        self.refused: list[_Unit] = []
        self.nobody = _Unit("sync", 0, 0, (0, 0))   # the owner of Sync ops: never emitted

    # -- the Session interface (on_data is TwoWaySession's) --

    def kept_bytes(self) -> int:
        units = list(self.units)
        if self.orphan is not None:
            units.append(self.orphan)
        return sum(len(unit.body) for unit in units if unit.body is not None)

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        if not self.dead:
            super().on_gap(direction, offset, length, ts_ns)
            self._flush()

    def on_close(self, ts_ns: int) -> None:
        if self.dead:
            return
        self.dead = True
        for reader in self.readers:
            reader.finish(ts_ns)
        self._finish_orphan()
        for unit in self.units:
            if unit.ops:
                unit.ops = 0
                unit.complete = False
                unit.notes.append("no response" if unit.resp_start is None
                                  else "response cut by the end of the connection")
            unit.closed = True
        self.ops.clear()
        self._flush()

    # -- what the readers call (worker.dissectors.stream.FrameSink, and the SSL answer) --

    def keep(self, direction: Direction, t: int, size: int) -> int:
        # _Reader._whole has this inline: change both.
        if t == 0x44 and direction == Direction.SERVER_TO_CLIENT:   # DataRow
            return min(size, self.body_limit) if self.body_limit > 0 else 0
        if t == 0x64:                           # CopyData
            return 0
        return min(size, KEEP_LIMIT)

    def expects_byte(self) -> bool:
        """The server's next byte is its one-byte answer to SSLRequest/GSSENCRequest."""
        return bool(self.ops) and self.ops[0][0] == SSL

    def answer_byte(self, byte: int, span: Span) -> None:
        _, unit = self.ops.popleft()
        unit.ops -= 1
        self._answer(unit, span)
        what = unit.request.get("kind", "ssl")
        if byte in b"SG":
            unit.extra["encryption"] = "accepted"
            unit.summary = f"{'SSLRequest' if what == 'ssl' else 'GSSENCRequest'}: " \
                           f"{'TLS' if what == 'ssl' else 'GSS encryption'} follows"
            unit.notes.append("encrypted from here on: not dissected")
            self._flush()
            self._end_all()
            return
        if byte == 0x4E:                        # 'N': plaintext goes on
            self.encryption.append(f"{what} refused")
            unit.extra["encryption"] = "refused"
            unit.summary += " refused"
            unit.closed = False                 # folded into the startup entry if one follows
            self.refused.append(unit)
        else:
            unit.notes.append(f"malformed: answer byte {byte:#04x} to {what} request")
            unit.extra["encryption"] = "unknown"
        self._flush()

    def _end_all(self) -> None:
        self.dead = True
        self.client.close()
        self.server.close()
        for unit in self.units:
            if unit.ops:
                unit.ops = 0
                unit.complete = False
                unit.notes.append("no response")
            unit.closed = True
        self.ops.clear()
        self._flush()

    def on_lost(self, direction: Direction, why: str, offset: int, end: int, ts: int,
                ref: PacketRef) -> None:
        """A message start was lost in a gap, or garbage stands where one should start."""
        initial = why == "malformed" and offset == 0
        if direction == Direction.CLIENT_TO_SERVER:
            if self.group is not None:
                self.group.complete = False
                self.group.notes.append("request cut by a gap" if why == "gap"
                                        else "malformed request")
                self._close_group()
            unit = _Unit("unknown", offset, ts, ref)
            unit.notes.append("request not captured" if initial
                              else "request lost in a gap" if why == "gap"
                              else "request could not be parsed")
            unit.complete = False
            self._push(LOST, unit)
            self.units.append(unit)
        else:
            self._finish_orphan()
            if self.ops and not initial:
                head = self.ops[0][1]
                head.complete = False
                head.notes.append("response lost in a gap" if why == "gap"
                                  else "malformed response")
            self.server_lost = not initial

    def _push(self, kind: int, unit: _Unit) -> None:
        unit.ops += 1
        self.ops.append((kind, unit))

    def _close_group(self) -> None:
        group = self.group
        if group is not None:
            group.closed = True
            self.group = None

    # -- messages --

    def on_frame(self, direction: Direction, frame: Frame) -> None:
        self.on_message(direction == Direction.CLIENT_TO_SERVER, frame.kind, frame.body,
                        frame.span, frame.cut)

    def on_message(self, frontend: bool, t: int, body: bytes, span: Span,
                   cut: bool = False) -> None:
        """One message (on_frame's, and the readers' fast path's without a Frame)."""
        try:
            if frontend:
                self._frontend(t, body, span)
            else:
                self._backend(t, body, span, cut)
        except (ValueError, IndexError):
            unit = self.ops[0][1] if self.ops and not frontend else self.group
            if unit is not None:
                unit.notes.append(f"malformed: {'frontend' if frontend else 'backend'} "
                                  f"message {chr(t)!r} of {span.size} bytes")
        self.flush_if_due()

    def flush_if_due(self) -> None:
        """_flush, called only when it has something to do (else it would stop at once)."""
        units = self.units
        if units and not units[0].ops and units[0].closed:
            self._flush()

    def _frontend(self, t: int, body: bytes, span: Span) -> None:
        if t == 0:
            self._untyped(body, span)
            return
        start, ts, ref, end = span.start, span.first_ts, span.first_ref, span.end
        if t == 0x51:                                         # Query
            self.query(body, start, end, ts, ref)
            return
        if t == 0x46:                                         # FunctionCall
            unit = _Unit("function", start, ts, ref)
            unit.request = {"kind": "function", "function_oid": _u32(body, 0)}
            unit.summary = f"function call {_u32(body, 0)}"
            unit.req_end = end
            self._add(unit, FUNCTION)
            return
        if t == 0x53:                                         # Sync
            self._close_group()
            self.discard_until_sync = False
            self.ops.append((OP_SYNC, self.nobody))
            return
        if t == 0x58:                                         # Terminate
            self._close_group()
            return
        if t == 0x48:                                         # Flush
            return
        if t == 0x70:                                         # password / SASL / GSS
            startup = self.startup
            if startup is not None and not startup.emitted:
                startup.req_end = end
            return
        if t in b"dcf":                                       # copy from the client
            last = self.units[-1] if self.units else None
            if last is not None:
                last.req_end = end
            return
        # Parse, Bind, Describe, Execute, Close: the extended protocol
        group = self.group
        if group is None:
            group = self.group = _Unit("extended", start, ts, ref)
            group.request = {"kind": "extended", "query": "", "statement": "", "params": 0,
                             "execute": False}
            group.closed = False
            self.units.append(group)
        group.req_end = end
        request = group.request
        if t == 0x50:                                         # Parse
            name, i = _cstr(body, 0)
            query, i = _cstr(body, i)
            self._remember(self.statements, name, query)
            if not request["query"]:
                request["query"] = query[:QUERY_LIMIT]
                request["statement"] = name
                group.summary = _short(query)
            self._op(PARSE, group)
        elif t == 0x42:                                       # Bind
            portal, i = _cstr(body, 0)
            statement, i = _cstr(body, i)
            self._remember(self.portals, portal, statement)
            i += 2 + 2 * _u16(body, i)
            count = _u16(body, i)
            request["params"] = count
            request["statement"] = statement
            if not request["query"] and statement in self.statements:
                query = self.statements[statement]
                request["query"] = query[:QUERY_LIMIT]
                group.summary = _short(query)
            if self.body_limit > 0:
                group.request["param_values"] = _values(body, i + 2, count, self.body_limit)
            self._op(BIND, group)
        elif t == 0x44:                                       # Describe
            self._op(DESCRIBE, group)
        elif t == 0x45:                                       # Execute
            portal, i = _cstr(body, 0)
            bound = self.portals.get(portal)
            if bound is not None and not request["query"]:
                request["statement"] = bound
                query = self.statements.get(bound, "")
                request["query"] = query[:QUERY_LIMIT]
                group.summary = _short(query)
            if not group.summary:
                group.summary = f"EXECUTE {request['statement'] or portal or '(unnamed)'}" \
                                " (statement not captured)"
            group.executed = True
            request["execute"] = True
            self._op(EXECUTE, group)
            self._close_group()
        elif t == 0x43:                                       # Close
            what = body[0:1]
            name, _ = _cstr(body, 1)
            (self.statements if what == b"S" else self.portals).pop(name, None)
            if not group.summary:
                group.summary = f"CLOSE {'statement' if what == b'S' else 'portal'} {name}"
            self._op(CLOSE, group)

    def query(self, body: bytes, start: int, end: int, ts: int, ref: PacketRef) -> None:
        """A simple Query (_frontend's, and the readers' fast path's without a Span)."""
        # _cstr(body, 0) when the body holds a NUL (a query is longer than _nul's native look:
        # one find; not `b"\\0" in body`, see _tag).
        nul = body.find(b"\0")
        query = (body if nul < 0 else body[:nul]).decode("utf-8", "replace")
        unit = _Unit("simple", start, ts, ref, {"kind": "simple", "query": query[:QUERY_LIMIT]})
        unit.summary = _short(query)
        unit.req_end = end
        self._add(unit, QUERY)

    def _op(self, kind: int, unit: _Unit) -> None:
        if self.discard_until_sync:     # the backend ignores it after the error
            note = "not executed: an earlier message failed"
            if note not in unit.notes:
                unit.notes.append(note)
            return
        self._push(kind, unit)

    def _add(self, unit: _Unit, kind: int) -> None:
        self._close_group()
        self.units.append(unit)
        self._push(kind, unit)

    @staticmethod
    def _remember(table: dict[str, str], key: str, value: str) -> None:
        if key not in table and len(table) >= NAMES_LIMIT:
            del table[next(iter(table))]
        table[key] = value

    def _untyped(self, body: bytes, span: Span) -> None:
        start, ts, ref, end = span.start, span.first_ts, span.first_ref, span.end
        code = _u32(body, 0)
        if code in (SSL_CODE, GSS_CODE):
            kind = "ssl" if code == SSL_CODE else "gssenc"
            unit = _Unit("encryption", start, ts, ref)
            unit.request = {"kind": kind}
            unit.summary = "SSLRequest" if kind == "ssl" else "GSSENCRequest"
            unit.req_end = end
            self._add(unit, SSL)
            return
        if code == CANCEL_CODE:
            unit = _Unit("cancel", start, ts, ref)
            pid = _u32(body, 4)
            unit.request = {"kind": "cancel", "backend_pid": pid}
            unit.summary = f"CancelRequest pid {pid}"
            unit.req_end = end
            self.units.append(unit)
            return
        params: dict[str, str] = {}
        i = 4
        while i < len(body) and body[i]:
            key, i = _cstr(body, i)
            value, i = _cstr(body, i)
            params[key] = value
        unit = _Unit("startup", start, ts, ref)
        user, database = params.get("user", ""), params.get("database", params.get("user", ""))
        unit.request = {"kind": "startup", "protocol": f"{code >> 16}.{code & 0xFFFF}",
                        "user": user, "database": database,
                        "application_name": params.get("application_name", "")}
        if self.encryption:
            unit.request["encryption"] = ", ".join(self.encryption)
            for refused in self.refused:
                refused.emitted = refused.closed = True
            self.encryption, self.refused = [], []
        if params.get("replication"):
            unit.request["replication"] = params["replication"]
        unit.summary = f"startup {user}@{database}"
        unit.extra = {"auth_method": None, "auth_result": None}
        unit.req_end = end
        self.startup = unit
        self._add(unit, STARTUP)

    def _backend(self, t: int, body: bytes, span: Span, cut: bool) -> None:
        if t == 0x44 and self.ops and not self.server_lost:
            kind, unit = self.ops[0]
            if kind == QUERY or kind == EXECUTE:
                # A DataRow of the query or portal being answered (the commonest message of a
                # result): what the general path below does for it.
                if unit.resp_start is None:
                    self._answer(unit, span)
                else:
                    unit.resp_end, unit.end_ts, unit.end_ref = span.end, span.last_ts, \
                        span.last_ref
                if cut:
                    unit.complete = False
                    unit.notes.append("gap in a response message")
                unit.rows += 1
                if self.body_limit > 0:
                    self._add_row(unit, body)
                return
        if t == 0x4E:                                        # NoticeResponse
            fields = _error_fields(body)
            noticed = self.ops[0][1] if self.ops and self.ops[0][1] is not self.nobody else (
                self.units[-1] if self.units else None)
            if noticed is not None and len(noticed.notices) < NOTICES_LIMIT:
                noticed.notices.append(f"{fields.get('severity', 'NOTICE')}: "
                                    f"{fields.get('message', '')}"[:QUERY_LIMIT])
            return
        if t == 0x41:                                        # NotificationResponse
            pid = _u32(body, 0)
            channel, i = _cstr(body, 4)
            payload, _ = _cstr(body, i)
            unit = _Unit("notification", span.start, span.first_ts, span.first_ref)
            unit.request = {"kind": "notification", "channel": channel,
                            "payload": payload[:QUERY_LIMIT], "backend_pid": pid}
            unit.summary = f"NOTIFY {channel}"
            unit.start = unit.req_end = self.client.expected   # a server push: no request
            self._answer(unit, span)
            self._emit(unit)
            return
        if t == 0x53:                                        # ParameterStatus
            if self.ops and self.ops[0][0] == STARTUP:
                name, i = _cstr(body, 0)
                if name == "server_version":
                    self.ops[0][1].extra["server_version"] = _cstr(body, i)[0]
            return
        if self.server_lost:
            if t != 0x5A:
                return
            self.server_lost = False
            while self.ops and self.ops[0][0] not in _ENDS_AT_Z:
                self._end_op(incomplete="response lost in a gap")
        op = self.ops[0] if self.ops else None
        if op is None or (t not in _ACCEPTS[op[0]] and not (t == 0x5A and op[0] in _ENDS_AT_Z)):
            if t == 0x5A and any(kind in _ENDS_AT_Z for kind, _ in self.ops):
                while self.ops[0][0] not in _ENDS_AT_Z:
                    self._end_op(incomplete="response not captured")
                op = self.ops[0]
            else:
                self._orphan_message(t, body, span)
                return
        kind, unit = op
        self._answer(unit, span)
        if cut:
            unit.complete = False
            unit.notes.append("gap in a response message")
        self._apply(unit, t, body, kind)
        if t == 0x45:                                        # ErrorResponse
            if kind == STARTUP:
                unit.extra["auth_result"] = "failed"
                self._end_op()
            elif kind in (PARSE, BIND, DESCRIBE, EXECUTE, CLOSE):
                self._end_op()
                skipped: set[int] = set()
                while self.ops and self.ops[0][0] != OP_SYNC:
                    other = self.ops[0][1]
                    if other is not unit and id(other) not in skipped:
                        skipped.add(id(other))
                        other.notes.append("not executed: an earlier message failed")
                    self._end_op()
                if not self.ops:
                    self.discard_until_sync = True
            return
        if t == 0x5A or (kind in (PARSE, BIND, CLOSE) or kind == DESCRIBE and t in b"Tn"
                         or kind == EXECUTE and t in b"CIs"):
            self._end_op()

    def _apply(self, unit: _Unit, t: int, body: bytes, kind: int) -> None:
        if t == 0x44:                                        # DataRow
            unit.rows += 1
            if self.body_limit > 0:
                self._add_row(unit, body)
        elif t == 0x43:                                      # CommandComplete
            unit.tags.append(_tag(body))
        elif t == 0x54:                                      # RowDescription
            names = _row_names(body)
            unit.columns = names
            if self.body_limit > 0:
                self._add_line(unit, "\t".join(names))
        elif t == 0x45:
            fields = _error_fields(body)
            unit.error = {"severity": fields.get("severity", ""), "code": fields.get("code", ""),
                          "message": fields.get("message", "")}
            for key in ("detail", "hint", "position", "constraint", "table"):
                if key in fields:
                    unit.error[key] = fields[key]
        elif t == 0x49:
            unit.tags.append("")
            unit.notes.append("empty query")
        elif t == 0x73:
            unit.notes.append("portal suspended: row limit reached")
        elif t == 0x52:                                      # Authentication
            code = _u32(body, 0)
            extra = unit.extra
            if code == 0:
                if extra.get("auth_method") is None:
                    extra["auth_method"] = "trust"
                extra["auth_result"] = "ok"
            elif code in AUTH_METHODS and extra.get("auth_method") is None:
                method = AUTH_METHODS[code]
                if code == 10:
                    mechanisms = [m for m in body[4:].decode("utf-8", "replace").split("\0") if m]
                    method = "sasl " + ",".join(mechanisms)
                extra["auth_method"] = method
        elif t == 0x4B:
            unit.extra["backend_pid"] = _u32(body, 0)
        elif t == 0x5A:
            unit.extra["transaction_status"] = chr(body[0]) if body else ""
        elif t == 0x74:
            unit.extra["param_types"] = _u16(body, 0)
        elif t in b"GHW":
            unit.notes.append({0x47: "copy in", 0x48: "copy out", 0x57: "copy both"}[t])

    def _add_row(self, unit: _Unit, body: bytes) -> None:
        count = _u16(body, 0)
        values = _values(body, 2, count, self.body_limit)
        self._add_line(unit, "\t".join("NULL" if v is None else v for v in values))

    def _add_line(self, unit: _Unit, line: str) -> None:
        if unit.body is None:
            unit.body = bytearray()
        room = self.body_limit - len(unit.body)
        if room > 0:
            unit.body += (line + "\n").encode()[:room]

    @staticmethod
    def _answer(unit: _Unit, span: Span) -> None:
        if unit.resp_start is None:
            unit.resp_start, unit.resp_ts, unit.resp_ref = span.start, span.first_ts, span.first_ref
        unit.resp_end = span.end
        unit.end_ts = span.last_ts
        unit.end_ref = span.last_ref

    def _end_op(self, incomplete: str = "") -> None:
        _, unit = self.ops.popleft()
        unit.ops -= 1
        if incomplete and unit is not self.nobody:
            unit.complete = False
            if incomplete not in unit.notes:
                unit.notes.append(incomplete)

    def _orphan_message(self, t: int, body: bytes, span: Span) -> None:
        unit = self.orphan
        if unit is None:
            client_at = self.client.expected
            unit = self.orphan = _Unit("unknown", client_at, span.first_ts, span.first_ref)
            unit.notes.append("request not captured")
        self._answer(unit, span)
        self._apply(unit, t, body, QUERY)
        if t == 0x5A:
            self._finish_orphan()

    def _finish_orphan(self) -> None:
        unit, self.orphan = self.orphan, None
        if unit is not None:
            self._emit(unit)

    def _flush(self) -> None:
        units = self.units
        while units:
            unit = units[0]
            if unit.ops or not unit.closed:
                break
            units.popleft()
            if unit.emitted:
                continue
            if unit.kind == "unknown" and unit.resp_start is None:
                continue                 # a lost request nobody answered: nothing known
            self._emit(unit)

    def _emit(self, unit: _Unit) -> None:
        unit.emitted = True
        request = unit.request
        response: dict[str, Any] | None = None
        kind = unit.kind
        summary = unit.summary
        answered = unit.resp_start is not None
        if answered:
            response = {"error": unit.error}
            if kind in ("simple", "extended", "unknown", "function"):
                tag = unit.tags[-1] if unit.tags else None
                response["command_tag"] = tag
                rows = _tag_rows(tag) if tag else None
                response["rows"] = unit.rows if rows is None else rows
                if len(unit.tags) > 1:
                    response["command_tags"] = unit.tags[:COLUMNS_LIMIT]
                if unit.columns is not None:
                    response["columns"] = unit.columns[:COLUMNS_LIMIT]
                if unit.notices:
                    response["notices"] = unit.notices
                if "transaction_status" in unit.extra:
                    response["transaction_status"] = unit.extra["transaction_status"]
            elif kind == "startup":
                response.update(unit.extra)
            elif kind == "encryption":
                response["encryption"] = unit.extra.get("encryption")
        unknown = kind == "unknown"
        if unknown:
            what = unit.tags[-1] if unit.tags else (unit.error or {}).get("message", "")
            summary = f"{what or 'response'} ({unit.notes[0]})"
            request = {"kind": "unknown"}
        notes = list(unit.notes)
        if unit.error is not None:
            error = unit.error
            notes.append(f"{error['severity']} {error['code']}: {error['message']}"[:QUERY_LIMIT])
        # Positional, in Exchange's field order: a dozen keywords cost a microsecond more.
        ex = Exchange("postgres", unit.resp_ts if unknown and answered else unit.ts,
                      unit.end_ts if answered else None, summary or kind, request, response,
                      db_status(answered, unit.error is not None),
                      0 if unknown else max(0, unit.req_end - unit.start),
                      (unit.resp_end - cast(int, unit.resp_start)) if answered else 0,
                      unit.complete and not unknown,
                      unit.resp_ref if unknown and answered else unit.ref, unit.end_ref,
                      unit.start, unit.resp_start, None, None, notes)
        if self.body_limit > 0 and unit.body is not None:
            ex.response_body = bytes(unit.body)
            if unit.rows and len(unit.body) >= self.body_limit:
                ex.notes.append(f"response body truncated at {self.body_limit} bytes")
        self.emit(ex)


def _values(body: bytes, i: int, count: int, limit: int) -> list[str | None]:
    values: list[str | None] = []
    total = 0
    for _ in range(count):
        size = _i32(body, i)
        i += 4
        if size < 0:
            values.append(None)
            continue
        raw = body[i:i + size]
        i += size
        text = raw.decode("utf-8", "replace") if raw.isascii() or _is_text(raw) else \
            "\\x" + raw[:limit].hex()
        values.append(text)
        total += len(text)
        if total > limit:
            break
    return values


def _is_text(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class PostgresDissector:
    name = "postgres"
    transports = frozenset({"tcp"})
    ports = frozenset({5432})
    client_first = True         # StartupMessage or SSLRequest

    def detect(self, client: bytes, server: bytes) -> Detect:
        return detect(client, server)

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> PgSession:
        return PgSession(flow, emit, body_limit)
