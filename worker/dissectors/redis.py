"""Redis RESP2 and RESP3: commands paired with replies in order, pub/sub pushes as lone entries.

Each direction has a _Reader (a StreamReader of worker/dissectors/stream.py: order, gaps, the
buffer and where each chunk came from are its), an incremental RESP parser fed chunk by chunk.
It leaves buffered only an unfinished line (a type header, a simple string, an inline command)
and skips bulk payloads by length, keeping a short prefix of each (PREVIEW bytes) for the
fields; aggregates keep their first KEEP children and count the rest. A finished top-level
value is handed to the session.

Pairing: requests queue up in `pending`; each reply answers the front one (pipelining and
MULTI/EXEC need nothing more: queued commands get "QUEUED", EXEC gets the array of results).
Not every server message is a reply:
- RESP3 pushes (">") and, once the connection subscribed, RESP2 arrays ["message", channel,
  data] / ["pmessage", pattern, channel, data] / ["smessage", ...] are lone entries: request {},
  response {type: "push", kind, channel, ...}, summary "message <channel>".
- A (un)subscribe confirmation (push or RESP2 array) answers the front request when that is
  the matching command; SUBSCRIBE a b gets one confirmation per channel, all folded into that
  request's entry (response.confirmations). A confirmation nothing waits for is a lone entry.
- After MONITOR the server streams the commands it runs: lone entries of kind "monitor".
- A reply with no request waiting (capture started late, a lost request) is a lone entry with
  the note "request not captured".

Losses: a gap or garbage in the client stream cuts the request being read (emitted with what
was parsed, complete=False) and the reader resyncs on the next "*<n>\\r\\n$" array header.
On the server side replies cannot be found again by content, so a gap or garbage ends every
request waiting for a reply ("response lost in a gap") and the reader waits for a chunk that
begins with a reply type byte after a later request was seen; pairing restarts there.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, Final

from mypy_extensions import i64

from worker.dissectors.base import (DB_ERROR, Detect, Direction, Emit, Exchange, FlowInfo,
                                    db_status)
from worker.packet import PacketRef
from worker.dissectors.stream import StreamReader, TwoWaySession

PREVIEW: Final = 256            # bytes kept of each bulk string / simple line for the fields
KEEP: Final = 8                 # children kept of each aggregate (the rest only counted)
LINE_LIMIT: Final = 64 * 1024   # a longer header/simple/inline line is not RESP
MAX_DEPTH: Final = 64
MAX_COUNT: Final = 1 << 32
VALUE_CHARS: Final = 100        # response.value preview
# Commands awaiting replies kept per connection (each ~1 KB: previews only). Beyond it a
# command is an entry at once ("cut: redis pending"), and its reply, when it comes, is counted
# and dropped so the replies after it still pair (redis-cli --pipe sends everything first).
MAX_PENDING: Final = 1024
ARG_CHARS: Final = 64           # each request.arguments item
ARGS_SHOWN: Final = 4
# What the fast path copies of bytes held from an earlier chunk (a bytearray) per call.
WHOLE_WINDOW: Final = 4096

TYPES: Final = {
    0x2B: "simple_string", 0x2D: "error", 0x3A: "integer", 0x24: "bulk_string",
    0x2A: "array", 0x5F: "null", 0x2C: "double", 0x23: "boolean", 0x21: "blob_error",
    0x3D: "verbatim", 0x28: "big_number", 0x25: "map", 0x7E: "set", 0x7C: "attribute",
    0x3E: "push",
}
_AGGREGATES: Final = frozenset(b"*%~|>")
_BLOBS: Final = frozenset(b"$!=")
_LINES: Final = frozenset(b"+-:_,#(")
_REPLY_START: Final = frozenset(TYPES)
_PUSH_KINDS: Final = frozenset(b"*>")

# Commands whose first word takes a sub-command: "CONFIG GET", "CLIENT SETNAME".
CONTAINERS: Final = frozenset({
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY",
    "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
})
# Sub-commands whose next argument is a key.
KEYED_SUBCOMMANDS: Final = frozenset({
    "OBJECT ENCODING", "OBJECT FREQ", "OBJECT IDLETIME", "OBJECT REFCOUNT", "MEMORY USAGE",
    "XINFO STREAM", "XINFO GROUPS", "XINFO CONSUMERS", "XGROUP CREATE", "XGROUP DESTROY",
    "XGROUP SETID", "XGROUP CREATECONSUMER", "XGROUP DELCONSUMER",
})
NO_KEY: Final = frozenset({
    "AUTH", "BGREWRITEAOF", "BGSAVE", "DBSIZE", "DISCARD", "ECHO", "EXEC", "FAILOVER",
    "FLUSHALL", "FLUSHDB", "HELLO", "INFO", "KEYS", "LASTSAVE", "LOLWUT", "MONITOR", "MULTI",
    "PING", "PSUBSCRIBE", "PUBLISH", "PUNSUBSCRIBE", "QUIT", "RANDOMKEY", "READONLY",
    "READWRITE", "REPLCONF", "REPLICAOF", "RESET", "ROLE", "SAVE", "SCAN", "SELECT",
    "SHUTDOWN", "SLAVEOF", "SPUBLISH", "SSUBSCRIBE", "SUBSCRIBE", "SUNSUBSCRIBE", "SWAPDB",
    "SYNC", "PSYNC", "TIME", "UNSUBSCRIBE", "UNWATCH", "WAIT", "WAITAOF",
})
# Commands whose keys follow a numkeys argument at index 2 (EVAL script numkeys key ...).
NUMKEYS_AT_2: Final = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
NUMKEYS_AT_1: Final = frozenset({"ZUNION", "ZINTER", "ZDIFF", "SINTERCARD", "LMPOP", "ZMPOP"})
# The first key of these is later: BLMPOP timeout numkeys key; XREAD ... STREAMS key.
SUBSCRIBES: Final = {"subscribe": "SUBSCRIBE", "psubscribe": "PSUBSCRIBE",
              "ssubscribe": "SSUBSCRIBE", "unsubscribe": "UNSUBSCRIBE",
              "punsubscribe": "PUNSUBSCRIBE", "sunsubscribe": "SUNSUBSCRIBE"}
_SUBSCRIBE_COMMANDS: Final = frozenset(SUBSCRIBES.values())
MESSAGES: Final = frozenset({"message", "pmessage", "smessage"})

_INLINE_DETECT: Final = frozenset({
    b"PING", b"INFO", b"AUTH", b"HELLO", b"ECHO", b"SELECT", b"QUIT", b"MONITOR", b"DBSIZE",
    b"FLUSHALL", b"FLUSHDB", b"CLIENT", b"CONFIG", b"SUBSCRIBE",
})
_ARRAY_START: Final = re.compile(rb"\*[0-9]{1,10}\r\n\$[0-9]{1,10}\r\n")
# Inline commands are accepted only for known command names (a stream picked up in the
# middle of a value must not turn its tail into a command).
KNOWN_COMMANDS: Final = frozenset("""
ACL APPEND ASKING AUTH BGREWRITEAOF BGSAVE BITCOUNT BITFIELD BITFIELD_RO BITOP BITPOS BLMOVE
BLMPOP BLPOP BRPOP BRPOPLPUSH BZMPOP BZPOPMAX BZPOPMIN CLIENT CLUSTER COMMAND CONFIG COPY
DBSIZE DEBUG DECR DECRBY DEL DISCARD DUMP ECHO EVAL EVALSHA EVALSHA_RO EVAL_RO EXEC EXISTS
EXPIRE EXPIREAT EXPIRETIME FAILOVER FCALL FCALL_RO FLUSHALL FLUSHDB FUNCTION GEOADD GEODIST
GEOHASH GEOPOS GEORADIUS GEORADIUSBYMEMBER GEOSEARCH GEOSEARCHSTORE GET GETBIT GETDEL GETEX
GETRANGE GETSET HDEL HELLO HEXISTS HGET HGETALL HINCRBY HINCRBYFLOAT HKEYS HLEN HMGET HMSET
HRANDFIELD HSCAN HSET HSETNX HSTRLEN HVALS INCR INCRBY INCRBYFLOAT INFO KEYS LASTSAVE LATENCY
LCS LINDEX LINSERT LLEN LMOVE LMPOP LOLWUT LPOP LPOS LPUSH LPUSHX LRANGE LREM LSET LTRIM
MEMORY MGET MIGRATE MODULE MONITOR MOVE MSET MSETNX MULTI OBJECT PERSIST PEXPIRE PEXPIREAT
PEXPIRETIME PFADD PFCOUNT PFMERGE PING PSETEX PSUBSCRIBE PSYNC PTTL PUBLISH PUBSUB
PUNSUBSCRIBE QUIT RANDOMKEY READONLY READWRITE RENAME RENAMENX REPLCONF REPLICAOF RESET
RESTORE ROLE RPOP RPOPLPUSH RPUSH RPUSHX SADD SAVE SCAN SCARD SCRIPT SDIFF SDIFFSTORE SELECT
SET SETBIT SETEX SETNX SETRANGE SHUTDOWN SINTER SINTERCARD SINTERSTORE SISMEMBER SLAVEOF
SLOWLOG SMEMBERS SMISMEMBER SMOVE SORT SORT_RO SPOP SPUBLISH SRANDMEMBER SREM SSCAN
SSUBSCRIBE STRLEN SUBSCRIBE SUBSTR SUNION SUNIONSTORE SUNSUBSCRIBE SWAPDB SYNC TIME TOUCH TTL
TYPE UNLINK UNSUBSCRIBE UNWATCH WAIT WAITAOF WATCH XACK XADD XAUTOCLAIM XCLAIM XDEL XGROUP
XINFO XLEN XPENDING XRANGE XREAD XREADGROUP XREVRANGE XSETID XTRIM ZADD ZCARD ZCOUNT ZDIFF
ZDIFFSTORE ZINCRBY ZINTER ZINTERCARD ZINTERSTORE ZLEXCOUNT ZMPOP ZMSCORE ZPOPMAX ZPOPMIN
ZRANDMEMBER ZRANGE ZRANGEBYLEX ZRANGEBYSCORE ZRANGESTORE ZRANK ZREM ZREMRANGEBYLEX
ZREMRANGEBYRANK ZREMRANGEBYSCORE ZREVRANGE ZREVRANGEBYLEX ZREVRANGEBYSCORE ZREVRANK ZSCAN
ZSCORE ZUNION ZUNIONSTORE
""".split())
_PRINTABLE: Final = re.compile(rb"[\x20-\x7e]+")
# An array header at the start of a line (or of the bytes at hand).
_ARRAY_RESYNC: Final = re.compile(rb"(?<![^\n])\*[0-9]{1,10}\r\n\$[0-9]{1,10}\r\n")
# What a chunk may end with that could begin such a header ("*", "*2\r\n", "*2\r\n$3\r"...).
_PARTIAL_ARRAY: Final = re.compile(rb"(?<![^\n])\*[0-9]{0,10}(?:\r(?:\n(?:\$[0-9]{0,10}\r?)?)?)?\Z")


# -- detection ---------------------------------------------------------------------------

def _client_state(data: bytes) -> Detect:
    if not data:
        return Detect.MORE
    if data[0] == 0x2A:   # "*"
        head = data[:32]
        if _ARRAY_START.match(head):
            return Detect.MATCH
        # A prefix of "*<digits>\r\n$<digits>\r\n"?
        if re.fullmatch(rb"\*[0-9]{0,10}(?:\r(?:\n(?:\$[0-9]{0,10}\r?)?)?)?", head):
            return Detect.MORE
        return Detect.NO
    end = data.find(b"\n", 0, 256)
    word_end = min((i for i in (data.find(b" ", 0, 16), data.find(b"\r", 0, 16)) if i >= 0),
                   default=-1)
    word = data[:word_end] if word_end >= 0 else data[:16]
    if word.upper() not in _INLINE_DETECT:
        if word_end < 0 and len(data) < 16 and any(w.startswith(data.upper())
                                                   for w in _INLINE_DETECT):
            return Detect.MORE
        return Detect.NO
    if end < 0:
        return Detect.MORE if len(data) < 256 else Detect.NO
    if b"HTTP/" in data[:end]:
        return Detect.NO
    return Detect.MATCH


def _server_state(data: bytes) -> Detect:
    """A complete, well-formed first reply line (the server alone is weaker evidence)."""
    if not data:
        return Detect.MORE
    t = data[0]
    if t not in _REPLY_START:
        return Detect.NO
    end = data.find(b"\r\n", 0, 512)
    if end < 0:
        return Detect.MORE if len(data) < 512 and b"\n" not in data else Detect.NO
    line = data[1:end]
    if t in (0x2B, 0x2D):
        return Detect.MATCH if _PRINTABLE.fullmatch(line) else Detect.NO
    if t == 0x5F:
        return Detect.MATCH if not line else Detect.NO
    if t == 0x23:
        return Detect.MATCH if line in (b"t", b"f") else Detect.NO
    if t == 0x2C:
        return Detect.MATCH if re.fullmatch(rb"[-+0-9.eE]+|inf|-inf|nan", line) else Detect.NO
    if re.fullmatch(rb"-?[0-9]{1,19}", line):
        return Detect.MATCH
    return Detect.NO


def detect(client: bytes, server: bytes) -> Detect:
    c = _client_state(client) if client else None
    if c is Detect.MATCH:
        return Detect.MATCH
    s = _server_state(server) if server else None
    if c is None:
        return s or Detect.MORE
    if c is Detect.NO:
        # The client may have been picked up mid-command: look for an array header later on.
        m = _ARRAY_RESYNC.search(client, 1, 4096)
        if m is not None and s is not Detect.NO:
            return Detect.MATCH
        return Detect.NO
    if s is Detect.NO:
        return Detect.NO
    return Detect.MATCH if s is Detect.MATCH else Detect.MORE


# -- values --------------------------------------------------------------------------------

class _Node:
    """A parsed value: `kind` a type byte; `value` the (prefix) bytes of a blob or line, or
    the kept children of an aggregate; `length` the blob size or element count."""

    __slots__ = ("kind", "value", "length", "left", "attrs")

    def __init__(self, kind: int, value: Any, length: int, left: int = 0) -> None:
        self.kind = kind
        self.value = value
        self.length = length
        self.left = left        # children still to come (aggregates being read)
        self.attrs = 0


def _text(value: bytes | bytearray, limit: int) -> str:
    # A bytes (the fast path's values) sliced and decoded natively; a bytearray generically.
    if isinstance(value, bytes):
        text = value[:limit * 4].decode("utf-8", "replace")
    else:
        text = value[:limit * 4].decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _scalar(node: _Node) -> Any:
    k, v = node.kind, node.value
    if k == 0x3A:
        try:
            return int(v)
        except ValueError:
            return _text(v, VALUE_CHARS)
    if k == 0x23:
        return v == b"t"
    if k == 0x2C:
        try:
            number = float(v)
        except ValueError:
            return _text(v, VALUE_CHARS)
        return number if number == number and abs(number) != float("inf") else v.decode()
    if k == 0x5F or v is None:
        return None
    if k == 0x3D and v[3:4] == b":":   # verbatim "txt:..."
        v = v[4:]
    return _text(v, VALUE_CHARS)


def _render(node: _Node, budget: int) -> str:
    k = node.kind
    if k in _AGGREGATES:
        if node.value is None:
            return "null"
        items = node.value
        open_, close = ("{", "}") if k in (0x25, 0x7C) else ("[", "]")
        parts: list[str] = []
        used = 2
        pairs = k in (0x25, 0x7C)
        for i, child in enumerate(items):
            if used >= budget:
                break
            text = _render(child, budget - used)
            sep = ": " if pairs and i % 2 == 0 else ", "
            parts.append(text + (sep if i < len(items) - 1 else ""))
            used += len(text) + 2
        shown = len(items) // (2 if pairs else 1)
        total = node.length
        out = open_ + "".join(parts)
        if shown < total or used >= budget:
            out = out.rstrip(", ") + ", ..."
        return out + close
    value = _scalar(node)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _word(node: _Node) -> str:
    if node.kind in _AGGREGATES or not isinstance(node.value, (bytes, bytearray)):
        return ""
    return node.value[:PREVIEW].decode("utf-8", "replace")


# -- requests ------------------------------------------------------------------------------

def _first_key(command: str, words: list[str], count: int) -> str | None:
    """The first key of a command given its argument words (command words first)."""
    # (Every KEYED_SUBCOMMANDS has a space: a plain command's name is itself, no split.)
    spaced = " " in command
    name = command.split(" ")[0] if spaced else command
    if spaced and command in KEYED_SUBCOMMANDS:
        index = 2
    elif name in CONTAINERS or name in NO_KEY:
        return None
    elif name in NUMKEYS_AT_2:
        if len(words) < 4 or words[2] in ("", "0"):
            return None
        index = 3
    elif name in NUMKEYS_AT_1:
        index = 2
    elif name == "BLMPOP" or name == "BZMPOP":
        index = 3
    elif name in ("XREAD", "XREADGROUP"):
        upper = [w.upper() for w in words]
        if "STREAMS" not in upper:
            return None
        index = upper.index("STREAMS") + 1
    else:
        index = 1
    if index >= count or index >= len(words):
        return None
    return words[index]


# The commands secret_arguments finds credentials in (for any other it finds none): the
# redactor looks at an entry's arguments only for these.
SECRET_COMMANDS: Final = frozenset({"AUTH", "HELLO", "MIGRATE", "CONFIG SET"})


def secret_arguments(command: str, args: list[str]) -> list[int]:
    """Where `arguments` hold credentials: AUTH [user] pass; HELLO ... AUTH user pass;
    MIGRATE ... AUTH pass | AUTH2 user pass; CONFIG SET requirepass|masterauth value. The
    worker's redaction (worker/redact.py) hides them; the dissector shows what was sent."""
    if command == "AUTH":
        return list(range(len(args)))
    if command in ("HELLO", "MIGRATE"):
        out, hide = [], 0
        for i, arg in enumerate(args):
            if hide:
                out.append(i)
                hide -= 1
            elif arg.upper() in ("AUTH", "AUTH2"):
                hide = 2
        return out
    if command == "CONFIG SET" and args and args[0].lower() in ("requirepass", "masterauth"):
        return list(range(1, len(args)))
    return []


def request_fields(node: _Node, inline: bool) -> dict[str, Any]:
    items = node.value if node.kind == 0x2A and node.value is not None else []
    count = node.length if node.kind == 0x2A else 0
    return _request_fields([_word(child) for child in items], count, inline)


def _request_fields(words: list[str], count: int, inline: bool) -> dict[str, Any]:
    """The request's fields from the words of its first KEEP elements (_word's) and its
    element count: what request_fields makes of a parsed array, and the fast path of a
    whole one (which decodes the words without making the nodes)."""
    command = words[0].upper() if words else ""
    used = 1
    if command in CONTAINERS and len(words) > 1:
        command = f"{command} {words[1].upper()}"
        used = 2
    # A word is decoded with "replace" from at most PREVIEW bytes, so it encodes back to the
    # same bytes and decodes to itself: up to `limit` characters (at most 4*limit bytes,
    # all of which _text reads) it is what _text makes of its bytes, with no round trip.
    args = [w if len(w) <= ARG_CHARS else _text(w.encode("utf-8", "replace"), ARG_CHARS)
            for w in words[used:used + ARGS_SHOWN]]
    key = _first_key(command, words, count)
    if key is not None and len(key) > PREVIEW:
        key = _text(key.encode("utf-8", "replace"), PREVIEW)
    return {
        "command": command,
        "key": key,
        "args": max(0, count - used),
        "arguments": args,
        "inline": inline,
    }


def _summary(request: dict[str, Any]) -> str:
    command = request.get("command") or "?"
    if request.get("key") is not None:
        return f"{command} {request['key']}"[:256]
    arguments = request.get("arguments") or []
    if arguments:
        return f"{command} {arguments[0]}"[:256]
    return command


# -- replies -------------------------------------------------------------------------------

def response_fields(node: _Node) -> dict[str, Any]:
    kind = node.kind
    value = node.value
    if (kind == 0x2B or kind == 0x24) and value is not None and not node.attrs:
        # The commonest replies (+OK, a bulk string), as below: _scalar's text.
        return {"type": TYPES[kind], "value": _text(value, VALUE_CHARS), "error": None,
                "length": node.length}
    null = node.value is None and kind != 0x5F
    fields: dict[str, Any] = {"type": "null" if null or kind == 0x5F else TYPES[kind]}
    if kind in _AGGREGATES:
        fields["value"] = None if null else _render(node, VALUE_CHARS)
    else:
        fields["value"] = None if null else _scalar(node)
    if kind in (0x2D, 0x21):
        fields["error"] = _text(bytes(node.value or b""), 256)
    else:
        fields["error"] = None
    if null or kind in (0x5F, 0x3A, 0x23, 0x2C):
        fields["length"] = None
    elif kind in _AGGREGATES or kind in _BLOBS:
        fields["length"] = node.length
    else:
        fields["length"] = node.length
    if node.attrs:
        fields["attributes"] = node.attrs
    return fields


def _push_info(node: _Node) -> tuple[str, list[str]] | None:
    """(kind, its words) when the node is an array/push whose first element is a string."""
    if node.kind not in (0x2A, 0x3E) or not node.value:
        return None
    first = node.value[0]
    if first.kind not in (0x24, 0x2B):
        return None
    return _word(first).lower(), [_word(c) for c in node.value[1:4]]


# -- one direction -----------------------------------------------------------------------

class _Message:
    __slots__ = ("node", "start", "ts", "ref", "end", "end_ts", "end_ref", "inline",
                 "complete", "raw", "notes")

    def __init__(self, start: int, ts: int, ref: PacketRef) -> None:
        self.node: _Node | None = None
        self.start = start
        self.ts = ts
        self.ref = ref
        self.end = start
        self.end_ts = ts
        self.end_ref = ref
        self.inline = False
        self.complete = True
        self.raw: bytearray | None = None
        self.notes: list[str] = []


SYNC: Final = 0
RESYNC: Final = 1
LOST: Final = 2


class _Reader(StreamReader):
    """Cuts one direction into RESP values, a state machine over the chunks: the buffer holds
    only an unfinished line; bulk payloads are passed by length (their prefix kept)."""

    __slots__ = ("s", "is_request", "state", "stack", "blob", "blob_left", "msg", "attrs",
                 "raw_limit")

    def __init__(self, session: RedisSession, direction: Direction, raw_limit: int) -> None:
        super().__init__(direction)
        self.s = session
        self.is_request = direction == Direction.CLIENT_TO_SERVER
        self.state = SYNC
        self.stack: list[_Node] = []
        self.blob: _Node | None = None   # the blob string being read
        self.blob_left = 0           # its bytes still to come, CRLF included
        self.msg: _Message | None = None
        self.attrs = 0               # attributes seen before the value being read
        self.raw_limit = raw_limit

    def parse(self, work: bytes | bytearray, base: int, ts: int, ref: PacketRef) -> int:
        data = work
        is_request = self.is_request
        if self.state == LOST:
            # Server side after a loss (nothing is buffered then): a chunk that starts a
            # reply, once a request waits.
            if not (data[0] in _REPLY_START and self.s.pending):
                self.skipped += len(data)
                return len(data)
            self.state = SYNC
        try:
            pos, n = 0, len(data)
            keep = self.s.keep
            seg = 0                               # start of the current message's bytes in data
            while pos < n:
                if self.state != SYNC:
                    if self.state != RESYNC:      # LOST: drop the rest of the chunk
                        self.skipped += n - pos
                        return n
                    pos = seg = self._resync(data, pos)
                    if self.state != SYNC:
                        return pos                # keep a possible partial array header
                    continue
                if self.blob_left:
                    take = min(self.blob_left, n - pos)
                    blob = self.blob
                    assert blob is not None
                    room = min(blob.length, keep) - len(blob.value)
                    if room > 0:
                        blob.value += data[pos:pos + min(take, room)]
                    pos += take
                    self.blob_left -= take
                    if self.blob_left == 0:
                        if take >= 2 and data[pos - 2:pos] != b"\r\n":
                            self._malformed("malformed: bulk string not ended by CRLF", 0)
                            seg = pos
                            continue
                        self.blob = None
                        if self._done(blob, data, seg, pos, base, ts, ref):
                            seg = pos
                    continue
                msg = self.msg
                if msg is None:
                    # Between messages: whole ones go by the fast path; the general one
                    # below takes the first it leaves (cut by the chunk's end, or unusual).
                    pos = self._whole(data, pos, n, base, ts, ref)
                    if pos >= n:
                        break
                    if pos:
                        start_ts, start_ref = ts, ref
                    else:                         # where the buffered line began
                        _, start_ts, start_ref = self.marks[0]
                    msg = self.msg = _Message(base + pos, start_ts, start_ref)
                    if self.raw_limit:
                        msg.raw = bytearray()
                    seg = pos
                t = data[pos]
                nl = data.find(b"\n", pos, pos + LINE_LIMIT)
                if nl < 0:
                    if n - pos >= LINE_LIMIT:
                        self._malformed("malformed: line longer than 64 KiB")
                        pos = seg = pos + 1
                        continue
                    if msg.raw is not None:
                        self._keep_raw(msg, data, seg, pos)
                    return pos                    # an unfinished line: kept for the next chunk
                end = nl + 1
                line = data[pos + 1:nl - 1 if data[nl - 1] == 0x0D and nl > pos else nl]
                nested = bool(self.stack)
                if t in _BLOBS and (nested or not is_request):
                    # _int inlined: a length line per bulk string is the commonest line of all.
                    size = None
                    if 0 < len(line) <= 20:
                        try:
                            size = int(line)
                        except ValueError:
                            pass
                    if size is None or size < -1 or size >= MAX_COUNT:
                        self._malformed("malformed: bad bulk length")
                        pos = seg = pos + 1
                        continue
                    pos = end
                    if size == -1:
                        if self._done(_Node(t, None, 0), data, seg, pos, base, ts, ref):
                            seg = pos
                        continue
                    stop = pos + size
                    if stop + 2 <= n:          # the whole string is here: no blob state
                        if data[stop:stop + 2] != b"\r\n":
                            self._malformed("malformed: bulk string not ended by CRLF", 0)
                            pos = seg = stop + 2
                            continue
                        node = _Node(t, data[pos:pos + min(size, keep)], size)
                        pos = stop + 2
                        parent = self.stack[-1] if nested else None
                        if parent is not None and parent.left > 1:
                            # Not the last element of its aggregate: what _done does then.
                            if len(parent.value) < KEEP:
                                parent.value.append(node)
                            parent.left -= 1
                            continue
                        if self._done(node, data, seg, pos, base, ts, ref):
                            seg = pos
                        continue
                    self.blob = _Node(t, bytearray(), size)
                    self.blob_left = size + 2
                    continue
                if t in _AGGREGATES and (nested or not is_request or t == 0x2A):
                    count = _int(line)
                    if count is None or count < -1 or count >= MAX_COUNT or \
                            len(self.stack) >= MAX_DEPTH:
                        self._malformed("malformed: bad aggregate length")
                        pos = seg = pos + 1
                        continue
                    pos = end
                    if count == -1:
                        if self._done(_Node(t, None, 0), data, seg, pos, base, ts, ref):
                            seg = pos
                        continue
                    elements = count * 2 if t in (0x25, 0x7C) else count
                    node = _Node(t, [], count, elements)
                    if elements == 0:
                        if self._done(node, data, seg, pos, base, ts, ref):
                            seg = pos
                        continue
                    self.stack.append(node)
                    continue
                if t in _LINES and (nested or not is_request):
                    if t == 0x3A and _int(line) is None:
                        self._malformed("malformed: bad integer")
                        pos = seg = pos + 1
                        continue
                    pos = end
                    value = bytes(line[:keep]) if t in (0x2B, 0x2D) else bytes(line[:64])
                    if self._done(_Node(t, value, len(line)), data, seg, pos, base, ts, ref):
                        seg = pos
                    continue
                if is_request and not nested:
                    # An inline command: words separated by spaces, one command per line.
                    words = data[pos:end].split()
                    if not words:
                        self.msg = None        # empty lines are ignored by the server
                        pos = seg = end
                        continue
                    if words[0][:32].upper().decode("ascii", "replace") not in KNOWN_COMMANDS:
                        self._malformed("malformed: not a command")
                        pos = seg = pos + 1
                        continue
                    pos = end
                    children = [_Node(0x24, w[:keep], len(w)) for w in words[:KEEP]]
                    msg.inline = True
                    if self._done(_Node(0x2A, children, len(words)), data, seg, pos, base, ts, ref):
                        seg = pos
                    continue
                self._malformed(f"malformed: unexpected type byte 0x{t:02x}")
                pos = seg = pos + 1
            if self.msg is not None and self.msg.raw is not None:
                self._keep_raw(self.msg, data, seg, n)
            return n
        except (ValueError, IndexError, TypeError, AssertionError) as exc:   # defensive
            self._malformed(f"malformed: {type(exc).__name__}", 0)
            return len(data)

    def _whole(self, data: bytes | bytearray, pos: int, n: int, base: int, ts: int,
               ref: PacketRef) -> int:
        """The fast path: whole top-level values of the common shapes (an array of bulk
        strings; a reply line or bulk string) read straight from data[pos:] and handed to the
        session, exactly as the state machine would make them. Returns where the first value
        it does not take begins (a value cut by the end of data, any other type, anything
        malformed, a header not in its plain form): the state machine reads that one, from
        its start."""
        if isinstance(data, bytes):
            return self._whole_bytes(data, pos, n, base, ts, ref, base)
        # Bytes held from an earlier chunk: indexing a bytearray is a generic call per byte
        # (mypyc boxes the index and the byte), a typed bytes' is native; so the fast path
        # reads a copy of at most WHOLE_WINDOW bytes (a value that runs past it is the state
        # machine's), which bounds what each call copies however often it stops early.
        stop = min(n, pos + WHOLE_WINDOW)
        return pos + self._whole_bytes(bytes(data[pos:stop]), 0, stop - pos, base + pos, ts,
                                       ref, base)

    def _whole_bytes(self, data: bytes, pos: int, n: int, base: int, ts: int, ref: PacketRef,
                     origin: int) -> int:
        """_whole over a typed bytes (every index and slice native): data[0] is stream byte
        `base`; `origin` is the stream offset of the first byte held (a value starting there
        takes its time and packet from the first mark)."""
        keep = self.s.keep
        is_request = self.is_request
        # The session's methods called on it, not bound to locals: compiled, that is a direct
        # call, where a bound method goes through the argument-parsing wrapper.
        session = self.s
        raw_limit = self.raw_limit
        while pos < n:
            start = pos
            t = data[pos]
            if t == 0x2A:                                        # "*": an array
                count = _plain_size(data, pos + 1, n)
                if count < 1:
                    return start
                pos = _after_size(data, pos + 1)
                if is_request:
                    # A command: only its words are wanted (what request_fields would take
                    # of the nodes), so no node is made.
                    words: list[str] = []
                    for _ in range(count):
                        # "$<digits>\r\n" and the string with its CRLF: only bulk strings.
                        if pos >= n or data[pos] != 0x24:
                            return start
                        size = _plain_size(data, pos + 1, n)
                        if size < 0:
                            return start
                        pos = _after_size(data, pos + 1)
                        stop = pos + size
                        if stop + 2 > n or data[stop] != 0x0D or data[stop + 1] != 0x0A:
                            return start
                        if len(words) < KEEP:
                            words.append(data[pos:pos + size if size < PREVIEW else pos + PREVIEW]
                                         .decode("utf-8", "replace"))
                        pos = stop + 2
                    node = None
                else:
                    children: list[_Node] = []
                    for _ in range(count):
                        if pos >= n or data[pos] != 0x24:        # only bulk strings
                            return start
                        size = _plain_size(data, pos + 1, n)
                        if size < 0:
                            return start
                        pos = _after_size(data, pos + 1)
                        stop = pos + size
                        if stop + 2 > n or data[stop] != 0x0D or data[stop + 1] != 0x0A:
                            return start
                        if len(children) < KEEP:
                            children.append(_Node(0x24, data[pos:pos + min(size, keep)], size))
                        pos = stop + 2
                    node = _Node(0x2A, children, count)
            elif is_request:
                return start                       # inline commands: the general path
            elif t == 0x24:                                      # "$": a bulk string
                if pos + 4 < n and data[pos + 1] == 0x2D and data[pos + 2] == 0x31 and \
                        data[pos + 3] == 0x0D and data[pos + 4] == 0x0A:        # "$-1\r\n"
                    node = _Node(0x24, None, 0)
                    pos += 5
                else:
                    size = _plain_size(data, pos + 1, n)
                    if size < 0:
                        return start
                    pos = _after_size(data, pos + 1)
                    stop = pos + size
                    if stop + 2 > n or data[stop] != 0x0D or data[stop + 1] != 0x0A:
                        return start
                    node = _Node(0x24, data[pos:pos + min(size, keep)], size)
                    pos = stop + 2
            elif t == 0x2B or t == 0x2D or t == 0x3A:            # "+", "-", ":"
                nl = _line_end(data, pos + 1, n)
                if nl < 0 or data[nl - 1] != 0x0D:
                    return start
                line = data[pos + 1:nl - 1]
                if t == 0x3A:
                    if _int(line) is None:
                        return start
                    value = line[:64]
                else:
                    value = line[:keep]
                node = _Node(t, value, len(line))
                pos = nl + 1
            else:
                return start
            if base + start != origin:
                msg = _Message(base + start, ts, ref)
            else:                                  # where the buffered bytes began
                _, start_ts, start_ref = self.marks[0]
                msg = _Message(base + start, start_ts, start_ref)
            if raw_limit:
                msg.raw = bytearray(data[start:min(pos, start + raw_limit)])
            msg.end, msg.end_ts, msg.end_ref = base + pos, ts, ref
            if node is None:
                session.on_request(msg, _request_fields(words, count, False))
            else:
                msg.node = node
                session.on_message(is_request, msg)
        return pos

    def _keep_raw(self, msg: _Message, data: bytes | bytearray, a: int, b: int) -> None:
        raw = msg.raw
        assert raw is not None
        room = self.raw_limit - len(raw)
        if room > 0 and b > a:
            raw += data[a:min(b, a + room)]

    def _done(self, node: _Node, data: bytes | bytearray, seg: int, pos: int, base: int,
              ts: int, ref: PacketRef) -> bool:
        """A value ended at data[pos]; returns True when that ended the top-level message."""
        while True:
            if self.stack:
                parent = self.stack[-1]
                if node.kind == 0x7C:          # an attribute decorates the next value
                    self.attrs += 1
                    return False
                if len(parent.value) < KEEP:
                    parent.value.append(node)
                parent.left -= 1
                if parent.left > 0:
                    return False
                node = self.stack.pop()
                continue
            if node.kind == 0x7C:
                self.attrs += 1
                return False
            msg = self.msg
            assert msg is not None
            node.attrs, self.attrs = self.attrs, 0
            msg.node = node
            msg.end, msg.end_ts, msg.end_ref = base + pos, ts, ref
            if msg.raw is not None:
                self._keep_raw(msg, data, seg, pos)
            self.msg = None
            self.s.on_message(self.is_request, msg)
            return True

    def _malformed(self, why: str, skip: int = 1) -> None:
        """Garbage where RESP should be: cut the message; the client side resyncs on the next
        array header (after the `skip` bad bytes), the server side waits for a chunk that
        starts a reply (see the doc)."""
        self.skipped += skip
        self._cut(why)
        if self.is_request:
            self.state = RESYNC
        else:
            self.state = LOST
            self.s.lose_replies(why)

    def _cut(self, why: str) -> None:
        msg = self.msg
        self.msg = None
        stack = self.stack
        if stack:                     # hang what was read so far on its parents
            for child, parent in zip([self.blob, *stack[:0:-1]], stack[::-1]):
                if child is not None and len(parent.value) < KEEP:
                    parent.value.append(child)
        node = stack[0] if stack else self.blob
        self.stack = []
        self.blob = None
        self.blob_left = 0
        self.attrs = 0
        if msg is None:
            return
        msg.complete = False
        msg.notes.append(why)
        msg.end, msg.end_ts, msg.end_ref = self.expected, self.last_ts, self.last_ref
        if node is not None and node.kind in _AGGREGATES:
            node.value = node.value if isinstance(node.value, list) else []
        msg.node = node
        self.s.on_message(self.is_request, msg)

    def _resync(self, data: bytes | bytearray, pos: int) -> int:
        """Skip to the next array header at a line start: where it begins, or (the state still
        RESYNC) where a possible partial one begins, to be kept."""
        m = _ARRAY_RESYNC.search(data, pos)
        if m is not None:
            self.skipped += m.start() - pos
            self.state = SYNC
            return m.start()
        n = len(data)
        partial = _PARTIAL_ARRAY.search(data, max(pos, n - 32))
        if partial is not None:
            keep = partial.start()
        else:   # a short unfinished line is kept: a "*" after it does not start a line
            nl = data.rfind(b"\n", pos)
            keep = nl + 1 if nl >= 0 and n - nl <= 32 else n
        self.skipped += keep - pos
        return keep

    def lose(self, offset: int, end: int, ts: int) -> None:
        side = "request" if self.is_request else "response"
        if self.msg is not None or self.buf:
            self._cut(f"gap in {side}")
        if self.is_request:
            self.state = RESYNC
        else:
            self.state = LOST
            self.s.lose_replies("response lost in a gap")

    def close(self) -> None:
        if not self.dead and self.state == SYNC and (self.msg is not None or self.buf):
            side = "request" if self.is_request else "response"
            self._cut(f"{side} cut by the end of the connection")
        super().close()

    def held_bytes(self) -> int:
        """The unfinished line, the blob being read and the raw message kept so far."""
        held = len(self.buf)
        if self.blob is not None and isinstance(self.blob.value, bytearray):
            held += len(self.blob.value)
        if self.msg is not None and self.msg.raw is not None:
            held += len(self.msg.raw)
        return held


def _int(line: bytes | bytearray) -> int | None:
    if not line or len(line) > 20:
        return None
    try:
        return int(line)
    except ValueError:
        return None


def _plain_size(data: bytes, i: int, n: int) -> int:
    """The size in a header's plain form at data[i:]: 1 to 10 ASCII digits and CRLF, below
    MAX_COUNT; -1 for anything else (a sign, a longer or odd number: the state machine's
    int() reads those). Read byte by byte: natively, no slice, find or int object."""
    size: i64 = 0
    j: i64 = i
    stop: i64 = j + 11                       # an 11th digit is already too many
    if stop > n:
        stop = n
    while j < stop:
        c: i64 = data[j]
        if c < 0x30 or c > 0x39:
            break
        size = size * 10 + (c - 0x30)
        j += 1
    if j == i or j - i > 10 or size >= MAX_COUNT or j + 1 >= n or data[j] != 0x0D or \
            data[j + 1] != 0x0A:
        return -1
    return size


def _after_size(data: bytes, i: int) -> int:
    """Where what follows a header's plain size (_plain_size found one at data[i:]) begins."""
    while data[i] != 0x0D:
        i += 1
    return i + 2


def _line_end(data: bytes, i: int, n: int) -> int:
    """The index of the first LF at or after data[i] (within LINE_LIMIT of the type byte
    before it), or -1. Reply lines are short: a few bytes looked at natively before a find."""
    stop = min(n, i + 32)
    j = i
    while j < stop:
        if data[j] == 0x0A:
            return j
        j += 1
    return data.find(b"\n", stop, min(n, i - 1 + LINE_LIMIT))


# -- the session -------------------------------------------------------------------------

class _Request:
    __slots__ = ("msg", "fields", "reply", "confirmations", "expect", "skip_before")

    def __init__(self, msg: _Message, fields: dict[str, Any]) -> None:
        self.msg = msg
        self.fields = fields
        self.reply: _Message | None = None
        self.confirmations = 0
        self.skip_before = 0          # replies of commands cut before this one: dropped first
        # Subscribe-family commands get one confirmation per channel (0: until count 0).
        self.expect = fields["args"] if fields["command"] in _SUBSCRIBE_COMMANDS else 1


class RedisSession(TwoWaySession[_Reader]):
    def __init__(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> None:
        super().__init__(_Reader(self, Direction.CLIENT_TO_SERVER, body_limit),
                         _Reader(self, Direction.SERVER_TO_CLIENT, body_limit))
        self.flow = flow
        self.emit = emit
        self.body_limit = body_limit
        self.keep = max(PREVIEW, min(body_limit, 1 << 20)) if body_limit > 0 else PREVIEW
        self.pending: deque[_Request] = deque()
        self.skip_tail = 0            # replies of commands cut after the last pending one
        self.subscribed = False
        self.monitoring = False       # after MONITOR: the server streams the commands it runs

    def kept_bytes(self) -> int:
        """The raw requests kept for the detail view while they wait for their reply."""
        return sum(len(r.msg.raw) for r in self.pending if r.msg.raw is not None)

    def on_close(self, ts_ns: int) -> None:
        if self.dead:
            return
        self.dead = True
        self.client.close()
        self.server.close()
        while self.pending:
            request = self.pending.popleft()
            if request.reply is None:
                request.msg.notes.append("no response")
            self._emit(request, complete=request.reply is not None)

    # -- called by the readers --

    def on_message(self, is_request: bool, msg: _Message) -> None:
        if is_request:
            if msg.node is not None:       # else cut before anything could be read
                self.on_request(msg, request_fields(msg.node, msg.inline))
            return
        node = msg.node
        if node is None:
            return
        # Only an array or a push can be a pub/sub message or confirmation (_push_info).
        info = _push_info(node) if node.kind in _PUSH_KINDS else None
        if info is not None:
            kind, words = info
            if kind in SUBSCRIBES and (node.kind == 0x3E or len(words) == 2):
                if self._confirm(kind, words, msg):
                    return
                self._lone(msg, kind, words)
                return
            if node.kind == 0x3E or (kind in MESSAGES and self.subscribed):
                self._lone(msg, kind, words)
                return
        pending = self.pending
        if pending:
            request = pending[0]
            if request.confirmations:              # _finish_subscribe, inline
                self._finish_subscribe()
                if not pending:
                    self._unpaired(msg)
                    return
                request = pending[0]
            if request.skip_before:
                request.skip_before -= 1           # the reply of a command that was cut
                return
            pending.popleft()
            request.reply = msg
            if node.kind == 0x2B and request.fields["command"] == "MONITOR":
                self.monitoring = True
            self._emit(request, complete=msg.complete and request.msg.complete)
            return
        self._unpaired(msg)

    def _unpaired(self, msg: _Message) -> None:
        """A reply with no command waiting: one of a cut command's (dropped) or a lone one."""
        if self.skip_tail:
            self.skip_tail -= 1
            return
        self._lone(msg, "monitor" if self.monitoring else None, [])

    def on_request(self, msg: _Message, fields: dict[str, Any]) -> None:
        """A command read, with its fields (the fast path makes them without a node)."""
        request = _Request(msg, fields)
        if len(self.pending) >= MAX_PENDING:
            self.skip_tail += 1
            msg.notes.append(f"cut: redis pending: over {MAX_PENDING} commands awaited "
                             "replies; this one's reply is not paired")
            self._emit(request, complete=False)
            return
        request.skip_before, self.skip_tail = self.skip_tail, 0
        self.pending.append(request)

    def _confirm(self, kind: str, words: list[str], msg: _Message) -> bool:
        """A subscribe/unsubscribe confirmation: fold it into the waiting command."""
        self.subscribed = True
        if not self.pending or self.pending[0].fields["command"] != SUBSCRIBES[kind]:
            self._finish_subscribe()
            if not self.pending or self.pending[0].fields["command"] != SUBSCRIBES[kind]:
                return False
        request = self.pending[0]
        request.confirmations += 1
        if request.reply is None:
            request.reply = msg
        else:
            request.reply.end, request.reply.end_ts = msg.end, msg.end_ts
            request.reply.end_ref = msg.end_ref
        remaining = words[1] if len(words) > 1 else ""
        if (request.expect and request.confirmations >= request.expect) or \
                (not request.expect and remaining in ("0", "")):
            self.pending.popleft()
            self._emit(request, complete=request.msg.complete)
        return True

    def _finish_subscribe(self) -> None:
        """A subscribe command that got fewer confirmations than channels ends here."""
        if self.pending and self.pending[0].confirmations:
            request = self.pending.popleft()
            self._emit(request, complete=request.msg.complete)

    def lose_replies(self, why: str) -> None:
        self.skip_tail = 0
        while self.pending:
            request = self.pending.popleft()
            request.msg.notes.append(why)
            self._emit(request, complete=False)

    def _emit(self, request: _Request, complete: bool) -> None:
        msg, reply = request.msg, request.reply
        fields = request.fields
        notes = list(msg.notes) if msg.notes else []
        request_body: bytes | None = None if msg.raw is None else bytes(msg.raw)
        if reply is None:
            # Positional, in Exchange's field order: a dozen keywords cost a microsecond more.
            self.emit(Exchange("redis", msg.ts, None, _summary(fields), fields, None, None,
                               msg.end - msg.start, 0, complete, msg.ref, msg.end_ref,
                               msg.start, None, request_body, None, notes))
            return
        response: dict[str, Any] = response_fields(reply.node) if reply.node is not None else \
            {"type": None, "value": None, "error": None, "length": None}
        if request.confirmations:
            response["confirmations"] = request.confirmations
        if reply.notes:
            notes += reply.notes
        self.emit(Exchange("redis", msg.ts, reply.end_ts, _summary(fields), fields, response,
                           DB_ERROR if response.get("error") else 0, msg.end - msg.start,
                           reply.end - reply.start, complete, msg.ref, reply.end_ref, msg.start,
                           reply.start, request_body,
                           None if reply.raw is None else bytes(reply.raw), notes))

    def _lone(self, msg: _Message, kind: str | None, words: list[str]) -> None:
        """A server message no request waits for: a push, or a reply whose request was not
        captured."""
        node = msg.node
        assert node is not None
        response = response_fields(node)
        notes = list(msg.notes)
        if kind == "monitor":
            response["kind"] = kind
            summary = f"monitor {response['value']}"[:256]
        elif kind is not None:
            response["type"] = "push"
            response["kind"] = kind
            channel = words[1] if kind == "pmessage" and len(words) > 1 else \
                (words[0] if words else None)
            response["channel"] = channel
            if kind == "pmessage":
                response["pattern"] = words[0] if words else None
            summary = f"{kind} {channel}" if channel else kind
        else:
            summary = f"{response['type']} reply"
            notes.append("request not captured")
        ex = Exchange(protocol="redis", start_ns=msg.ts, end_ns=msg.end_ts, summary=summary,
                      request={}, response=response, response_size=msg.end - msg.start,
                      status=db_status(True, bool(response.get("error"))),
                      complete=msg.complete, first_ref=msg.ref, last_ref=msg.end_ref,
                      client_offset=self.client.expected, server_offset=msg.start,
                      notes=notes)
        if msg.raw is not None:
            ex.response_body = bytes(msg.raw)
        self.emit(ex)


class RedisDissector:
    name = "redis"
    transports = frozenset({"tcp"})
    ports = frozenset({6379, 6380, 26379})
    client_first = True         # a command

    def detect(self, client: bytes, server: bytes) -> Detect:
        return detect(client, server)

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> RedisSession:
        return RedisSession(flow, emit, body_limit)
