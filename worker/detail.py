"""One entry in full: its packets read back from the PCAP store and dissected again with bodies.

Raw packets are what is stored; full dissection happens here, on demand. The index row says
which packets (first..last ref) and which stream bytes (TCP sequence numbers where the request
and the response begin) belong to the entry, so nothing else of the store is read.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from shark.model import Body, Entry, decode_entry
from worker.assembler import Assembler
from worker.dissectors import registry
from worker.dissectors.base import Emit, Exchange, FlowInfo, Session
from worker.dissectors.upgrades import UPGRADES
from worker.packet import decode
from worker.redact import Redactor
from worker.sources.ebpf.synth import is_synthesized
from worker.store.index import IndexRow
from worker.store.segments import read_range

_TEXT_TYPES = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "csv", "html")


class _Ignore:
    """A session for flows other than the entry's (none are fed, but be safe)."""

    def on_data(self, *args: object) -> None: ...
    def on_gap(self, *args: object) -> None: ...
    def on_close(self, *args: object) -> None: ...
    def held_bytes(self) -> int: return 0


def flow_of(row: IndexRow) -> FlowInfo:
    def packed(ip: str) -> bytes:
        return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    return FlowInfo(row.transport, packed(row.client_ip), row.client_port,
                    packed(row.server_ip), row.server_port)


class _TlsFlag(msgspec.Struct):
    tls: bool = False


def entry_packets(storage_dir: Path, row: IndexRow) -> Iterator[tuple[int, int, bytes, int]]:
    """(linktype, ts_ns, data, wirelen) of the entry's packets, both directions, in store order.
    An entry from eBPF TLS cleartext gets the synthesized packets of its 5-tuple, any other
    entry the captured ones (the two share 5-tuples). Raises SegmentEvicted when they are no
    longer stored."""
    flow = flow_of(row)
    proto = 6 if flow.transport == "tcp" else 17
    forward = (flow.client_ip, flow.client_port, flow.server_ip, flow.server_port)
    backward = (flow.server_ip, flow.server_port, flow.client_ip, flow.client_port)
    tls = msgspec.json.decode(row.entry_json, type=_TlsFlag).tls
    for _ref, linktype, ts_ns, data, wirelen in read_range(
            storage_dir, (row.first_seg, row.first_off), (row.last_seg, row.last_off)):
        decoded = decode(linktype, data)
        if decoded is None or decoded.proto != proto:
            continue
        key = (decoded.src, decoded.sport, decoded.dst, decoded.dport)
        if (key == forward or key == backward) and is_synthesized(linktype, data) == tls:
            yield linktype, ts_ns, data, wirelen


def _body(data: bytes, content_type: str, limit: int, size: int, content_encoding: str) -> Body:
    truncated = size > len(data) or len(data) > limit
    data = data[:limit]
    looks_text = any(t in content_type for t in _TEXT_TYPES) or not content_type
    if looks_text:
        try:
            return Body(data=data.decode("utf-8"), size=size, truncated=truncated,
                        content_encoding=content_encoding)
        except UnicodeDecodeError:
            pass
    return Body(data=base64.b64encode(data).decode("ascii"), encoding="base64", size=size,
                truncated=truncated, content_encoding=content_encoding)


def _with_body(message: dict, body: bytes | None, limit: int) -> dict:
    if body is None:
        return message
    size = message.get("content_length") or len(body)
    encoding = str(message.get("headers", {}).get("content-encoding", ""))
    content_type = str(message.get("content_type") or "")
    return {**message, "body": _body(body, content_type, limit, max(size, len(body)), encoding)}


def _likeness(exchange: Exchange, entry: Entry) -> tuple[bool, bool, bool]:
    """How surely a re-dissected exchange is the stored entry: the same stream (HTTP/2), it
    starts when the entry does, and where the anchored stream starts. Several exchanges can
    share the packets read back: DNS queries on one socket, AMQP channels, MQTT packet ids,
    HTTP/2 streams."""
    stream = entry.request.get("stream_id")
    same_stream = stream is None or exchange.request.get("stream_id") == stream
    same_start = abs(exchange.start_ns / 1e9 - entry.ts) < 1e-6
    at_anchor = exchange.client_offset == 0 or exchange.server_offset == 0
    return same_stream, same_start, at_anchor


def _dissector_for(protocol: str) -> Callable[[FlowInfo, Emit, int], Session] | None:
    """A session factory for the stored entry's protocol: a registered dissector that makes
    it (HTTP/2 makes http2 and grpc), or what an HTTP upgrade hands over to (websocket)."""
    for dissector in registry():
        if protocol in getattr(dissector, "protocols", (dissector.name,)):
            return dissector.session
    return UPGRADES.get(protocol)


def _merge(stored: dict[str, Any], again: dict[str, Any], body: bytes | None,
           limit: int) -> dict[str, Any]:
    """The stored fields (decoded with the connection's full state, e.g. HTTP/2 header
    tables) plus the body found again."""
    if "body" in again:   # a dissector that renders its own body (gRPC: protobuf messages)
        return {**stored, "body": again["body"]}
    return _with_body(stored, body, limit)


def load_detail(storage_dir: Path, row: IndexRow, body_limit: int,
                redactor: Redactor | None = None) -> Entry:
    """The stored summary entry with its bodies, re-dissected from the stored packets (the
    stored fields were redacted when indexed; the bodies found again are redacted here)."""
    entry = _load_detail(storage_dir, row, body_limit)
    if redactor is not None:
        redactor.detail(entry)
    return entry


def _load_detail(storage_dir: Path, row: IndexRow, body_limit: int) -> Entry:
    entry = decode_entry(row.entry_json)
    make_session = _dissector_for(row.protocol)
    if make_session is None:
        return entry
    flow = flow_of(row)
    exchanges: list[Exchange] = []

    def open_session(seen: FlowInfo) -> Session:
        if seen != flow:
            return _Ignore()
        return make_session(flow, exchanges.append, body_limit)

    assembler = Assembler(open_session)
    assembler.anchor(flow, row.client_seq if flow.transport == "tcp" else None,
                     row.server_seq if flow.transport == "tcp" else None)
    last_ts = 0
    for linktype, ts_ns, data, _wirelen in entry_packets(storage_dir, row):
        decoded = decode(linktype, data)
        if decoded is not None:
            assembler.packet(ts_ns, (0, 0), decoded)
            last_ts = ts_ns
            if any(all(_likeness(e, entry)) and e.response is not None and e.complete
                   for e in exchanges):
                break
    assembler.close_all(last_ts)
    if not exchanges:
        return entry
    exchange = max(exchanges, key=lambda e: _likeness(e, entry))
    entry.request = _merge(entry.request, exchange.request, exchange.request_body, body_limit)
    if exchange.response is not None and entry.response is not None:
        entry.response = _merge(entry.response, exchange.response, exchange.response_body,
                                body_limit)
    return entry
