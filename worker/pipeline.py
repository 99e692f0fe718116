"""The dissection side: follow the PCAP store, reassemble, dissect, index, publish.

Runs as one thread in the API process. It reads packets from the store's segments as the
capture process writes them, so capture never waits for it; when it falls behind so far that
segments are evicted before it reads them, the store tail reports the shed bytes and flows are
reset at the discontinuity.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from shark.model import Endpoint, Entry, Size, encode
from worker.assembler import Assembler
from worker.broadcast import Broadcaster
from worker.dissectors import registry
from worker.dissectors.base import Direction, Exchange, FlowInfo, Session
from worker.dissectors.select import open_session
from worker.packet import decode, ip_text
from worker.store.index import EntryIndex, IndexRow
from worker.store.segments import SegmentTail, list_segments

log = logging.getLogger("shark.worker.pipeline")

READ_BATCH = 2048
EXPIRE_EVERY_NS = 1_000_000_000
PRUNE_EVERY_S = 0.25


class DissectionStats(msgspec.Struct):
    packets: int = 0
    not_tcp_udp: int = 0
    entries: int = 0
    lag_bytes: int = 0
    lag_seconds: float = 0.0
    shed_segments: int = 0
    shed_bytes: int = 0
    discontinuities: int = 0
    errors: int = 0
    last_error: str = ""
    caught_up: bool = False       # everything stored so far has been dissected


def entry_from_exchange(seq: int, node: str, flow: FlowInfo, exchange: Exchange,
                        names: dict[bytes, str]) -> Entry:
    client = names.get(flow.client_ip) or names.setdefault(flow.client_ip, ip_text(flow.client_ip))
    server = names.get(flow.server_ip) or names.setdefault(flow.server_ip, ip_text(flow.server_ip))
    elapsed = None
    if exchange.end_ns is not None:
        elapsed = round(max(0, exchange.end_ns - exchange.start_ns) / 1e6, 3)
    return Entry(
        id=f"{node}:{seq}", node=node, protocol=exchange.protocol,
        ts=exchange.start_ns / 1e9, elapsed_ms=elapsed,
        src=Endpoint(ip=client, port=flow.client_port),
        dst=Endpoint(ip=server, port=flow.server_port),
        summary=exchange.summary, status=exchange.status,
        request=exchange.request, response=exchange.response,
        size=Size(request=exchange.request_size, response=exchange.response_size),
        complete=exchange.complete,
    )


class Pipeline:
    def __init__(self, storage_dir: Path, index: EntryIndex, node: str, broadcaster: Broadcaster,
                 capture_finished: Callable[[], bool]) -> None:
        self._storage_dir = storage_dir
        self._index = index
        self._node = node
        self._broadcaster = broadcaster
        self._capture_finished = capture_finished
        self._tail = SegmentTail(storage_dir, index.cursor())
        self._pending: list[tuple[FlowInfo, Exchange, int | None, int | None]] = []
        self._assembler = Assembler(self._open_session)
        self._dissectors = registry()
        self._next_seq = index.max_seq() + 1
        self._names: dict[bytes, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shark-dissect", daemon=True)
        self._closed_at_end = False
        self._last_ts = 0
        self._current_ref: tuple[int, int] = (0, 0)
        self._written_cursor = index.cursor()
        self.stats = DissectionStats()

    # -- sessions ---------------------------------------------------------------------------
    def _open_session(self, flow: FlowInfo) -> Session:
        # The packet that opened the flow (its SYN, when seen): the connection's first
        # exchange starts its packet range there, so its pcap carries the handshake.
        flow_first_ref = self._current_ref

        def emit(exchange: Exchange) -> None:
            if exchange.client_offset == 0 and flow_first_ref < exchange.first_ref:
                exchange.first_ref = flow_first_ref
            # Offsets are per direction of the session; when the selector swapped the
            # assembler's guessed roles, its client is the assembler's server.
            session_flow = selector.session_flow
            to_server, to_client = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
            if selector.swapped:
                to_server, to_client = to_client, to_server
            seq_of = self._assembler.seq_of
            client_seq = seq_of(flow, to_server, exchange.client_offset)
            server_seq = None
            if exchange.server_offset is not None:
                server_seq = seq_of(flow, to_client, exchange.server_offset)
            self._pending.append((session_flow, exchange, client_seq, server_seq))
        selector = open_session(flow, emit, self._dissectors)
        return selector

    # -- thread -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        last_prune = 0.0
        last_expire_ns = 0
        while not self._stop.is_set():
            try:
                worked = self._step()
                now = time.monotonic()
                if now - last_prune > PRUNE_EVERY_S:
                    last_prune = now
                    self._prune()
                if not worked:
                    wall_ns = time.time_ns()
                    if wall_ns - last_expire_ns > EXPIRE_EVERY_NS and not self._capture_finished():
                        last_expire_ns = wall_ns
                        self._assembler.expire(wall_ns)
                        self._flush(self._tail.position)
                    self._stop.wait(0.02)
            except Exception as error:  # one bad batch must not stop dissection
                self.stats.errors += 1
                self.stats.last_error = f"{type(error).__name__}: {error}"
                log.exception("dissection error")
                self._pending.clear()
                self._stop.wait(0.1)

    def _step(self) -> bool:
        tail = self._tail
        batch = tail.read(READ_BATCH)
        if tail.take_discontinuity():
            self.stats.discontinuities += 1
            self._assembler.close_all(self._last_ts)
        shed = tail.shed_segments, tail.shed_bytes
        self.stats.shed_segments, self.stats.shed_bytes = shed
        self.stats.lag_bytes = tail.lag_bytes()
        if not batch:
            self.stats.caught_up = True
            self.stats.lag_seconds = 0.0
            if self._capture_finished() and not self._closed_at_end:
                # End of a replayed file: flush what is pending as incomplete exchanges.
                self._closed_at_end = True
                self._assembler.close_all(self._last_ts)
                self._flush(tail.position)
            return False
        self.stats.caught_up = False
        packet = self._assembler.packet
        not_ip = 0
        last_expire = self._last_ts
        for ref, linktype, ts_ns, data, _wirelen in batch:
            decoded = decode(linktype, data)
            if decoded is None:
                not_ip += 1
                continue
            self._current_ref = ref
            packet(ts_ns, ref, decoded)
            if ts_ns - last_expire > EXPIRE_EVERY_NS:
                self._assembler.expire(ts_ns)
                last_expire = ts_ns
        self._last_ts = batch[-1][2]
        self.stats.packets += len(batch)
        self.stats.not_tcp_udp += not_ip
        self.stats.lag_seconds = max(0.0, time.time() - self._last_ts / 1e9) if self.stats.lag_bytes else 0.0
        self._flush(batch[-1][0])
        return True

    def _flush(self, cursor: tuple[int, int] | None) -> None:
        pending, self._pending = self._pending, []
        rows: list[IndexRow] = []
        for flow, exchange, client_seq, server_seq in pending:
            seq = self._next_seq
            self._next_seq += 1
            entry = entry_from_exchange(seq, self._node, flow, exchange, self._names)
            rows.append(IndexRow(
                seq=seq, ts=entry.ts, protocol=entry.protocol, entry_json=encode(entry),
                first_seg=exchange.first_ref[0], first_off=exchange.first_ref[1],
                last_seg=exchange.last_ref[0], last_off=exchange.last_ref[1],
                transport=flow.transport, client_ip=entry.src.ip, client_port=flow.client_port,
                server_ip=entry.dst.ip, server_port=flow.server_port,
                client_offset=exchange.client_offset, server_offset=exchange.server_offset,
                client_seq=client_seq, server_seq=server_seq,
            ))
        if rows or (cursor is not None and cursor != self._written_cursor):
            self._index.add(rows, cursor)
            self._written_cursor = cursor
        if rows:
            self.stats.entries += len(rows)
            self._broadcaster.publish(rows)

    def _prune(self) -> None:
        segments = list_segments(self._storage_dir)
        if segments:
            self._index.prune_segments_before(segments[0].id)

    def assembler_stats(self) -> dict:
        return msgspec.to_builtins(self._assembler.stats)
