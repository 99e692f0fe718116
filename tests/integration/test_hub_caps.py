"""The hub's live feed is bounded: at most --max-live-clients clients (SSE and WebSocket) and
--max-live-queries distinct queries at once; past them a client is turned away with why (503,
or an error message and close 1013 on a WebSocket), counted in /metrics. Real hub, real worker."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest
import websockets

from support.golden import GOLDEN
from support.processes import Proc, wait_for

pytestmark = pytest.mark.root


@pytest.fixture
def hub(start_worker) -> Iterator[str]:
    worker = start_worker("--pcap", str(GOLDEN / "http1" / "basic.pcap"))
    proc = Proc([sys.executable, "-m", "hub", "--worker", worker.url.removesuffix("/api/v1"), "--listen",
                 "127.0.0.1:0", "--max-live-clients", "3", "--max-live-queries", "2"])
    try:
        yield proc.wait_line(r"hub serving on (http://\S+)").group(1)
    finally:
        proc.stop()


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_clients_and_queries_past_the_limits_are_turned_away_with_why(hub: str) -> None:
    with ExitStack() as stack:
        def follow(q: str) -> httpx.Response:
            return stack.enter_context(httpx.stream("GET", f"{hub}/api/v1/stream", params={"q": q} if q else {},
                                                    timeout=httpx.Timeout(10, read=None)))
        assert follow("http").status_code == 200
        assert follow("dns").status_code == 200
        # a third distinct query: refused; the same query as a client has: served
        third = follow("redis")
        assert third.status_code == 503 and third.headers["retry-after"] == "10"
        assert json.loads(third.read())["detail"].startswith("2 distinct live queries are followed")
        assert follow("http").status_code == 200
        wait_for(lambda: metric(hub, "shark_hub_sse_clients") == 3, what="three clients at the hub")
        # a fourth client, whatever its query: refused, over SSE and over the WebSocket
        fourth = follow("dns")
        assert fourth.status_code == 503
        assert json.loads(fourth.read())["detail"].startswith("3 live clients are connected")

        async def over_websocket() -> tuple[dict, int | None]:
            async with websockets.connect(hub.replace("http://", "ws://") + "/api/v1/ws") as ws:
                await ws.send("http")
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                return message, ws.close_code
        message, code = asyncio.run(over_websocket())
        assert message["type"] == "error" and message["payload"]["detail"].startswith("3 live clients")
        assert code == 1013
        assert metric(hub, "shark_hub_live_clients_refused_total") == 2
        assert metric(hub, "shark_hub_live_queries_refused_total") == 1
        assert (metric(hub, "shark_hub_live_clients_limit"), metric(hub, "shark_hub_live_queries_limit")) == (3, 2)
    # once clients leave, new ones are served again
    wait_for(lambda: metric(hub, "shark_hub_sse_clients") == 0, what="the clients gone")
    with httpx.stream("GET", f"{hub}/api/v1/stream", params={"q": "http"}, timeout=httpx.Timeout(10, read=None)) as again:
        assert again.status_code == 200


def test_scripts_are_bounded_in_number_and_their_snapshots_in_bytes(start_worker, tmp_path) -> None:
    """--script-max-count scripts at most (a new one past it is a 400 naming why); the scripts'
    pcap.snapshot() files together within --script-snapshot-limit: one that would pass it is
    not written, and its script's log says so. The golden capture served is 6.7 kB."""
    worker = start_worker("--pcap", str(GOLDEN / "http1" / "basic.pcap"))
    wait_for(lambda: worker.status()["index"]["entries"] > 0, what="the capture indexed")
    proc = Proc([sys.executable, "-m", "hub", "--worker", worker.url.removesuffix("/api/v1"), "--listen", "127.0.0.1:0",
                 "--state-dir", str(tmp_path / "state"), "--script-max-count", "2", "--script-snapshot-limit", "10kB"])
    try:
        api = proc.wait_line(r"hub serving on (http://\S+)").group(1) + "/api/v1"
        with httpx.Client(base_url=api, timeout=30) as hub:
            code = "function onHubAction(a) { console.log('snapshot', pcap.snapshot(a === 'all' ? '' : 'http')); }"
            assert hub.post("/scripts", json={"name": "snap", "code": code}).status_code == 201
            assert hub.post("/scripts", json={"name": "second", "code": "var x = 1;"}).status_code == 201
            third = hub.post("/scripts", json={"name": "third", "code": "var x = 1;"})
            assert third.status_code == 400
            assert third.json()["detail"].startswith("name: the hub runs 2 scripts already")

            def logged(needle: str) -> str | None:
                lines = hub.get("/scripts/logs", params={"script": "snap", "limit": 100}).json()["lines"]
                return next((line["text"] for line in lines if needle in line["text"]), None)
            hub.post("/scripts/actions", json={"action": "first"})
            wait_for(lambda: logged("pcap.snapshot: wrote"), what="the first snapshot written")
            # the second would bring the two past 10 kB: refused, nothing left behind
            hub.post("/scripts/actions", json={"action": "all"})
            refused = wait_for(lambda: logged("not written: it would pass"), what="the second refused")
            assert "10,000-byte limit of scripts' snapshots" in refused
            listed = hub.get("/scripts/snapshots").json()["snapshots"]
            assert len(listed) == 1 and listed[0]["bytes"] <= 10_000
            assert sorted(p.name for p in (tmp_path / "state" / "snapshots").iterdir()) == [listed[0]["name"]]
        text = httpx.get(api.removesuffix("/api/v1") + "/metrics", timeout=10).text
        assert "shark_hub_scripts 2\n" in text and "shark_hub_scripts_limit 2\n" in text
        assert f"shark_hub_script_snapshot_bytes {listed[0]['bytes']}\n" in text
        assert "shark_hub_script_snapshot_limit_bytes 10000\n" in text
    finally:
        proc.stop()


def test_a_workers_stream_clients_past_max_stream_clients_are_turned_away_with_why(start_worker) -> None:
    """Each /stream client holds a queue at the worker: at most --max-stream-clients at once; a
    further one gets a 503 naming the option, counted in the worker's /status and, through the
    hub's polls, in the hub's /metrics; a client that leaves frees its place."""
    worker = start_worker("--pcap", str(GOLDEN / "http1" / "basic.pcap"), "--max-stream-clients", "2")
    proc = Proc([sys.executable, "-m", "hub", "--worker", worker.url.removesuffix("/api/v1"), "--listen",
                 "127.0.0.1:0", "--poll-interval", "0.5"])
    try:
        hub = proc.wait_line(r"hub serving on (http://\S+)").group(1)
        # the hub's first scrape starts its edge metrics, which follow every entry: the hub's
        # own stream is one of the two
        metric(hub, "shark_hub_workers_up{node=\"test-node\"}")
        wait_for(lambda: worker.status()["stream"]["clients"] == 1, what="the hub's stream")
        with ExitStack() as stack:
            def follow() -> httpx.Response:
                return stack.enter_context(httpx.stream("GET", f"{worker.url}/stream",
                                                        timeout=httpx.Timeout(10, read=None)))
            first = follow()
            assert first.status_code == 200
            third = follow()
            assert third.status_code == 503 and third.headers["retry-after"] == "10"
            assert json.loads(third.read())["detail"] == (
                "2 /stream clients are connected, the most this worker serves (--max-stream-clients); "
                "try again later")
            assert worker.status()["stream"] | {"lost": 0} == {
                "subscribers": 2, "lost": 0, "clients": 2, "max_clients": 2, "refused": 1}
            wait_for(lambda: metric(hub, "shark_worker_stream_clients_refused_total{node=\"test-node\"}") == 1,
                     what="the refusal in the hub's /metrics")
            assert metric(hub, "shark_worker_stream_clients_limit{node=\"test-node\"}") == 2
            first.close()
            wait_for(lambda: worker.status()["stream"]["clients"] == 1, what="the first client gone")
            assert follow().status_code == 200
            # full again: a hub client of a new query is told why the worker is not in its feed
            live = stack.enter_context(httpx.stream("GET", f"{hub}/api/v1/stream", params={"q": "http"},
                                                    timeout=httpx.Timeout(10)))
            said = next(line for line in live.iter_lines() if "max-stream-clients" in line)
            status = json.loads(said.removeprefix("data:"))
            assert status["ok"] is False and status["state"] == "busy" and status["retry_s"] == 10
            assert status["error"] == (
                "busy: HTTP 503: 2 /stream clients are connected, the most this worker serves (--max-stream-clients); "
                "try again later; the hub asks again in 10 s")
            # up, only busy: /workers keeps it up and says why, across the hub's polls
            time.sleep(1)
            [row] = httpx.get(f"{hub}/api/v1/workers").json()
            assert row["ok"] is True and row["state"] == "busy" and "--max-stream-clients" in row["busy"], row
    finally:
        proc.stop()
