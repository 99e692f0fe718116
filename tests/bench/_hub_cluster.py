"""The cluster bench_hub.py measures: network namespaces as nodes on a bridge (as in
tests/integration/test_hub_netns.py), each node with the fast HTTP server of _hub_load.py and a
real worker capturing its own veth, and the hub outside the nodes, in the bridge's namespace.

The benchmark process itself moves into the bridge namespace (setns) once the namespaces are
up, so that it, the hub and the load and SSE client processes it starts all reach the nodes'
addresses, which exist only inside the namespaces made here. Addresses: 10.213.41.0/24.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

BENCH = Path(__file__).resolve().parent
TESTS = BENCH.parent
sys.path[:0] = [str(TESTS)]

from support.netns import enter_netns  # noqa: E402
from support.processes import TEST_TOKEN, Proc, Worker, wait_for  # noqa: E402

# Workers on the nodes' addresses need a token (shark/auth.py); the hub sends it and asks for it.
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}

SUBNET = "10.213.41"
HTTP_PORT = 8080
LOAD = [sys.executable, str(BENCH / "_hub_load.py")]
P = TypeVar("P", bound=Proc)
TCP_WMEM = "/proc/sys/net/ipv4/tcp_wmem"


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Node:
    name: str       # the namespace
    address: str    # on its eth0
    index: int

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    @property
    def server_url(self) -> str:
        return f"http://{self.address}:{HTTP_PORT}"


@dataclass
class Lab:
    """`nodes` namespaces joined by a bridge in a further namespace; everything started through
    `start` is stopped, and every namespace deleted, by `close` (also on Ctrl-C or failure)."""

    size: int
    hub_tree: Path | None = None
    worker_tree: Path | None = None
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}")
    procs: list[Proc] = field(default_factory=list)
    nodes: list[Node] = field(init=False)

    def __post_init__(self) -> None:
        self.bridge = f"shark-hb{self.tag}"
        self.nodes = [Node(f"shark-hb{self.tag}-n{i}", f"{SUBNET}.{i + 1}", i) for i in range(self.size)]

    def __enter__(self) -> Lab:
        self.delete_namespaces()
        try:
            ip("netns", "add", self.bridge)
            ip("-n", self.bridge, "link", "set", "lo", "up")
            ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
            ip("-n", self.bridge, "addr", "add", f"{SUBNET}.254/24", "dev", "br0")
            ip("-n", self.bridge, "link", "set", "br0", "up")
            for node in self.nodes:
                ip("netns", "add", node.name)
                ip("-n", node.name, "link", "set", "lo", "up")
                # both ends are made inside namespaces: nothing appears in the root namespace
                ip("-n", self.bridge, "link", "add", f"vb{node.index}", "type", "veth", "peer", "name", "eth0",
                   "netns", node.name)
                ip("-n", self.bridge, "link", "set", f"vb{node.index}", "master", "br0")
                ip("-n", self.bridge, "link", "set", f"vb{node.index}", "up")
                ip("-n", node.name, "addr", "add", f"{node.address}/24", "dev", "eth0")
                ip("-n", node.name, "link", "set", "eth0", "up")
            enter_netns(self.bridge)
        except BaseException:
            self.delete_namespaces()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, proc: P) -> P:
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        try:
            proc.stop()
        finally:
            if proc in self.procs:
                self.procs.remove(proc)

    def close(self) -> None:
        while self.procs:
            try:
                self.procs.pop().stop()
            except Exception as error:   # keep cleaning up
                print(f"cleanup: {error}", file=sys.stderr)
        self.delete_namespaces()

    def delete_namespaces(self) -> None:
        for name in [n.name for n in self.nodes] + [self.bridge]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    # -- the parts ------------------------------------------------------------------------------
    def http_servers(self, nodes: list[Node]) -> list[Proc]:
        servers = []
        for node in nodes:
            server = self.start(Proc([*LOAD, "serve", node.address, str(HTTP_PORT)], prefix=node.prefix))
            server.wait_line("listening")
            servers.append(server)
        return servers

    def workers(self, nodes: list[Node], store: Path) -> list[Worker]:
        """One worker per node on its eth0, capturing only the HTTP servers' port (not the hub's
        own API calls to it)."""
        started = []
        for node in nodes:
            worker = Worker(["--iface", "eth0", "--bpf", f"tcp port {HTTP_PORT}"], store / node.name,
                            prefix=[*node.prefix, *tree_env(self.worker_tree)], node=f"node{node.index}",
                            listen_host=node.address, token=TEST_TOKEN)
            self.start(worker)
            started.append(worker)
        return started

    def hub(self, workers: list[Worker]) -> HubProc:
        hub = HubProc([w.url for w in workers], self.hub_tree)
        self.start(hub)
        wait_for(lambda: hub.get("/status").json()["hub"]["workers_ok"] == len(workers), 30,
                 f"{len(workers)} workers up at the hub")
        return hub


def tree_env(tree: Path | None) -> list[str]:
    """A command prefix that makes `python -m hub|worker` import from `tree` (another checkout,
    e.g. `git archive REV | tar -x -C DIR`): PYTHONSAFEPATH keeps the working directory (this
    checkout) off sys.path, so PYTHONPATH's tree comes before the editable install."""
    return ["env", "PYTHONSAFEPATH=1", f"PYTHONPATH={tree}"] if tree else []


class HubProc(Proc):
    """`python -m hub` with its default poll interval and timeout, on 127.0.0.1 of the bridge
    namespace (where the benchmark process lives too); from another checkout with `tree`, to
    compare designs against the same workers."""

    def __init__(self, worker_urls: list[str], tree: Path | None = None) -> None:
        super().__init__([sys.executable, "-m", "hub", *[a for u in worker_urls for a in ("--worker", u)],
                          "--listen", "127.0.0.1:0"], prefix=tree_env(tree), env={"SHARK_TOKEN": TEST_TOKEN})
        self.base = self.wait_line(r"hub serving on (http://\S+)").group(1)
        self.url = self.base + "/api/v1"

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, headers=AUTH, **kwargs)

    def metric(self, name: str) -> float:
        for line in httpx.get(self.base + "/metrics", timeout=30, headers=AUTH).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise RuntimeError(f"{name} not in the hub's /metrics")


# -- load and SSE clients (processes in the bridge namespace) -----------------------------------
def run_load(targets: list[str], prefix: str, *, rate: float = 0.0, seconds: float | None = None,
             count: int | None = None, connections: int = 4) -> dict[str, Any]:
    """Run _hub_load.py load to completion; its JSON answer."""
    argv = [*LOAD, "load", "--prefix", prefix, "--rate", str(rate), "--connections", str(connections)]
    for target in targets:
        argv += ["--target", target]
    argv += ["--seconds", str(seconds)] if seconds is not None else ["--count", str(count)]
    budget = (seconds or 0) + (count or 0) / 500 + 60
    result = subprocess.run(argv, capture_output=True, text=True, timeout=budget)
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


class SseClients(Proc):
    """_hub_load.py sse: `count` SSE clients on `url`; `result()` stops them and reads the JSON."""

    def __init__(self, url: str, count: int, prefix: str, status_events: int = 0) -> None:
        super().__init__([*LOAD, "sse", url, "--clients", str(count), "--prefix", prefix,
                          "--status-events", str(status_events)], env={"SHARK_TOKEN": TEST_TOKEN})
        line = self.wait_line(r"^(ready|failed.*)$", timeout=30).group(1)
        if line != "ready":
            self.stop()
            raise RuntimeError(f"SSE clients on {url}: {line}")

    def progress(self) -> int:
        for line in reversed(list(self.lines)):
            if line.startswith("progress "):
                return int(line.split()[1])
        return 0

    def wait_entries(self, expected: int, idle_s: float = 5.0, timeout: float = 90.0) -> int:
        """Until every client has `expected` entries, or none arrived for idle_s, or timeout."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            seen = self.progress()
            if seen >= expected:
                return seen
            if seen != last:
                last, last_change = seen, time.monotonic()
            elif time.monotonic() - last_change > idle_s:
                return seen
            time.sleep(0.1)
        return self.progress()

    def result(self) -> dict[str, Any]:
        self.signal(2)   # SIGINT: the clients stop and print their JSON
        try:
            self.process.wait(30)
        finally:
            self.stop()
        for line in reversed(self.lines):
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"SSE clients printed no result:\n{self.output[-2000:]}")


def worker_status(worker: Worker) -> dict[str, Any]:
    return httpx.get(worker.url + "/status", timeout=30, headers=AUTH).json()


def established(node: Node, port: int) -> int:
    """TCP connections established to `port` inside the node's namespace."""
    result = subprocess.run([*node.prefix, "ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                            capture_output=True, text=True, timeout=30)
    return len([line for line in result.stdout.splitlines() if line.strip()])


def set_tcp_wmem_max(limit: int) -> str:
    """Cap TCP send-buffer autotuning in this (the bridge) namespace; returns the old value."""
    saved = Path(TCP_WMEM).read_text().strip()
    low, default, _ = saved.split()
    Path(TCP_WMEM).write_text(f"{low} {default} {limit}")
    return saved
