"""pods/portforward of the Kubernetes API double (tests/support/kubeapi.py): the streaming
protocol `kubectl port-forward` speaks, so tests run the real kubectl.

The protocol (https://kubernetes.io/docs/tasks/access-application-cluster/port-forward-access-application-cluster/,
KEP-4006 for the WebSocket transport): the connection is upgraded to SPDY/3.1 — directly
(`Upgrade: SPDY/3.1`), or tunnelled in the binary messages of a WebSocket with subprotocol
`SPDY/3.1+portforward.k8s.io`, which kubectl 1.31+ tries first — and, in it, the client opens
two streams per local connection, both with headers `port` and `requestid`: `streamtype:
error` (the server writes there why it could not forward) and `streamtype: data` (the bytes).
The server answers each SYN_STREAM with a SYN_REPLY, connects to the pod's port, and relays.
When the pod goes away the session ends (GOAWAY), as a kubelet's does.

SPDY/3.1 (https://www.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3-1/): 8-byte frame
headers, name/value header blocks compressed with one zlib stream per direction primed with the
spec's dictionary; no flow control (kubectl's spdystream does not use it either).
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

SPDY = "SPDY/3.1"
PROTOCOL = "portforward.k8s.io"
TUNNEL = f"{SPDY}+{PROTOCOL}"
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01


def _dictionary() -> bytes:
    """The SPDY/3 header compression dictionary (spec section 2.6.10.1): length-prefixed words,
    then a run of common values."""
    words = ("options head post put delete trace accept accept-charset accept-encoding accept-language "
             "accept-ranges age allow authorization cache-control connection content-base content-encoding "
             "content-language content-length content-location content-md5 content-range content-type date etag "
             "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
             "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
             "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
             "method get status").split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
                                             "keep-alive", "origin"]
    tail = ("100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
            "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()


DICTIONARY = _dictionary()


def websocket_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()


class Closed(Exception):
    """The client went away."""


class RawTransport:
    """SPDY bytes straight on the (TLS) connection."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO) -> None:
        self.rfile, self.wfile = rfile, wfile

    def read(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise Closed
        return data

    def write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()


class WebSocketTransport:
    """SPDY bytes tunnelled in WebSocket binary messages (RFC 6455: client frames are masked)."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO) -> None:
        self.rfile, self.wfile = rfile, wfile
        self.buffer = b""
        self.lock = threading.Lock()

    def _exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise Closed
        return data

    def _frame(self) -> tuple[int, bytes]:
        first, second = self._exact(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._exact(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._exact(8))[0]
        mask = self._exact(4) if second & 0x80 else b""
        payload = self._exact(length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return first & 0x0F, payload

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            opcode, payload = self._frame()
            if opcode == 0x8:                  # close
                raise Closed
            if opcode == 0x9:                  # ping
                self._send(0xA, payload)
            elif opcode in (0x0, 0x2):         # continuation, binary
                self.buffer += payload
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _send(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            header = struct.pack(">BB", 0x80 | opcode, length)
        elif length < 1 << 16:
            header = struct.pack(">BBH", 0x80 | opcode, 126, length)
        else:
            header = struct.pack(">BBQ", 0x80 | opcode, 127, length)
        with self.lock:
            self.wfile.write(header + payload)
            self.wfile.flush()

    def write(self, data: bytes) -> None:
        self._send(0x2, data)


@dataclass
class Pair:
    """The two streams kubectl opens for one local connection."""
    port: int
    error: int | None = None
    data: int | None = None
    upstream: socket.socket | None = None
    tried: threading.Event = field(default_factory=threading.Event)     # the connection was attempted


@dataclass
class Session:
    """One upgraded port-forward connection to one pod."""
    transport: RawTransport | WebSocketTransport
    connect: Callable[[int], socket.socket]     # the pod's port -> a connection (OSError: why not)
    refuse: Callable[[int, OSError], str]       # the message a kubelet writes on the error stream
    pairs: dict[str, Pair] = field(default_factory=dict)
    streams: dict[int, Pair] = field(default_factory=dict)
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    closed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.deflate = zlib.compressobj(zdict=DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=DICTIONARY)

    # ---- frames ---------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        with self.write_lock:
            if not self.closed.is_set():
                try:
                    self.transport.write(data)
                except (OSError, ValueError):     # the connection is gone (ValueError: its file is closed)
                    self.closed.set()

    def _control(self, kind: int, flags: int, payload: bytes) -> None:
        self._write(struct.pack(">HHI", 0x8000 | 3, kind, (flags << 24) | len(payload)) + payload)

    def data(self, stream: int, payload: bytes, fin: bool = False) -> None:
        self._write(struct.pack(">II", stream & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(payload))
                    + payload)

    def _headers(self, headers: dict[str, str]) -> bytes:
        block = struct.pack(">I", len(headers)) + b"".join(
            struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
            for k, v in headers.items())
        with self.write_lock:     # one compression stream: blocks go out in the order they are made
            return self.deflate.compress(block) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def _parse_headers(self, compressed: bytes) -> dict[str, str]:
        block = self.inflate.decompress(compressed)
        count, at, headers = struct.unpack_from(">I", block)[0], 4, {}
        for _ in range(count):
            (size,) = struct.unpack_from(">I", block, at)
            name = block[at + 4:at + 4 + size].decode().lower()
            at += 4 + size
            (size,) = struct.unpack_from(">I", block, at)
            headers[name] = block[at + 4:at + 4 + size].decode()
            at += 4 + size
        return headers

    def go_away(self) -> None:
        self._control(GOAWAY, 0, struct.pack(">II", 0, 0))
        self.closed.set()

    # ---- the session ----------------------------------------------------------------------------

    def serve(self) -> None:
        try:
            while not self.closed.is_set():
                head = self.transport.read(8)
                first, second = struct.unpack(">II", head)
                flags, length = second >> 24, second & 0xFFFFFF
                payload = self.transport.read(length) if length else b""
                if first & 0x80000000:
                    self._on_control(first & 0xFFFF, flags, payload)
                else:
                    self._on_data(first & 0x7FFFFFFF, flags, payload)
        except (Closed, OSError, ValueError, struct.error, zlib.error):
            pass
        finally:
            self.closed.set()
            for pair in self.pairs.values():
                if pair.upstream is not None:
                    pair.upstream.close()

    def _on_control(self, kind: int, flags: int, payload: bytes) -> None:
        if kind == SYN_STREAM:
            stream = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            headers = self._parse_headers(payload[10:])
            self._control(SYN_REPLY, 0, struct.pack(">I", stream) + self._headers({}))
            self._open(stream, headers)
        elif kind == HEADERS:
            self._parse_headers(payload[4:])       # keeps the compression stream in step
        elif kind == PING:
            self._control(PING, 0, payload)
        elif kind == RST_STREAM:
            pair = self.streams.get(struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF)
            if pair is not None and pair.upstream is not None:
                pair.upstream.close()
        elif kind == GOAWAY:
            self.closed.set()
        # SETTINGS, WINDOW_UPDATE: no flow control here, as in spdystream

    def _open(self, stream: int, headers: dict[str, str]) -> None:
        pair = self.pairs.setdefault(headers.get("requestid", str(stream)), Pair(int(headers.get("port") or 0)))
        self.streams[stream] = pair
        if headers.get("streamtype") == "error":
            pair.error = stream
        elif headers.get("streamtype") == "data":
            pair.data = stream
            threading.Thread(target=self._relay, args=(pair,), daemon=True, name="portforward").start()

    def _relay(self, pair: Pair) -> None:
        assert pair.data is not None
        try:
            pair.upstream = self.connect(pair.port)
        except OSError as error:
            pair.tried.set()
            if pair.error is not None:
                self.data(pair.error, self.refuse(pair.port, error).encode(), fin=True)
            self.data(pair.data, b"", fin=True)
            return
        pair.tried.set()
        try:
            while True:
                chunk = pair.upstream.recv(32768)
                if not chunk:
                    break
                self.data(pair.data, chunk)
        except OSError:
            pass
        self.data(pair.data, b"", fin=True)
        # kubectl closes the local connection only once the error stream has ended too (the
        # kubelet ends both when the pod's side closes)
        if pair.error is not None:
            self.data(pair.error, b"", fin=True)

    def _on_data(self, stream: int, flags: int, payload: bytes) -> None:
        pair = self.streams.get(stream)
        if pair is None or stream != pair.data:
            return                              # the error stream's half-close, or a stream gone
        pair.tried.wait(10)                     # bytes may come before the connection is made
        upstream = pair.upstream
        if upstream is None:
            return
        try:
            if payload:
                upstream.sendall(payload)
            if flags & FLAG_FIN:
                upstream.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def upgrade_kind(headers: Any) -> str | None:
    """'websocket' (kubectl 1.31+, SPDY tunnelled), 'spdy', or None for a plain request."""
    upgrade = (headers.get("Upgrade") or "").lower()
    if upgrade == "websocket" and TUNNEL in (headers.get("Sec-WebSocket-Protocol") or ""):
        return "websocket"
    if upgrade == SPDY.lower() and PROTOCOL in (headers.get("X-Stream-Protocol-Version") or ""):
        return "spdy"
    return None
