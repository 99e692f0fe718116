"""GET /pcap?q=: the packets of the matching entries, each once, in bounded memory.

An entry's packets are those of its flow between its first and last packet refs. Entries of
one flow can overlap (pipelined or multiplexed requests: HTTP/2 streams), so each flow's spans
are merged first and every merged span is read once: no packet is read twice and no set of
packets seen is kept. Memory is one small Span per matching entry (at most the query's limit),
never one item per packet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import msgspec

from worker.detail import entry_packets
from worker.store.index import IndexRow
from worker.store.segments import SegmentEvicted

Packet = tuple[int, int, bytes, int]     # (linktype, ts_ns, data, wirelen)
_TLS = b'{"tls":true}'
_PLAIN = b"{}"


class _TlsFlag(msgspec.Struct):
    tls: bool = False


class Span(msgspec.Struct, array_like=True):
    """The packet range of one entry, or of several overlapping entries of one flow."""
    first_seg: int
    first_off: int
    last_seg: int
    last_off: int
    flow: tuple[str, str, int, str, int, bool]   # transport, client, port, server, port, tls


def span_of(row: IndexRow) -> Span:
    tls = msgspec.json.decode(row.entry_json, type=_TlsFlag).tls
    return Span(row.first_seg, row.first_off, row.last_seg, row.last_off,
                (row.transport, row.client_ip, row.client_port, row.server_ip, row.server_port, tls))


def collect_spans(rows: Iterable[IndexRow], predicate: Callable[[IndexRow], bool],
                  limit: int) -> list[Span]:
    """Spans of the first `limit` rows that match (rows come newest first)."""
    spans: list[Span] = []
    for row in rows:
        if predicate(row):
            spans.append(span_of(row))
            if len(spans) >= limit:
                break
    return spans


def merge_spans(spans: list[Span]) -> list[Span]:
    """Per flow, overlapping spans become one; the result is in store order."""
    spans = sorted(spans, key=lambda s: (s.flow, s.first_seg, s.first_off))
    merged: list[Span] = []
    for span in spans:
        last = merged[-1] if merged else None
        if last is not None and last.flow == span.flow and \
                (span.first_seg, span.first_off) <= (last.last_seg, last.last_off):
            if (span.last_seg, span.last_off) > (last.last_seg, last.last_off):
                last.last_seg, last.last_off = span.last_seg, span.last_off
            continue
        merged.append(msgspec.structs.replace(span))
    merged.sort(key=lambda s: (s.first_seg, s.first_off))
    return merged


def span_packets(storage_dir: Path, spans: list[Span]) -> Iterator[Packet]:
    """The packets of each merged span, one span after the other; an evicted one is skipped."""
    for span in merge_spans(spans):
        transport, client_ip, client_port, server_ip, server_port, tls = span.flow
        row = IndexRow(seq=0, ts=0.0, protocol="", entry_json=_TLS if tls else _PLAIN,
                       first_seg=span.first_seg, first_off=span.first_off,
                       last_seg=span.last_seg, last_off=span.last_off, transport=transport,
                       client_ip=client_ip, client_port=client_port, server_ip=server_ip,
                       server_port=server_port, client_offset=0, server_offset=None,
                       client_seq=None, server_seq=None)
        try:
            yield from entry_packets(storage_dir, row)
        except SegmentEvicted:
            continue
