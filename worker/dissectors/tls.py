"""TLS: one entry per encrypted connection, from its cleartext handshake.

Each direction has a record reader: it walks 5-byte record headers (type, version, length) and
skips payloads by length, handing only the payloads it needs to a handshake reader (handshake
records sent before that side encrypts) or to the alert parser. The handshake reader joins
messages that span records and keeps the bodies of ClientHello and ServerHello only (bounded);
every other message is skipped by length. So past the handshake a chunk costs a few integer
operations per record, and the session holds nothing but counters.

Losses: a gap inside a record's payload keeps the record boundaries (records are length
delimited); a handshake message it cuts is dropped and noted. A gap across a record header
loses the framing: that direction is only counted from then on.

Cleartext: a side's handshake and alert records are readable until it sends ChangeCipherSpec
(TLS 1.2 and older); with TLS 1.3 everything encrypted travels as application data (type 23),
so handshake records are always cleartext and a two-byte alert record is a cleartext alert.

The entry is emitted when the flow closes: request (ClientHello) {sni, alpn, version,
cipher_suites}, response (ServerHello) {version, cipher, alpn, alert, error}, the bytes each
way over the whole connection, end_ns at the end of the server's handshake (TLS 1.2: its
Finished; TLS 1.3: its last record before the client's Finished), else at its first
application data. A connection seen without its hellos (capture started late) is one entry
noted "handshake not captured".
"""

from __future__ import annotations

from typing import Any

from worker.dissectors.base import Detect, Direction, Emit, Exchange, FlowInfo
from worker.packet import PacketRef

CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT = 20, 21, 22, 23, 24
CLIENT_HELLO, SERVER_HELLO = 1, 2
RECORD_LIMIT = 16384 + 2048        # the largest TLSCiphertext (TLS 1.2; 1.3 allows 2^14+256)
HELLO_LIMIT = 65536                # a longer hello is not kept (noted)
NOTES_LIMIT = 8
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2",
            0x0304: "TLS 1.3"}
# Handshake types each side sends (cleartext ones), to tell client from server by content.
_SERVER_ONLY = frozenset({2, 4, 8, 12, 13, 14, 22})
_CLIENT_ONLY = frozenset({1, 15, 16})

CIPHERS = {
    0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256", 0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", 0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA", 0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x0005: "TLS_RSA_WITH_RC4_128_SHA",
    0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
}

ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 21: "decryption_failed",
    22: "record_overflow", 30: "decompression_failure", 40: "handshake_failure",
    41: "no_certificate", 42: "bad_certificate", 43: "unsupported_certificate",
    44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 60: "export_restriction", 70: "protocol_version",
    71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
    90: "user_canceled", 100: "no_renegotiation", 109: "missing_extension",
    110: "unsupported_extension", 111: "certificate_unobtainable", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 114: "bad_certificate_hash_value",
    115: "unknown_psk_identity", 116: "certificate_required", 120: "no_application_protocol",
}


def version_name(version: int) -> str:
    name = VERSIONS.get(version)
    if name:
        return name
    if version >> 8 == 0x7F:
        return f"TLS 1.3 (draft {version & 0xFF})"
    return f"0x{version:04x}"


def cipher_name(suite: int) -> str:
    return CIPHERS.get(suite) or f"0x{suite:04x}"


def _grease(value: int) -> bool:
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


# -- detection ---------------------------------------------------------------------------

def record_start_state(data: bytes, as_client: bool) -> Detect:
    """Whether data begins with a plausible TLS record header that this side could send
    (a ClientHello is only the client's, a ServerHello only the server's)."""
    n = len(data)
    if n == 0:
        return Detect.MORE
    kind = data[0]
    if kind not in (ALERT, HANDSHAKE, APPLICATION_DATA, CHANGE_CIPHER_SPEC):
        return Detect.NO
    if n >= 2 and data[1] != 3:
        return Detect.NO
    if n >= 3 and (data[2] > 4 or (kind != HANDSHAKE and data[2] == 0)):
        return Detect.NO
    if n < 5:
        return Detect.MORE
    length = data[3] << 8 | data[4]
    if length == 0 or length > RECORD_LIMIT or (kind == CHANGE_CIPHER_SPEC and length != 1):
        return Detect.NO
    if kind == HANDSHAKE:
        if n < 6:
            return Detect.MORE
        if data[5] in (_SERVER_ONLY if as_client else _CLIENT_ONLY):
            return Detect.NO
        if data[5] in (CLIENT_HELLO, SERVER_HELLO) and n >= 9:
            # The hello's own length must fit what a record stream can carry.
            if data[6] != 0:
                return Detect.NO
    return Detect.MATCH


def detect(client: bytes, server: bytes) -> Detect:
    """MATCH when either direction begins with a TLS record its side could send; NO when
    both have bytes and neither does."""
    c = record_start_state(client, True) if client else None
    s = record_start_state(server, False) if server else None
    if c is Detect.MATCH or s is Detect.MATCH:
        return Detect.MATCH
    if c is Detect.NO and s is Detect.NO:
        return Detect.NO
    if c is Detect.NO and s is None and client[:1] == bytes([HANDSHAKE]):
        return Detect.NO    # a server's hello sent by our "client": roles are the other way
    if s is Detect.NO and c is None and server[:1] == bytes([HANDSHAKE]):
        return Detect.NO
    return Detect.MORE


# -- hello parsing -----------------------------------------------------------------------

class _Cursor:
    """Bounds-checked reads; raises IndexError on a short field (caught by the caller)."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise IndexError(f"field of {n} bytes runs past the end")
        value = self.data[self.pos:self.pos + n]
        self.pos += n
        return value

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        b = self.take(2)
        return b[0] << 8 | b[1]

    def vector(self, size_bytes: int) -> _Cursor:
        n = self.u8() if size_bytes == 1 else self.u16()
        sub = _Cursor(self.data, self.pos, self.pos + n)
        if sub.end > self.end:
            raise IndexError(f"vector of {n} bytes runs past the end")
        self.pos += n
        return sub

    def left(self) -> int:
        return self.end - self.pos


def _extensions(cur: _Cursor) -> list[tuple[int, _Cursor]]:
    if not cur.left():
        return []
    block = cur.vector(2)
    out = []
    while block.left():
        kind = block.u16()
        out.append((kind, block.vector(2)))
    return out


def _protocols(cur: _Cursor) -> list[str]:
    names = cur.vector(2)
    out: list[str] = []
    while names.left():
        item = names.vector(1)
        out.append(item.data[item.pos:item.end].decode("ascii", "replace"))
    return out


def parse_client_hello(body: bytes) -> dict[str, Any]:
    cur = _Cursor(body)
    legacy = cur.u16()
    cur.take(32)
    cur.vector(1)                                   # session id
    suites = cur.vector(2)
    count = sum(1 for i in range(suites.pos, suites.end - 1, 2)
                if not _grease(body[i] << 8 | body[i + 1]))
    cur.vector(1)                                   # compression methods
    sni: str | None = None
    alpn: list[str] = []
    offered = legacy
    for kind, ext in _extensions(cur):
        if kind == 0:                               # server_name
            names = ext.vector(2)
            while names.left():
                name_type = names.u8()
                name = names.vector(2)
                if name_type == 0 and sni is None:
                    sni = body[name.pos:name.end].decode("ascii", "replace")
        elif kind == 16:                            # application_layer_protocol_negotiation
            alpn = _protocols(ext)
        elif kind == 43:                            # supported_versions
            versions = ext.vector(1)
            real = [v for v in (versions.u16() for _ in range(versions.left() // 2))
                    if not _grease(v)]
            if real:
                offered = max(real, key=lambda v: (v >> 8 != 0x7F, v))
    return {"sni": sni, "alpn": alpn, "version": version_name(offered),
            "legacy_version": version_name(legacy), "cipher_suites": count}


def parse_server_hello(body: bytes) -> tuple[dict[str, Any], int, bool]:
    """(response fields, the negotiated version number, is a HelloRetryRequest)."""
    cur = _Cursor(body)
    legacy = cur.u16()
    random = cur.take(32)
    cur.vector(1)
    suite = cur.u16()
    cur.u8()
    selected = legacy
    alpn: str | None = None
    for kind, ext in _extensions(cur):
        if kind == 43:
            selected = ext.u16()
        elif kind == 16:
            names = _protocols(ext)
            alpn = names[0] if names else None
    fields = {"version": version_name(selected), "cipher": cipher_name(suite), "alpn": alpn}
    return fields, selected, random == HRR_RANDOM


# -- per direction -----------------------------------------------------------------------

class _Side:
    """Record framing and handshake reassembly of one direction."""

    __slots__ = ("hdr", "remaining", "kind", "plain", "lost", "bytes", "chunks", "encrypted",
                 "hs_hdr", "hs_type", "hs_left", "hs_body", "hs_keep", "hs_damaged", "hs_lost",
                 "alert_buf", "first_ts", "first_ref", "first_offset", "last_ts", "last_ref",
                 "gap_bytes", "records")

    def __init__(self) -> None:
        self.hdr = bytearray()          # a record header being collected (< 5 bytes)
        self.remaining = 0              # payload bytes of the current record still to come
        self.kind = 0                   # its content type
        self.plain = False              # its payload is read (cleartext handshake or alert)
        self.lost = False               # framing lost (gap across a header, garbage): count only
        self.bytes = 0
        self.chunks = 0
        self.records = 0
        self.encrypted = False          # sent ChangeCipherSpec
        self.hs_hdr = bytearray()       # handshake message header being collected (< 4 bytes)
        self.hs_type = -1
        self.hs_left = 0                # body bytes of the current handshake message to come
        self.hs_body = bytearray()
        self.hs_keep = False
        self.hs_damaged = False
        self.hs_lost = False            # handshake message framing lost (a gap across a header)
        self.alert_buf = bytearray()
        self.first_ts: int | None = None
        self.first_ref: PacketRef = (0, 0)
        self.first_offset: int | None = None
        self.last_ts = 0
        self.last_ref: PacketRef = (0, 0)
        self.gap_bytes = 0


class TlsSession:
    def __init__(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> None:
        self._flow = flow
        self._emit = emit
        self._sides = (_Side(), _Side())
        self._request: dict[str, Any] | None = None
        self._response: dict[str, Any] | None = None
        self._version = 0               # negotiated (ServerHello), 0 until seen
        self._hrr = False
        self._alert: dict[str, Any] | None = None
        self._fatal: tuple[int, str] | None = None     # (code, sender)
        self._notes: list[str] = []
        self._hello_gap = False         # a gap before the hellos were both seen
        self._handshake_end: tuple[int, PacketRef] | None = None
        self._server_flight: tuple[int, PacketRef] | None = None
        self._first_app: tuple[int, PacketRef] | None = None
        self._client_encrypted_data = False
        self._done = False

    # -- session interface ---------------------------------------------------------------
    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        side = self._sides[direction]
        n = len(data)
        if side.first_ts is None:
            side.first_ts, side.first_ref, side.first_offset = ts_ns, ref, offset
        side.bytes += n
        side.chunks += 1
        side.last_ts, side.last_ref = ts_ns, ref
        if side.lost:
            return
        pos = 0
        while pos < n:
            if side.remaining:
                take = min(side.remaining, n - pos)
                if side.plain:
                    self._payload(direction, side, data[pos:pos + take], ts_ns, ref)
                side.remaining -= take
                pos += take
                if not side.remaining:
                    self._record_end(direction, side, ts_ns, ref)
                continue
            hdr = side.hdr
            need = 5 - len(hdr)
            if need == 5 and n - pos >= 5:
                head = data[pos:pos + 5]
                pos += 5
            else:
                hdr += data[pos:pos + need]
                pos += min(need, n - pos)
                if len(hdr) < 5:
                    break
                head = bytes(hdr)
                hdr.clear()
            if not self._record_start(direction, side, head, ts_ns, ref):
                return

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        side = self._sides[direction]
        side.gap_bytes += length
        if self._request is None or self._response is None:
            self._hello_gap = True
        if side.lost:
            return
        if side.hdr or length > side.remaining:
            side.lost = True
            return
        # Inside the current record's payload: the framing holds.
        if side.plain:
            if side.kind == HANDSHAKE:
                self._hs_skip(side, length)
            else:
                side.alert_buf.clear()
        side.remaining -= length
        if not side.remaining:
            side.plain = False

    def held_bytes(self) -> int:
        """Record and handshake headers being collected, a handshake message being kept."""
        if self._done:
            return 0
        return sum(len(side.hdr) + len(side.hs_hdr) + len(side.hs_body) + len(side.alert_buf)
                   for side in self._sides)

    def on_close(self, ts_ns: int) -> None:
        if self._done:
            return
        self._done = True
        client, server = self._sides
        if client.first_ts is None and server.first_ts is None:
            return
        request = self._request or {"sni": None, "alpn": [], "version": None,
                                    "legacy_version": None, "cipher_suites": None}
        response = self._response
        if self._alert is not None:
            if response is None:
                response = {"version": None, "cipher": None, "alpn": None}
            response["alert"] = self._alert
        elif response is not None:
            response["alert"] = None
        if response is not None:
            error = None
            if self._fatal is not None:
                code, sender = self._fatal
                error = f"fatal alert from {sender}: {ALERTS.get(code, str(code))}"
            response["error"] = error
        notes = list(self._notes)
        if self._request is None and self._response is None:
            notes.append("handshake not captured")
        elif self._request is None:
            notes.append("client hello not captured")
        elif self._response is None and self._alert is None:
            notes.append("server hello not captured")
        gaps = client.gap_bytes + server.gap_bytes
        if gaps:
            notes.append(f"gap: {gaps} bytes not captured "
                         f"(client {client.gap_bytes}, server {server.gap_bytes})")
        if client.lost or server.lost:
            notes.append("record framing lost; later records only counted")
        complete = (self._request is not None and (self._response is not None or
                    self._fatal is not None) and not self._hello_gap)
        end = self._handshake_end or self._server_flight or self._first_app
        if end is None and self._fatal is not None and server.first_ts is not None:
            end = (server.last_ts, server.last_ref)
        starts = [(s.first_ts, s.first_ref) for s in (client, server) if s.first_ts is not None]
        start_ts, first_ref = min(starts)
        last_ref = max(s.last_ref for s in (client, server) if s.first_ts is not None)
        self._emit(Exchange(
            protocol="tls",
            start_ns=start_ts,
            end_ns=end[0] if end is not None else None,
            summary=self._summary(request, response),
            request=request,
            response=response,
            status=self._fatal[0] if self._fatal is not None else None,
            request_size=client.bytes,
            response_size=server.bytes,
            complete=complete,
            first_ref=first_ref,
            last_ref=last_ref,
            client_offset=client.first_offset or 0,
            server_offset=server.first_offset,
            notes=notes,
        ))

    # -- records -------------------------------------------------------------------------
    def _record_start(self, direction: Direction, side: _Side, head: bytes, ts_ns: int,
                      ref: PacketRef) -> bool:
        kind, major, length = head[0], head[1], head[3] << 8 | head[4]
        if (kind < CHANGE_CIPHER_SPEC or kind > HEARTBEAT or major != 3
                or length > RECORD_LIMIT):
            side.lost = True
            self._note(f"malformed: record header {head.hex()} from "
                               f"{'client' if direction == 0 else 'server'}")
            return False
        side.records += 1
        side.kind = kind
        side.remaining = length
        tls13 = self._version == 0x0304
        if kind == HANDSHAKE:
            side.plain = tls13 or not side.encrypted
            if not side.plain:
                side.hs_hdr.clear()
        elif kind == ALERT:
            side.plain = length == 2 and (tls13 or not side.encrypted)
            side.alert_buf.clear()
        else:
            side.plain = False
            if kind == CHANGE_CIPHER_SPEC:
                side.encrypted = True
            elif kind == APPLICATION_DATA:
                self._application_data(direction, ts_ns, ref)
        if length == 0:
            self._record_end(direction, side, ts_ns, ref)
        return True

    def _record_end(self, direction: Direction, side: _Side, ts_ns: int, ref: PacketRef) -> None:
        kind = side.kind
        if direction == Direction.SERVER_TO_CLIENT and self._response is not None:
            if not self._client_encrypted_data and self._version == 0x0304:
                self._server_flight = (ts_ns, ref)
            elif (kind == HANDSHAKE and side.encrypted and not side.plain
                  and self._handshake_end is None):
                self._handshake_end = (ts_ns, ref)   # TLS 1.2: the server's Finished
        if kind == ALERT and side.plain and len(side.alert_buf) == 2:
            self._on_alert(direction, side.alert_buf[0], side.alert_buf[1], ts_ns, ref)
        side.plain = False

    def _application_data(self, direction: Direction, ts_ns: int, ref: PacketRef) -> None:
        if direction == Direction.CLIENT_TO_SERVER:
            self._client_encrypted_data = True
        elif self._first_app is None:
            self._first_app = (ts_ns, ref)

    def _payload(self, direction: Direction, side: _Side, data: bytes, ts_ns: int,
                 ref: PacketRef) -> None:
        if side.kind == ALERT:
            side.alert_buf += data[:2 - len(side.alert_buf)]
            return
        if side.hs_lost:
            return
        pos, n = 0, len(data)
        while pos < n:
            if side.hs_left:
                take = min(side.hs_left, n - pos)
                if side.hs_keep:
                    side.hs_body += data[pos:pos + take]
                side.hs_left -= take
                pos += take
                if not side.hs_left:
                    self._hs_end(direction, side)
                continue
            need = 4 - len(side.hs_hdr)
            side.hs_hdr += data[pos:pos + need]
            pos += min(need, n - pos)
            if len(side.hs_hdr) < 4:
                break
            h = side.hs_hdr
            side.hs_type, side.hs_left = h[0], h[1] << 16 | h[2] << 8 | h[3]
            h.clear()
            side.hs_damaged = False
            side.hs_keep = side.hs_type in (CLIENT_HELLO, SERVER_HELLO)
            if side.hs_keep and side.hs_left > HELLO_LIMIT:
                side.hs_keep = False
                self._note(f"hello of {side.hs_left} bytes not parsed (limit "
                                   f"{HELLO_LIMIT})")
            side.hs_body.clear()
            if not side.hs_left:
                self._hs_end(direction, side)

    def _hs_skip(self, side: _Side, length: int) -> None:
        """A gap of `length` bytes inside a cleartext handshake record: the message it cuts is
        dropped; a gap over a message header loses the handshake framing of that side."""
        if side.hs_lost:
            return
        if side.hs_hdr or length > side.hs_left:
            side.hs_lost = True
            side.hs_body.clear()
            return
        if side.hs_type in (CLIENT_HELLO, SERVER_HELLO):
            self._note("gap inside a hello: not parsed")
        side.hs_keep = False
        side.hs_damaged = True
        side.hs_body.clear()
        side.hs_left -= length

    def _hs_end(self, direction: Direction, side: _Side) -> None:
        kind, body = side.hs_type, bytes(side.hs_body)
        side.hs_body.clear()
        if not side.hs_keep or side.hs_damaged:
            return
        who = "client" if direction == 0 else "server"
        try:
            if kind == CLIENT_HELLO and direction == Direction.CLIENT_TO_SERVER:
                hello = parse_client_hello(body)
                if self._request is None:
                    self._request = hello
            elif kind == SERVER_HELLO and direction == Direction.SERVER_TO_CLIENT:
                fields, version, hrr = parse_server_hello(body)
                if hrr:
                    self._hrr = True
                    return
                if self._response is None:
                    self._response = fields
                    self._version = version
                    if self._hrr:
                        fields["hello_retry"] = True
        except (IndexError, UnicodeDecodeError) as exc:
            self._note(f"malformed: {who} hello: {exc}")

    def _note(self, text: str) -> None:
        if len(self._notes) < NOTES_LIMIT:
            self._notes.append(text)

    def _on_alert(self, direction: Direction, level: int, code: int, ts_ns: int,
                  ref: PacketRef) -> None:
        sender = "client" if direction == 0 else "server"
        alert = {"level": "fatal" if level == 2 else "warning" if level == 1 else str(level),
                 "description": ALERTS.get(code, str(code)), "code": code, "from": sender}
        if level == 2 and self._fatal is None:
            self._fatal = (code, sender)
            self._alert = alert
            if direction == Direction.SERVER_TO_CLIENT and self._handshake_end is None:
                self._handshake_end = (ts_ns, ref)
        elif self._alert is None:
            self._alert = alert

    def _summary(self, request: dict[str, Any], response: dict[str, Any] | None) -> str:
        version = (response or {}).get("version") or request.get("version")
        parts = [version or "TLS"]
        if self._request is None and self._response is None:
            parts.append("(handshake not captured)")
            return " ".join(parts)
        parts.append(request.get("sni") or "(no SNI)")
        alpn = (response or {}).get("alpn")
        if alpn:
            parts.append(f"({alpn})")
        elif request.get("alpn"):
            # TLS 1.3 sends the server's choice encrypted: show what the client offered.
            parts.append(f"(offered {','.join(request['alpn'])})")
        if self._fatal is not None:
            parts.append(f"alert {ALERTS.get(self._fatal[0], self._fatal[0])}")
        return " ".join(parts)


class TlsDissector:
    name = "tls"
    transports = frozenset({"tcp"})
    ports = frozenset({443, 8443, 6443, 10250, 2379, 2380, 9443})
    client_first = True         # ClientHello

    def detect(self, client: bytes, server: bytes) -> Detect:
        return detect(client, server)

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> TlsSession:
        return TlsSession(flow, emit, body_limit)
