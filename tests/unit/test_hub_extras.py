"""The hub's WebSocket feed, service map and Prometheus metrics against mocked workers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from factories import tentry_json
from hub.app import HubSettings, create_app
from hub.metrics import StreamCounters, render
from hub.rowbudget import SCOPE_KEY, RowBudget
from hub.servicemap import build, is_error, percentile
from shark.model import Endpoint
from support.prometheus import parse_prometheus

URLS = ["http://w1:8897", "http://w2:8897"]
LOCAL = "http://127.0.0.1"        # a Host the hub serves (shark/auth.py refuses others)


def entry(node: str, seq: int, ts: float, src: str, dst: str, port: int, **extra) -> dict:
    return tentry_json(**{"id": f"{node}:{seq}", "node": node, "ts": ts, "summary": f"GET /{seq}",
                          "src": Endpoint(src, 40000 + seq), "dst": Endpoint(dst, port),
                          "status": None, "response": None, **extra})


STATUS = {
    "w1": {"node": "a", "capture": {"received": 120, "dropped": 3, "running": True, "degraded": True,
                                    "dropped_on_write": 9},
           "store": {"bytes": 4096, "limit": 1 << 20, "write_errors": 2, "evicted_for_space": 1},
           "index": {"entries": 7}, "stream": {"subscribers": 1, "lost": 5},
           "dissection": {"lag_bytes": 0, "memory": {"limit": 1 << 26, "held": 4000, "cut_sessions": 2,
                                                     "cut_bytes": 70000}}},
    "w2": {"node": "b", "capture": {"received": 5, "dropped": 0}, "store": {"bytes": 100, "limit": 1 << 20},
           "index": {"entries": 1}, "dissection": {"lag_bytes": 12}},
}
ENTRIES = {
    "w1": [entry("a", 2, 20.0, "10.0.0.1", "10.0.0.2", 80, status=503, elapsed_ms=30.0),
           entry("a", 1, 10.0, "10.0.0.1", "10.0.0.2", 80, status=200, elapsed_ms=10.0)],
    "w2": [entry("b", 1, 15.0, "10.0.0.3", "10.0.0.4", 6379, protocol="redis", status=None, elapsed_ms=1.0,
                 response={"error": "ERR unknown command"}),
           entry("b", 2, 16.0, "10.0.0.3", "10.0.0.4", 6379, protocol="redis", status=None, elapsed_ms=None)],
}


def handler(down: set[str] = frozenset()):
    def handle(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path.endswith("/status"):
            return httpx.Response(200, json=STATUS[host])
        if path.endswith("/entries"):
            return httpx.Response(200, content=b"".join(json.dumps(e).encode() + b"\n" for e in ENTRIES[host]))
        if path.endswith("/stream"):
            first = ENTRIES[host][-1]
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=f"event: entry\nid: 1\ndata: {json.dumps(first)}\n\n".encode())
        return httpx.Response(404, json={"error": "not found", "detail": path})
    return handle


def app(down: set[str] = frozenset()):
    return create_app(HubSettings(workers=URLS, poll_interval=60, retries=0, backoff=0.001,
                                  client_options={"transport": httpx.MockTransport(handler(down))}))


# -- service map ---------------------------------------------------------------------------
def test_errors_are_defined_per_protocol():
    assert is_error({"protocol": "http", "status": 500})
    assert not is_error({"protocol": "http", "status": 404})
    assert is_error({"protocol": "grpc", "status": 14})
    assert not is_error({"protocol": "grpc", "status": 0})
    assert is_error({"protocol": "redis", "response": {"error": "ERR"}})
    assert is_error({"protocol": "dns", "status": 3, "response": {"error": "NXDOMAIN"}})
    assert not is_error({"protocol": "dns", "status": 0, "response": {"error": None}})
    assert not is_error({"protocol": "tcp", "response": None})
    assert is_error({"protocol": "postgres", "status": 1, "response": {"error": {"code": "42P01"}}})
    assert is_error({"protocol": "mysql", "status": 1146, "response": {}})
    assert not is_error({"protocol": "mysql", "status": 0, "response": {"rows": 3}})


def test_percentiles_are_nearest_rank():
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def test_servicemap_nodes_and_edges():
    named = entry("c", 1, 1.0, "10.0.0.9", "10.0.0.2", 80, status=200, elapsed_ms=5.0)
    named["src"].update(name="frontend", namespace="shop", kind="pod")
    result = build([e for rows in ENTRIES.values() for e in rows] + [named])
    ids = {n["id"] for n in result["nodes"]}
    assert ids == {"10.0.0.1", "10.0.0.2:80", "10.0.0.3", "10.0.0.4:6379", "shop/frontend"}
    front = next(n for n in result["nodes"] if n["id"] == "shop/frontend")
    assert front == {"id": "shop/frontend", "name": "frontend", "namespace": "shop", "kind": "pod"}
    edges = {(e["source"], e["target"]): e for e in result["edges"]}
    http = edges[("10.0.0.1", "10.0.0.2:80")]
    assert (http["count"], http["errors"], http["error_rate"], http["protocol"]) == (2, 1, 0.5, "http")
    assert (http["p50_ms"], http["p99_ms"]) == (10.0, 30.0)
    redis = edges[("10.0.0.3", "10.0.0.4:6379")]
    assert (redis["count"], redis["errors"], redis["unanswered"], redis["p50_ms"]) == (2, 1, 1, 1.0)
    assert redis["protocols"] == ["redis"]
    assert http["failed"] == redis["failed"] == {"refused": 0, "reset": 0, "timeout": 0, "abandoned": 0}


def test_servicemap_counts_failed_connections_per_edge():
    refused = entry("f", 1, 1.0, "10.0.0.1", "10.0.0.2", 5432)
    refused.update(protocol="tcp", elapsed_ms=None, tcp={"failure": "refused", "rst": "server"})
    reset = entry("f", 2, 2.0, "10.0.0.1", "10.0.0.2", 5432, elapsed_ms=3.0)
    reset.update(protocol="postgres", status=None, tcp={"failure": "reset", "rst": "server"})
    fine = entry("f", 3, 3.0, "10.0.0.1", "10.0.0.2", 5432, elapsed_ms=1.0)
    fine.update(protocol="postgres", status=0, tcp={"failure": None, "rst": None})
    (edge,) = build([refused, reset, fine])["edges"]
    assert edge["failed"] == {"refused": 1, "reset": 1, "timeout": 0, "abandoned": 0}
    assert (edge["count"], edge["errors"], edge["unanswered"]) == (3, 2, 1)


def test_servicemap_route_is_partial_and_validates_q():
    with TestClient(app(down={"w2"}), base_url=LOCAL) as client:
        body = client.get("/api/v1/servicemap").json()
        assert [(e["source"], e["target"], e["count"]) for e in body["edges"]] == [("10.0.0.1", "10.0.0.2:80", 2)]
        assert {w["url"]: w["ok"] for w in body["workers"]} == {
            "http://w1:8897/api/v1": True, "http://w2:8897/api/v1": False}
        bad = client.get("/api/v1/servicemap", params={"q": "http and"})
        assert bad.status_code == 400 and bad.json()["column"] == 9


def test_rows_per_query_are_bounded_by_max_query_rows():
    """A limit past --max-query-rows is a 400 naming limit, the maximum and the option; without
    a limit the route's default is cut to the maximum, which is what the workers are asked for."""
    asked: list[str] = []
    answer = handler()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/entries"):
            asked.append(request.url.params["limit"])
        return answer(request)
    hub = create_app(HubSettings(workers=URLS, poll_interval=60, retries=0, backoff=0.001, max_query_rows=50,
                                 client_options={"transport": httpx.MockTransport(handle)}))
    with TestClient(hub, base_url=LOCAL) as client:
        for path in ("/api/v1/entries", "/api/v1/servicemap", "/api/v1/har"):
            over = client.get(path, params={"limit": 51})
            assert over.status_code == 400, path
            assert over.json()["detail"].startswith("limit: 51 is above the hub's maximum of 50 rows per query "
                                                    "(--max-query-rows)")
            assert client.get(path, params={"limit": 50}).status_code == 200
        assert client.get("/api/v1/entries", params={"limit": 0}).json()["detail"] == "limit: 0 is below 1"
        assert asked == ["50"] * 6
        asked.clear()
        for path in ("/api/v1/entries", "/api/v1/servicemap", "/api/v1/har"):
            assert client.get(path).status_code == 200
        assert asked == ["50"] * 6      # defaults of 100 and 10000 cut to the maximum
        samples = parse_prometheus(client.get("/metrics").text)
    assert samples[("shark_hub_query_rows_limit", "")] == 50


# -- metrics -------------------------------------------------------------------------------
def test_metrics_from_polled_status():
    with TestClient(app(down={"w2"}), base_url=LOCAL) as client:
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = parse_prometheus(response.text)
    assert samples[("shark_hub_workers_up", 'node="a"')] == 1
    assert samples[("shark_hub_workers_up", 'node="http://w2:8897/api/v1"')] == 0
    assert samples[("shark_worker_packets_received_total", 'node="a"')] == 120
    assert samples[("shark_worker_packets_dropped_total", 'node="a"')] == 3
    assert samples[("shark_worker_store_bytes", 'node="a"')] == 4096
    assert samples[("shark_worker_store_limit_bytes", 'node="a"')] == 1 << 20
    assert samples[("shark_worker_entries", 'node="a"')] == 7
    assert samples[("shark_worker_dissection_lag_bytes", 'node="a"')] == 0
    assert samples[("shark_worker_dissection_memory_limit_bytes", 'node="a"')] == 1 << 26
    assert samples[("shark_worker_dissection_memory_held_bytes", 'node="a"')] == 4000
    assert samples[("shark_worker_dissection_memory_cut_sessions_total", 'node="a"')] == 2
    assert samples[("shark_worker_dissection_memory_cut_bytes_total", 'node="a"')] == 70000
    assert samples[("shark_worker_stream_lost_total", 'node="a"')] == 5
    assert ("shark_worker_dissection_memory_held_bytes", 'node="b"') not in samples   # an older worker: no row
    assert samples[("shark_worker_capture_running", 'node="a"')] == 1
    assert samples[("shark_worker_capture_degraded", 'node="a"')] == 1
    assert samples[("shark_worker_packets_not_stored_total", 'node="a"')] == 9
    assert samples[("shark_worker_store_write_errors_total", 'node="a"')] == 2
    assert samples[("shark_worker_store_evicted_for_space_total", 'node="a"')] == 1
    assert ("shark_worker_entries", 'node="http://w2:8897/api/v1"') not in samples   # down: no stale value
    assert samples[("shark_hub_sse_clients", "")] == 0
    assert samples[("shark_hub_sse_lost_events_total", "")] == 0


def test_metrics_escape_labels_and_count_lost():
    counters = StreamCounters()
    counters.lost_total = 4
    text = render([('we"ird\\node', True, {"capture": {"received": 1.5}})], counters)
    samples = parse_prometheus(text)
    assert samples[("shark_worker_packets_received_total", 'node="we\\"ird\\\\node"')] == 1.5
    assert samples[("shark_hub_sse_lost_events_total", "")] == 4


# -- WebSocket -----------------------------------------------------------------------------
def test_ws_streams_entries_and_status():
    with TestClient(app(), base_url=LOCAL) as client, client.websocket_connect("/api/v1/ws") as ws:
        ws.send_text("redis")
        seen: dict[str, list] = {"entry": [], "status": []}
        while not seen["entry"] or len(seen["status"]) < 2:
            message = ws.receive_json(timeout=10)
            assert set(message) == {"type", "payload"}
            seen[message["type"]].append(message["payload"])
        assert seen["entry"][0]["id"] in ("a:1", "b:2") and seen["entry"][0]["seq"].startswith(seen["entry"][0]["node"] + "@")
        assert {"node", "url", "ok", "error"} <= set(seen["status"][0])


def test_ws_rejects_invalid_kfl_with_1008():
    with TestClient(app(), base_url=LOCAL) as client, client.websocket_connect("/api/v1/ws") as ws:
        ws.send_text("http and")
        message = ws.receive_json(timeout=10)
        assert message["type"] == "error" and message["payload"]["column"] == 9
        assert "q:" in message["payload"]["detail"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text(timeout=10)
        assert closed.value.code == 1008


def test_ws_accepts_a_json_first_message():
    with TestClient(app(), base_url=LOCAL) as client, client.websocket_connect("/api/v1/ws") as ws:
        ws.send_text(json.dumps({"q": "http and =="}))
        assert ws.receive_json(timeout=10)["payload"]["column"] == 10


def test_counters_track_clients_and_lost_events():
    import asyncio

    from hub.events import entry_event, lost_event

    async def batches():
        yield [entry_event(b"{}", "1"), lost_event(5)]
        yield [lost_event(None, "a worker restarted")]
        yield [entry_event(b"{}", "7")]

    async def go():
        counters = StreamCounters()
        seen = []
        tracked = counters.track(batches())
        async for batch in tracked:
            seen += [(event.kind, counters.sse_clients) for event in batch]
        return counters, seen
    counters, seen = asyncio.run(go())
    assert seen == [("entry", 1), ("lost", 1), ("lost", 1), ("entry", 1)]
    assert (counters.sse_clients, counters.lost_total) == (0, 5)


def test_ws_client_leaving_is_forgotten():
    import time
    with TestClient(app(), base_url=LOCAL) as client:
        with client.websocket_connect("/api/v1/ws") as ws:
            ws.send_text("")
            ws.receive_json(timeout=10)
            assert "shark_hub_ws_clients 1" in client.get("/metrics").text
        deadline = time.monotonic() + 5
        while "shark_hub_ws_clients 0" not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "the WebSocket client was not forgotten"
            time.sleep(0.05)


# -- rows held at once across requests ------------------------------------------------------
def test_whole_answers_share_max_held_rows():
    """/har keeps its `limit` lines until the last is written: all such answers together hold
    at most --max-held-rows. One that does not fit waits (first come, first served), and after
    the wait gets a 503 naming the option; the rows come back when an answer ends, also one
    that failed before its body started (a worker's 400)."""
    gate = threading.Event()
    answer = handler()

    async def handle(request: httpx.Request) -> httpx.Response:
        q = request.url.params.get("q", "")
        if request.url.path.endswith("/entries") and "999" in q:
            return httpx.Response(400, json={"error": "bad request", "detail": "since: no"})
        if request.url.path.endswith("/entries") and "201" in q:
            await asyncio.to_thread(gate.wait, 10)
        return answer(request)
    hub = create_app(HubSettings(workers=URLS, poll_interval=60, retries=0, backoff=0.001, max_held_rows=100,
                                 held_rows_wait_s=0.3, client_options={"transport": httpx.MockTransport(handle)}))
    with TestClient(hub, base_url=LOCAL, timeout=10) as client, ThreadPoolExecutor(2) as pool:
        def held() -> float:
            return parse_prometheus(client.get("/metrics").text)[("shark_hub_held_rows", "")]

        def har(q: str, limit: int) -> httpx.Response:
            return client.get("/api/v1/har", params={"q": q, "limit": limit})
        first = pool.submit(har, "status == 201", 80)
        deadline = time.monotonic() + 5
        while held() != 80:
            assert time.monotonic() < deadline, "the first /har took its rows"
            time.sleep(0.01)
        refused = har("", 30)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert refused.json()["detail"] == ("the hub holds 80 rows for other answers, 100 at most (--max-held-rows); "
                                            "this one needs 30: try again later or ask for fewer (limit)")
        assert har("", 20).status_code == 200            # 80 + 20 fit
        assert har("status == 999", 20).status_code == 400
        assert held() == 80                              # given back although no body was sent
        waiting = pool.submit(har, "", 50)
        time.sleep(0.05)
        gate.set()
        assert first.result(10).status_code == 200 and waiting.result(10).status_code == 200
        assert held() == 0
        samples = parse_prometheus(client.get("/metrics").text)
    assert samples[("shark_hub_held_rows_limit", "")] == 100
    assert samples[("shark_hub_held_rows_refused_total", "")] == 1


def test_a_row_budget_serves_in_order_and_forgets_who_left():
    async def go() -> None:
        budget = RowBudget(10, wait_s=5)
        scope: dict = {SCOPE_KEY: []}
        first = await budget.take(8, scope)
        big = asyncio.create_task(budget.take(6, scope))
        await asyncio.sleep(0)
        small = asyncio.create_task(budget.take(1, scope))      # fits, but waits behind the earlier one
        await asyncio.sleep(0.01)
        assert not big.done() and not small.done() and budget.held == 8
        small.cancel()                                          # a client that left while waiting
        await asyncio.gather(small, return_exceptions=True)
        first.release()
        first.release()                                         # once only
        await big
        assert budget.held == 6 and not budget._waiting
        for held in scope[SCOPE_KEY]:
            held.release()
        assert budget.held == 0
        whole = await budget.take(50, scope)                    # more than the budget: takes all of it
        assert budget.held == 10 and whole.rows == 10
        with pytest.raises(RuntimeError):
            await budget.take(1, {})
    asyncio.run(go())
