"""The service map as Prometheus metrics: per edge (src, dst, protocol) entry counts by status
class and a latency histogram, counted from the hub's live feed of every entry.

Cardinality is bounded: at most `max_edges` edges get series of their own. At each scrape the
free slots go to the busiest edges still waiting (by entries seen so far), and an edge keeps its
series for the hub's life, so no counter ever moves between series (Prometheus needs them
monotonic). Whatever an edge counted before it got a slot, and every edge without one, is
counted in `src="other", dst="other"` with its protocol (protocols are a short fixed list). At
most `max_candidates` waiting edges are remembered for ranking; later ones go to "other".
The endpoint names are those of /servicemap (hub/servicemap.py), as are the errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from hub.events import HubEvent, Lost
from hub.servicemap import HTTP_LIKE, endpoint_id, is_error
from hub.stream import Feed

log = logging.getLogger("shark.hub")

OTHER = "other"
# seconds; request start to response end (elapsed_ms)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "ok", "error", "unanswered")
DEFAULT_MAX_EDGES = 50
DEFAULT_MAX_CANDIDATES = 10_000

Edge = tuple[str, str, str]     # src, dst, protocol


def status_class(entry: dict[str, Any]) -> str:
    """1xx-5xx for HTTP-like protocols with a status; else error or ok (as /servicemap decides
    errors); unanswered when no response came (elapsed_ms null)."""
    elapsed = entry.get("elapsed_ms")
    if not isinstance(elapsed, (int, float)) or isinstance(elapsed, bool):
        return "unanswered"
    status = entry.get("status")
    if entry.get("protocol") in HTTP_LIKE and isinstance(status, int) and 100 <= status <= 599:
        return f"{status // 100}xx"
    return "error" if is_error(entry) else "ok"


def edge_of(entry: dict[str, Any]) -> Edge:
    src = entry.get("src") if isinstance(entry.get("src"), dict) else {}
    dst = entry.get("dst") if isinstance(entry.get("dst"), dict) else {}
    return endpoint_id(src, False), endpoint_id(dst, True), str(entry.get("protocol") or "unknown")


@dataclass
class Series:
    classes: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))   # not cumulative
    answered: int = 0
    seconds: float = 0.0

    def add(self, cls: str, elapsed_s: float | None) -> None:
        self.classes[cls] = self.classes.get(cls, 0) + 1
        if elapsed_s is None:
            return
        self.answered += 1
        self.seconds += elapsed_s
        for i, bound in enumerate(BUCKETS):
            if elapsed_s <= bound:
                self.buckets[i] += 1
                break


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(round(value, 9))


class EdgeMetrics:
    def __init__(self, max_edges: int = DEFAULT_MAX_EDGES, max_candidates: int = DEFAULT_MAX_CANDIDATES) -> None:
        self.max_edges = max_edges
        self.max_candidates = max_candidates
        self.edges: dict[Edge, Series] = {}          # with series of their own
        self.other: dict[str, Series] = {}           # per protocol
        self.waiting: dict[Edge, int] = {}           # entries seen, for ranking
        self.entries = 0
        self.lost = 0
        self._task: asyncio.Task[None] | None = None

    def observe(self, entry: dict[str, Any]) -> None:
        self.entries += 1
        edge = edge_of(entry)
        elapsed = entry.get("elapsed_ms")
        seconds = float(elapsed) / 1000 if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool) else None
        series = self.edges.get(edge)
        if series is None:
            if edge in self.waiting or len(self.waiting) < self.max_candidates:
                self.waiting[edge] = self.waiting.get(edge, 0) + 1
            series = self.other.setdefault(edge[2], Series())
        series.add(status_class(entry), seconds)

    def admit(self) -> None:
        """Give free slots to the busiest waiting edges (sticky)."""
        free = self.max_edges - len(self.edges)
        if free <= 0 or not self.waiting:
            return
        for edge, _ in sorted(self.waiting.items(), key=lambda item: (-item[1], item[0]))[:free]:
            del self.waiting[edge]
            self.edges[edge] = Series()

    def render(self) -> str:
        self.admit()
        rows: list[tuple[str, Series]] = [
            (f'src="{_label(s)}",dst="{_label(d)}",protocol="{_label(p)}"', series)
            for (s, d, p), series in sorted(self.edges.items())]
        rows += [(f'src="{OTHER}",dst="{OTHER}",protocol="{_label(p)}"', series)
                 for p, series in sorted(self.other.items())]
        lines = ["# HELP shark_edge_requests_total Entries per service-map edge (src, dst, protocol) by "
                 "status class (1xx-5xx for HTTP-like protocols; ok/error for others; unanswered).",
                 "# TYPE shark_edge_requests_total counter"]
        for labels, series in rows:
            for cls in STATUS_CLASSES:
                if cls in series.classes:
                    lines.append(f'shark_edge_requests_total{{{labels},status_class="{cls}"}} {series.classes[cls]}')
        lines += ["# HELP shark_edge_request_duration_seconds Request start to response end per service-map edge "
                  "(answered entries).",
                  "# TYPE shark_edge_request_duration_seconds histogram"]
        for labels, series in rows:
            total = 0
            for bound, count in zip(BUCKETS, series.buckets):
                total += count
                lines.append(f'shark_edge_request_duration_seconds_bucket{{{labels},le="{bound}"}} {total}')
            lines += [f'shark_edge_request_duration_seconds_bucket{{{labels},le="+Inf"}} {series.answered}',
                      f"shark_edge_request_duration_seconds_sum{{{labels}}} {_number(series.seconds)}",
                      f"shark_edge_request_duration_seconds_count{{{labels}}} {series.answered}"]
        lines += ["# HELP shark_edge_series Edges with series of their own (at most the hub's --metrics-edges).",
                  "# TYPE shark_edge_series gauge",
                  f"shark_edge_series {len(self.edges)}",
                  "# HELP shark_edge_entries_total Entries counted into the edge metrics.",
                  "# TYPE shark_edge_entries_total counter",
                  f"shark_edge_entries_total {self.entries}",
                  "# HELP shark_edge_lost_entries_total Entries the edge metrics missed (the hub's feed "
                  "dropped them, or a worker could not stream them).",
                  "# TYPE shark_edge_lost_entries_total counter",
                  f"shark_edge_lost_entries_total {self.lost}"]
        return "\n".join(lines) + "\n"

    # -- feeding from the hub's live feed ------------------------------------------------
    async def start(self, feed: Feed) -> None:
        """Follow every entry of `feed` (hub.stream.Feed) from now on; once. The first call
        returns when the feed's streams from the workers have opened (or failed; at most
        Feed.ready's timeout), as /stream answers: an entry captured after the first scrape is
        counted. Before, the scrape answered at once and the first entries after it could be
        indexed before the worker's stream opened, and never counted."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow(feed.events(None, None)))
            await asyncio.sleep(0)      # the task's first step joins the feed's group (no await before)
            await feed.ready(None)

    async def _follow(self, events: AsyncIterator[HubEvent]) -> None:
        try:
            async for event in events:
                if isinstance(event.data, Lost):
                    self.lost += event.data.lost or 0
                elif event.kind == "entry" and isinstance(event.data, bytes):
                    try:
                        entry = json.loads(event.data)
                    except ValueError:
                        continue
                    if isinstance(entry, dict):
                        self.observe(entry)
        except Exception:  # noqa: BLE001 - metrics must never take the hub down
            log.exception("edge metrics stopped following the feed")
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
