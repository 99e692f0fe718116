"""ARCHITECTURE.md, "Tests that cross machines": three network namespaces are three nodes,
joined by a bridge that lives in a fourth namespace, on 10.213.9.0/24 (no address exists
outside the namespaces this test creates). One worker per node captures its own veth; the hub
runs in the bridge namespace; real HTTP and Redis traffic crosses between the nodes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.processes import TEST_TOKEN, Proc, Worker, wait_for

pytestmark = pytest.mark.root
TESTS = str(Path(__file__).resolve().parents[1])
REDIS_SERVER = "/usr/bin/redis-server"
SUBNET = "10.213.9"
HTTP_PORT = 8080
REDIS_PORT = 6390


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Ns:
    name: str
    iface: str
    address: str

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=timeout)


class Cluster:
    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.bridge = Ns(f"shark-br{tag}", "br0", f"{SUBNET}.254")
        self.nodes = [Ns(f"shark-n{i}-{tag}", f"eth{i}", f"{SUBNET}.{i}") for i in (1, 2, 3)]
        self.procs: list[Proc] = []

    def up(self) -> None:
        br = self.bridge.name
        ip("netns", "add", br)
        ip("-n", br, "link", "set", "lo", "up")
        ip("-n", br, "link", "add", "br0", "type", "bridge")
        ip("-n", br, "addr", "add", f"{self.bridge.address}/24", "dev", "br0")
        ip("-n", br, "link", "set", "br0", "up")
        for i, node in enumerate(self.nodes, 1):
            ip("netns", "add", node.name)
            ip("-n", node.name, "link", "set", "lo", "up")
            # both ends are made inside namespaces: nothing appears in the root namespace
            ip("-n", br, "link", "add", f"vb{i}", "type", "veth", "peer", "name", node.iface, "netns", node.name)
            ip("-n", br, "link", "set", f"vb{i}", "master", "br0")
            ip("-n", br, "link", "set", f"vb{i}", "up")
            ip("-n", node.name, "addr", "add", f"{node.address}/24", "dev", node.iface)
            ip("-n", node.name, "link", "set", node.iface, "up")

    def start(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def down(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception:   # keep cleaning up
                pass
        for ns in (*self.nodes, self.bridge):
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


@pytest.fixture
def cluster():
    if not shutil.which("ip") or not shutil.which("curl"):
        pytest.skip("needs iproute2 and curl")
    c = Cluster()
    try:
        c.up()
        yield c
    finally:
        c.down()


AUTH = f"Authorization: Bearer {TEST_TOKEN}"     # workers and hub serve beyond loopback: the token


def hub_get(c: Cluster, url: str, *curl_args: str) -> str:
    result = c.bridge.run("curl", "-sS", "--max-time", "20", "-H", AUTH, *curl_args, url)
    assert result.returncode == 0, result.stderr
    return result.stdout


def ws_messages(proc: Proc) -> list[dict]:
    return [json.loads(line) for line in list(proc.lines) if line.startswith("{")]


WS_CLIENT = """
import asyncio, json, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1], additional_headers={"Authorization": "Bearer " + sys.argv[3]}) as ws:
        await ws.send(sys.argv[2])
        async for message in ws:
            print(message, flush=True)
asyncio.run(main())
"""

REDIS_CLIENT = """
import sys, redis
r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=10)
r.set("shark:key", "value"); r.get("shark:key"); r.incr("shark:count"); r.lpush("shark:list", "a", "b")
try:
    r.execute_command("NOSUCHCOMMAND")
except redis.ResponseError:
    pass
print("redis done", flush=True)
"""


def test_three_nodes_merged_by_the_hub(cluster, tmp_path):
    c = cluster
    n1, n2, n3 = c.nodes
    http = c.start(Proc([sys.executable, "-m", "support.http_server", str(HTTP_PORT), n2.address],
                        env={"PYTHONPATH": TESTS}, prefix=n2.prefix))
    http.wait_line("listening")
    redis_server = None
    if os.access(REDIS_SERVER, os.X_OK):
        redis_server = c.start(Proc([REDIS_SERVER, "--port", str(REDIS_PORT), "--bind", n3.address, "--save", "",
                                     "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"],
                                    prefix=n3.prefix))
        redis_server.wait_line("Ready to accept connections")
    workers = [c.start(Worker(["--iface", node.iface], tmp_path / node.name, prefix=node.prefix,
                              node=node.name, listen_host=node.address, token=TEST_TOKEN)) for node in c.nodes]
    hub = c.start(Proc([sys.executable, "-m", "hub", *[a for w in workers for a in ("--worker", w.url)],
                        "--listen", f"{c.bridge.address}:0", "--poll-interval", "0.3", "--timeout", "5"],
                       prefix=c.bridge.prefix, env={"SHARK_TOKEN": TEST_TOKEN}))
    base = hub.wait_line(r"hub serving on (http://\S+)").group(1)
    api = base + "/api/v1"
    wait_for(lambda: all(w["ok"] for w in json.loads(hub_get(c, api + "/workers"))), what="3 workers up")

    # a WebSocket client of the hub, in the bridge namespace
    ws = c.start(Proc([sys.executable, "-c", WS_CLIENT, base.replace("http://", "ws://") + "/api/v1/ws", "redis",
                       TEST_TOKEN],
                      prefix=c.bridge.prefix))
    wait_for(lambda: sum(m["type"] == "status" for m in ws_messages(ws)) >= 3, what="status messages on the WebSocket")

    # real traffic: node1 -> node2 (HTTP), node3 -> node2 (HTTP, one 500), node1 -> node3 (Redis)
    for path in ("/json", "/status/201", "/hello"):
        assert n1.run("curl", "-sS", "--max-time", "10", f"http://{n2.address}:{HTTP_PORT}{path}").returncode == 0
    for path in ("/status/500", "/json"):
        assert n3.run("curl", "-sS", "--max-time", "10", f"http://{n2.address}:{HTTP_PORT}{path}").returncode == 0
    if redis_server is not None:
        done = n1.run(sys.executable, "-c", REDIS_CLIENT, n3.address, str(REDIS_PORT))
        assert "redis done" in done.stdout, done.stderr

    # what each node's worker must have indexed, with how many entries at least: a flow is seen by
    # the workers of both of its ends; 3 + 2 HTTP requests, each on its own connection
    http_12, http_32, redis_13 = ("http", n1.address, n2.address), ("http", n3.address, n2.address), \
        ("redis", n1.address, n3.address)
    expected = {n1.name: Counter({http_12: 3}), n2.name: Counter({http_12: 3, http_32: 2}),
                n3.name: Counter({http_32: 2})}
    if redis_server:
        expected[n1.name][redis_13] = expected[n3.name][redis_13] = 1

    def merged():
        # each worker indexes at its own pace (three workers and a hub share two cores in CI): wait for all
        body = json.loads(hub_get(c, api + "/entries?limit=1000"))
        seen = {n.name: Counter((e["protocol"], e["src"]["ip"], e["dst"]["ip"])
                                for e in body["entries"] if e["node"] == n.name) for n in c.nodes}
        return body if all(want <= seen[name] for name, want in expected.items()) else None
    body = wait_for(merged, timeout=30, what="every node's flows in the hub's merged entries")
    assert all(w["ok"] for w in body["workers"]) and len(body["workers"]) == 3
    stamps = [e["ts"] for e in body["entries"]]
    assert stamps == sorted(stamps, reverse=True)
    assert {e["node"] for e in body["entries"]} == {n.name for n in c.nodes}
    if redis_server:
        wait_for(lambda: any(m["type"] == "entry" and m["payload"]["protocol"] == "redis" for m in ws_messages(ws)),
                 what="redis entries on the WebSocket")
        assert {m["payload"]["protocol"] for m in ws_messages(ws) if m["type"] == "entry"} == {"redis"}  # q pushed down

    # service map: the edges between the nodes, seen once per capturing node
    smap = json.loads(hub_get(c, api + "/servicemap"))
    edges = {(e["source"], e["target"]): e for e in smap["edges"]}
    one_two = edges[(n1.address, f"{n2.address}:{HTTP_PORT}")]
    assert one_two["protocol"] == "http" and one_two["count"] == 6 and one_two["errors"] == 0   # 3 x 2 workers
    three_two = edges[(n3.address, f"{n2.address}:{HTTP_PORT}")]
    assert three_two["count"] == 4 and three_two["errors"] == 2 and three_two["error_rate"] == 0.5
    assert three_two["p50_ms"] is not None and three_two["p99_ms"] >= three_two["p50_ms"]
    if redis_server:
        redis_edge = edges[(n1.address, f"{n3.address}:{REDIS_PORT}")]
        assert redis_edge["protocol"] == "redis" and redis_edge["errors"] >= 2   # NOSUCHCOMMAND, seen twice
    assert {n["id"] for n in smap["nodes"]} >= {n1.address, n3.address, f"{n2.address}:{HTTP_PORT}"}

    metrics = hub_get(c, base + "/metrics")
    for node in c.nodes:
        assert f'shark_hub_workers_up{{node="{node.name}"}} 1' in metrics
        assert f'shark_worker_packets_received_total{{node="{node.name}"}}' in metrics
    assert "shark_hub_ws_clients 1" in metrics

    # a live SSE client, then node3's worker dies mid-stream
    sse = c.start(Proc(["curl", "-sN", "--max-time", "30", "-H", AUTH, api + "/stream"], prefix=c.bridge.prefix))
    wait_for(lambda: sum(line == "event: status" for line in sse.lines) >= 3, what="SSE status events")
    victim = workers[2]
    victim.signal(signal.SIGKILL)
    victim.process.wait(10)
    partial = json.loads(hub_get(c, api + "/entries?limit=1000"))
    rows = {w["node"]: w for w in partial["workers"]}
    assert rows[n3.name]["ok"] is False and "cannot connect" in rows[n3.name]["error"]
    assert rows[n1.name]["ok"] and rows[n2.name]["ok"]
    assert {e["node"] for e in partial["entries"]} == {n1.name, n2.name}

    def said_down(lines):
        return [json.loads(line[len("data: "):]) for line in lines
                if line.startswith("data: ") and '"ok": false' in line]
    assert wait_for(lambda: said_down(sse.lines), what="SSE status: node3 down")[0]["node"] == n3.name
    down_ws = wait_for(lambda: [m for m in ws_messages(ws) if m["type"] == "status" and m["payload"]["ok"] is False],
                       what="WS status down")
    assert down_ws[0]["payload"]["node"] == n3.name
    wait_for(lambda: f'shark_hub_workers_up{{node="{n3.name}"}} 0' in hub_get(c, base + "/metrics"),
             what="node3 down in /metrics")
    smap = json.loads(hub_get(c, api + "/servicemap"))
    assert {w["node"]: w["ok"] for w in smap["workers"]}[n3.name] is False
    # the SSE connection counted while open
    assert "shark_hub_sse_clients 1" in hub_get(c, base + "/metrics")
    sse.stop()
    ws.stop()
    assert hub.stop() == 0, hub.output
