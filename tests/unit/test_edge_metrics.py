"""The service map as Prometheus metrics (hub/edgemetrics.py): status classes, the latency
histogram, bounded and monotonic series, and following the feed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from factories import tentry_json
from hub.edgemetrics import BUCKETS, EdgeMetrics, status_class
from hub.events import entry_event, lost_event, status_event
from shark.model import Endpoint
from support.prometheus import parse_prometheus


def entry(src: str = "10.0.0.1", dst: str = "10.0.0.2", port: int = 80, protocol: str = "http",
          status: int | None = 200, elapsed_ms: float | None = 3.0, **extra: Any) -> dict[str, Any]:
    return tentry_json(**{"id": "a:1", "protocol": protocol, "src": Endpoint(src, 40000),
                          "dst": Endpoint(dst, port), "status": status, "elapsed_ms": elapsed_ms,
                          "response": None, **extra})


def requests(samples: dict[tuple[str, str], float]) -> dict[str, float]:
    return {labels: value for (name, labels), value in samples.items() if name == "shark_edge_requests_total"}


def test_status_classes():
    assert status_class(entry(status=200)) == "2xx"
    assert status_class(entry(status=404)) == "4xx"
    assert status_class(entry(status=503)) == "5xx"
    assert status_class(entry(status=None, elapsed_ms=None)) == "unanswered"
    assert status_class(entry(protocol="grpc", status=14)) == "error"
    assert status_class(entry(protocol="grpc", status=0)) == "ok"
    assert status_class(entry(protocol="redis", status=None, response={"error": "ERR wrong type"})) == "error"
    assert status_class(entry(protocol="dns", status=0)) == "ok"


def test_edges_get_series_by_rank_and_keep_them_and_nothing_is_lost():
    metrics = EdgeMetrics(max_edges=2)
    for dst, n in (("10.0.0.2", 5), ("10.0.0.3", 3), ("10.0.0.4", 1)):
        for _ in range(n):
            metrics.observe(entry(dst=dst))
    first = requests(parse_prometheus(metrics.render()))
    # before the scrape no edge had a slot: all 9 were counted as "other"
    assert first == {'src="other",dst="other",protocol="http",status_class="2xx"': 9}
    metrics.observe(entry(dst="10.0.0.2", status=503))
    metrics.observe(entry(dst="10.0.0.4"))
    metrics.observe(entry(dst="10.0.0.5", protocol="redis", status=None, port=6379))
    second = requests(parse_prometheus(metrics.render()))
    assert second == {
        'src="10.0.0.1",dst="10.0.0.2:80",protocol="http",status_class="5xx"': 1,
        'src="other",dst="other",protocol="http",status_class="2xx"': 10,
        'src="other",dst="other",protocol="redis",status_class="ok"': 1}
    # the two busiest got the slots; the third never does while they are taken
    assert set(metrics.edges) == {("10.0.0.1", "10.0.0.2:80", "http"), ("10.0.0.1", "10.0.0.3:80", "http")}
    assert sum(second.values()) == metrics.entries == 12
    for labels, value in first.items():
        assert second.get(labels, 0) >= value        # counters never go down
    samples = parse_prometheus(metrics.render())
    assert samples[("shark_edge_series", "")] == 2 and samples[("shark_edge_entries_total", "")] == 12


def test_candidates_are_bounded():
    metrics = EdgeMetrics(max_edges=1, max_candidates=3)
    for i in range(10):
        metrics.observe(entry(dst=f"10.0.1.{i}"))
    assert len(metrics.waiting) == 3
    metrics.render()
    assert len(metrics.edges) == 1 and len(metrics.waiting) == 2


def test_latency_histogram_is_cumulative():
    metrics = EdgeMetrics(max_edges=0)
    for ms in (0.5, 3, 3, 40, 20_000):
        metrics.observe(entry(elapsed_ms=ms))
    metrics.observe(entry(elapsed_ms=None, status=None))
    samples = parse_prometheus(metrics.render())
    labels = 'src="other",dst="other",protocol="http"'
    bucket = {le: samples[("shark_edge_request_duration_seconds_bucket", f'{labels},le="{le}"')]
              for le in [*map(str, BUCKETS), "+Inf"]}
    assert bucket["0.001"] == 1 and bucket["0.0025"] == 1 and bucket["0.005"] == 3 and bucket["0.05"] == 4
    assert bucket["10.0"] == 4 and bucket["+Inf"] == 5
    assert samples[("shark_edge_request_duration_seconds_count", labels)] == 5
    assert abs(samples[("shark_edge_request_duration_seconds_sum", labels)] - 20.0465) < 1e-9
    assert requests(samples)[f'{labels},status_class="unanswered"'] == 1


def test_follows_the_feed_and_counts_lost():
    readies = []

    class Feed:
        def events(self, q, last_id):
            assert q is None and last_id is None
            return self.gen()

        async def ready(self, q):      # start() returns only once the feed's streams opened
            await asyncio.sleep(0.05)
            readies.append(q)

        async def gen(self):
            yield entry_event(json.dumps(entry()).encode(), "a@x:1")
            yield status_event("a", "http://a:8897", True, None)
            yield lost_event(4)
            yield lost_event(None, "a worker restarted")      # how many is not known: not counted
            yield entry_event(json.dumps(entry(status=500)).encode(), "a@x:2")
            await asyncio.Event().wait()      # a live feed: nothing more for now

    async def go() -> EdgeMetrics:
        metrics = EdgeMetrics()
        await metrics.start(Feed())
        assert readies == [None]
        await metrics.start(Feed())           # once only
        assert readies == [None]
        while metrics.entries < 2:
            await asyncio.sleep(0.01)
        await metrics.stop()
        return metrics
    metrics = asyncio.run(go())
    assert (metrics.entries, metrics.lost) == (2, 4)
    assert metrics.other["http"].classes == {"2xx": 1, "5xx": 1}
