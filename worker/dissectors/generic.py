"""The fallback: one "tcp" or "udp" entry per flow no dissector claimed, so nothing captured
is invisible.

Not in registry(): the selector hands it the flows every candidate refused, or that closed
before any claimed them (see worker.dissectors.select). The session keeps counters only (bytes,
chunks and gap bytes per direction, first and last timestamps and refs, the first 32 bytes of
each direction), so a flow that lives for hours costs the same memory as a short one; its
entry comes out when the flow ends (FIN/RST, the assembler's idle timeout, end of capture).

TCP chunks are counted as "segments": the assembler delivers in-order data one segment per
call, except that out-of-order segments it had buffered come out joined. UDP chunks are
datagrams. A flow that carried no payload (a refused connect, a TCP probe) gives no entry.
"""

from __future__ import annotations

from typing import Any

from worker.dissectors.base import Detect, Direction, Emit, Exchange, FlowInfo
from worker.packet import PacketRef, ip_text

FIRST_BYTES = 32


def format_bytes(size: int) -> str:
    """A short human size for summaries: 512 -> "512 B", 1234 -> "1.2 KB", 34000 -> "34 KB"."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.5 or unit == "TB":
            return f"{value:.1f} {unit}" if value < 9.95 else f"{value:.0f} {unit}"
    return f"{size} B"


def endpoint_text(ip: bytes, port: int) -> str:
    text = ip_text(ip)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


class _Counts:
    __slots__ = ("bytes", "chunks", "gap_bytes", "head", "first_ts", "first_ref",
                 "first_offset", "last_ts", "last_ref")

    def __init__(self) -> None:
        self.bytes = 0
        self.chunks = 0
        self.gap_bytes = 0
        self.head = b""
        self.first_ts: int | None = None
        self.first_ref: PacketRef = (0, 0)
        self.first_offset: int | None = None
        self.last_ts = 0
        self.last_ref: PacketRef = (0, 0)


class GenericSession:
    def __init__(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> None:
        self._flow = flow
        self._emit = emit
        self._sides = (_Counts(), _Counts())
        self._gap_ts: int | None = None
        self._done = False

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        side = self._sides[direction]
        if side.first_ts is None:
            side.first_ts, side.first_ref, side.first_offset = ts_ns, ref, offset
        if len(side.head) < FIRST_BYTES:
            side.head += data[:FIRST_BYTES - len(side.head)]
        side.bytes += len(data)
        side.chunks += 1
        side.last_ts, side.last_ref = ts_ns, ref

    def on_skipped(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        """Bytes the selector buffered and dropped while no dissector could tell (captured,
        not lost): they count as bytes of the flow, not as a gap."""
        side = self._sides[direction]
        if side.first_ts is None:
            side.first_ts, side.first_offset = ts_ns, offset
        side.bytes += length
        side.last_ts = max(side.last_ts, ts_ns)

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        self._sides[direction].gap_bytes += length
        if self._gap_ts is None:
            self._gap_ts = ts_ns

    def held_bytes(self) -> int:
        return 0                # counts only

    def on_close(self, ts_ns: int) -> None:
        if self._done:
            return
        self._done = True
        client, server = self._sides
        seen = [s for s in (client, server) if s.first_ts is not None]
        if not seen:
            return       # no payload at all: nothing to show
        flow = self._flow
        unit = "segments" if flow.transport == "tcp" else "datagrams"

        def fields(side: _Counts) -> dict[str, Any]:
            return {"bytes": side.bytes, unit: side.chunks,
                    "first_bytes_hex": side.head.hex() if side.head else None}

        start = min(s.first_ts for s in seen if s.first_ts is not None)
        end = max(s.last_ts for s in seen)
        notes = []
        gaps = client.gap_bytes + server.gap_bytes
        if gaps:
            notes.append(f"gap: {gaps} bytes not captured "
                         f"(client {client.gap_bytes}, server {server.gap_bytes})")
        summary = (f"{flow.transport} {endpoint_text(flow.client_ip, flow.client_port)} → "
                   f"{endpoint_text(flow.server_ip, flow.server_port)} "
                   f"{format_bytes(client.bytes)} / {format_bytes(server.bytes)}")
        self._emit(Exchange(
            protocol=flow.transport,
            start_ns=start,
            end_ns=end,
            summary=summary,
            request=fields(client),
            response=fields(server),
            status=None,
            request_size=client.bytes,
            response_size=server.bytes,
            complete=not gaps,
            first_ref=min(s.first_ref for s in seen),
            last_ref=max(s.last_ref for s in seen),
            client_offset=client.first_offset or 0,
            server_offset=server.first_offset,
            notes=notes,
        ))


class GenericDissector:
    """The fallback for flows no dissector claims; its entries' protocol is the transport."""

    name = "generic"
    transports = frozenset({"tcp", "udp"})
    ports: frozenset[int] = frozenset()
    client_first = False

    def detect(self, client: bytes, server: bytes) -> Detect:
        return Detect.MATCH

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> GenericSession:
        return GenericSession(flow, emit, body_limit)
