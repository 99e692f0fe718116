"""GET /metrics: Prometheus text exposition (version 0.0.4) from the workers' /status, as the
pool last polled it, and the hub's own stream counters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from hub.events import HubEvent, Lost

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StreamCounters:
    """Live SSE/WebSocket clients and events they lost (oldest dropped from a full queue)."""

    def __init__(self) -> None:
        self.sse_clients = 0
        self.ws_clients = 0
        self.lost_total = 0

    async def track(self, batches: AsyncIterator[list[HubEvent]], kind: str = "sse",
                    ) -> AsyncIterator[list[HubEvent]]:
        """Pass a client's batches of events through, counting the client and its `lost` events."""
        attr = f"{kind}_clients"
        setattr(self, attr, getattr(self, attr) + 1)
        try:
            async for batch in batches:
                for event in batch:
                    if isinstance(event.data, Lost) and event.data.lost:
                        self.lost_total += event.data.lost
                yield batch
        finally:
            setattr(self, attr, getattr(self, attr) - 1)
            aclose = getattr(batches, "aclose", None)
            if aclose is not None:
                await aclose()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return None


def _get(status: dict[str, Any] | None, *path: str) -> Any:
    value: Any = status
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


WORKER_METRICS = (
    # name, type, help, path in /status
    ("shark_worker_packets_received_total", "counter", "Packets the worker's capture received.",
     ("capture", "received")),
    ("shark_worker_packets_dropped_total", "counter", "Packets dropped by the worker's capture (buffer full).",
     ("capture", "dropped")),
    ("shark_worker_capture_running", "gauge", "Whether the worker's capture process runs (1) or not (0).",
     ("capture", "running")),
    ("shark_worker_capture_degraded", "gauge",
     "Whether the worker's capture is degraded (1): see degraded_reasons in its /status.",
     ("capture", "degraded")),
    ("shark_worker_packets_not_stored_total", "counter",
     "Packets the worker captured but could not store (the disk refused them).",
     ("capture", "dropped_on_write")),
    ("shark_worker_store_write_errors_total", "counter",
     "Writes the worker's disk refused (ENOSPC, EIO, ...), including those cured by evicting.",
     ("store", "write_errors")),
    ("shark_worker_store_evicted_for_space_total", "counter",
     "Segments the worker evicted because its disk was full (not because of the limit).",
     ("store", "evicted_for_space")),
    ("shark_worker_store_bytes", "gauge", "Bytes of PCAP the worker holds.", ("store", "bytes")),
    ("shark_worker_store_limit_bytes", "gauge", "The worker's storage limit in bytes.", ("store", "limit")),
    ("shark_worker_entries", "gauge", "Entries in the worker's index.", ("index", "entries")),
    ("shark_worker_dissection_lag_bytes", "gauge", "Stored bytes not yet dissected by the worker.",
     ("dissection", "lag_bytes")),
    ("shark_worker_dissection_memory_held_bytes", "gauge",
     "Bytes the worker's dissector sessions held at its last check of --dissect-memory.",
     ("dissection", "memory", "held")),
    ("shark_worker_dissection_memory_limit_bytes", "gauge", "The worker's --dissect-memory in bytes.",
     ("dissection", "memory", "limit")),
    ("shark_worker_dissection_memory_cut_sessions_total", "counter",
     "Sessions the worker cut because all of them held more than --dissect-memory.",
     ("dissection", "memory", "cut_sessions")),
    ("shark_worker_dissection_memory_cut_bytes_total", "counter",
     "Bytes the sessions cut for --dissect-memory held when they were cut.",
     ("dissection", "memory", "cut_bytes")),
    ("shark_worker_stream_lost_total", "counter",
     "Entries the worker dropped from its slow /stream clients' queues (the hub's included).",
     ("stream", "lost")),
    ("shark_worker_stream_clients", "gauge", "/stream clients the worker serves (the hub's streams included).",
     ("stream", "clients")),
    ("shark_worker_stream_clients_limit", "gauge", "The worker's --max-stream-clients.",
     ("stream", "max_clients")),
    ("shark_worker_stream_clients_refused_total", "counter",
     "/stream clients the worker turned away: --max-stream-clients were connected.",
     ("stream", "refused")),
)


def render(workers: Iterable[tuple[str, bool | None, dict[str, Any] | None]],
           counters: StreamCounters, feed: Any = None, max_query_rows: int | None = None) -> str:
    """workers: (node label, up, last /status) per worker. A worker's counters are left out
    while it is down (its last values would be stale)."""
    rows = list(workers)
    lines = ["# HELP shark_hub_workers_up Whether the hub's last poll of the worker succeeded (1) or not (0).",
             "# TYPE shark_hub_workers_up gauge"]
    for node, up, _ in rows:
        lines.append(f'shark_hub_workers_up{{node="{_escape(node)}"}} {1 if up else 0}')
    for name, kind, help_, path in WORKER_METRICS:
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for node, up, status in rows:
            value = _number(_get(status, *path)) if up else None
            if value is not None:
                lines.append(f'{name}{{node="{_escape(node)}"}} {value}')
    lines += ["# HELP shark_hub_sse_clients SSE clients connected to the hub's /stream.",
              "# TYPE shark_hub_sse_clients gauge",
              f"shark_hub_sse_clients {counters.sse_clients}",
              "# HELP shark_hub_ws_clients WebSocket clients connected to the hub's /ws.",
              "# TYPE shark_hub_ws_clients gauge",
              f"shark_hub_ws_clients {counters.ws_clients}",
              "# HELP shark_hub_sse_lost_events_total Events dropped from full client queues (SSE and WebSocket).",
              "# TYPE shark_hub_sse_lost_events_total counter",
              f"shark_hub_sse_lost_events_total {counters.lost_total}",
              "# HELP shark_hub_stream_groups Distinct live queries; clients with the same query share one.",
              "# TYPE shark_hub_stream_groups gauge",
              f"shark_hub_stream_groups {len(feed.groups) if feed else 0}",
              "# HELP shark_hub_worker_streams Open /stream connections from the hub to workers (one per query and worker).",
              "# TYPE shark_hub_worker_streams gauge",
              f"shark_hub_worker_streams {feed.upstreams() if feed else 0}",
              "# HELP shark_hub_live_queued_events Events waiting in live clients' queues (each at most the queue's size).",
              "# TYPE shark_hub_live_queued_events gauge",
              f"shark_hub_live_queued_events {feed.queued() if feed else 0}"]
    if feed is not None:
        lines += ["# HELP shark_hub_live_clients_limit Live (SSE + WebSocket) clients the hub serves at once (--max-live-clients).",
                  "# TYPE shark_hub_live_clients_limit gauge",
                  f"shark_hub_live_clients_limit {feed.max_clients}",
                  "# HELP shark_hub_live_clients_refused_total Live clients turned away: the limit was reached.",
                  "# TYPE shark_hub_live_clients_refused_total counter",
                  f"shark_hub_live_clients_refused_total {feed.refused_clients}",
                  "# HELP shark_hub_live_queries_limit Distinct live queries the hub follows at once (--max-live-queries).",
                  "# TYPE shark_hub_live_queries_limit gauge",
                  f"shark_hub_live_queries_limit {feed.max_queries}",
                  "# HELP shark_hub_live_queries_refused_total Live clients turned away: their query would pass the limit.",
                  "# TYPE shark_hub_live_queries_refused_total counter",
                  f"shark_hub_live_queries_refused_total {feed.refused_queries}"]
    if max_query_rows is not None:
        lines += ["# HELP shark_hub_query_rows_limit Rows one query may ask for and the hub hold (--max-query-rows).",
                  "# TYPE shark_hub_query_rows_limit gauge",
                  f"shark_hub_query_rows_limit {max_query_rows}"]
    return "\n".join(lines) + "\n"
