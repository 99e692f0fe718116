"""One entry in full: its packets read back from the PCAP store and dissected again with bodies.

Raw packets are what is stored; full dissection happens here, on demand. The index row says
which packets (first..last ref) and which stream bytes (TCP sequence numbers where the request
and the response begin) belong to the entry, so nothing else of the store is read.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path

from shark.model import Body, Entry, decode_entry
from worker.assembler import Assembler
from worker.dissectors import registry
from worker.dissectors.base import Exchange, FlowInfo, Session
from worker.packet import decode
from worker.store.index import IndexRow
from worker.store.segments import read_range

_TEXT_TYPES = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "csv", "html")


class _Ignore:
    """A session for flows other than the entry's (none are fed, but be safe)."""

    def on_data(self, *args: object) -> None: ...
    def on_gap(self, *args: object) -> None: ...
    def on_close(self, *args: object) -> None: ...


def flow_of(row: IndexRow) -> FlowInfo:
    def packed(ip: str) -> bytes:
        return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    return FlowInfo(row.transport, packed(row.client_ip), row.client_port,
                    packed(row.server_ip), row.server_port)


def entry_packets(storage_dir: Path, row: IndexRow) -> Iterator[tuple[int, int, bytes, int]]:
    """(linktype, ts_ns, data, wirelen) of the entry's packets, both directions, in store order.
    Raises SegmentEvicted when they are no longer stored."""
    flow = flow_of(row)
    proto = 6 if flow.transport == "tcp" else 17
    forward = (flow.client_ip, flow.client_port, flow.server_ip, flow.server_port)
    backward = (flow.server_ip, flow.server_port, flow.client_ip, flow.client_port)
    for _ref, linktype, ts_ns, data, wirelen in read_range(
            storage_dir, (row.first_seg, row.first_off), (row.last_seg, row.last_off)):
        decoded = decode(linktype, data)
        if decoded is None or decoded.proto != proto:
            continue
        key = (decoded.src, decoded.sport, decoded.dst, decoded.dport)
        if key == forward or key == backward:
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


def load_detail(storage_dir: Path, row: IndexRow, body_limit: int) -> Entry:
    """The stored summary entry with request and response re-dissected in full (bodies)."""
    entry = decode_entry(row.entry_json)
    dissector = next((d for d in registry() if d.name == row.protocol), None)
    if dissector is None:
        return entry
    flow = flow_of(row)
    exchanges: list[Exchange] = []

    def open_session(seen: FlowInfo) -> Session:
        if seen != flow:
            return _Ignore()
        return dissector.session(flow, exchanges.append, body_limit)

    assembler = Assembler(open_session)
    assembler.anchor(flow, row.client_seq if flow.transport == "tcp" else None,
                     row.server_seq if flow.transport == "tcp" else None)
    last_ts = 0
    for linktype, ts_ns, data, _wirelen in entry_packets(storage_dir, row):
        decoded = decode(linktype, data)
        if decoded is not None:
            assembler.packet(ts_ns, (0, 0), decoded)
            last_ts = ts_ns
            if any(abs(e.start_ns / 1e9 - entry.ts) < 1e-6 and e.response is not None
                   and e.complete for e in exchanges):
                break
    assembler.close_all(last_ts)
    if not exchanges:
        return entry
    # Several exchanges can share the packets read (DNS queries on one socket answered out
    # of order): the entry's own starts when it does.
    exchange = next((e for e in exchanges if abs(e.start_ns / 1e9 - entry.ts) < 1e-6),
                    exchanges[0])
    entry.request = _with_body(exchange.request, exchange.request_body, body_limit)
    if exchange.response is not None:
        entry.response = _with_body(exchange.response, exchange.response_body, body_limit)
    return entry
