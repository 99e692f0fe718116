"""Hub benchmark (on demand, not part of the suite; needs root for capture on lo).

  sudo .venv/bin/python tests/bench/bench_hub.py [--requests N] [--rate R] [--slow-requests N]

1. Time to first byte/entry and to the full answer of one /entries query through the hub over
   1 and 4 workers. The 4 workers all capture on lo, each with its own BPF port (its own test
   HTTP server) and node name (not netns workers: enough to measure the hub's fan-out/merge).
2. Packet -> SSE client latency p50/p99: one worker + hub, one SSE reader; each request is
   timestamped client-side just before it is sent and matched to its SSE entry by path.
3. Hub RSS under 100 SSE clients that never read (tcp_wmem max capped at 64 KB so the hub's
   queues, not the kernel, hold the backlog; restored after)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS / "integration")]

from support.processes import Proc, Worker, free_port, wait_for  # noqa: E402
from test_hub_live import Hub  # noqa: E402
from test_hub_slow_clients import TCP_WMEM, metric, open_slow_client, rss_mb  # noqa: E402


def http_server() -> tuple[Proc, int]:
    port = free_port()
    server = Proc([sys.executable, "-m", "support.http_server", str(port)], env={"PYTHONPATH": str(TESTS)})
    server.wait_line(r"listening")
    return server, port


def cluster(n: int, store: Path) -> tuple[list[Proc], list[int], Hub]:
    procs: list[Proc] = []
    ports = []
    workers = []
    for i in range(n):
        server, port = http_server()
        procs.append(server)
        ports.append(port)
        worker = Worker(["--iface", "lo", "--bpf", f"tcp port {port}"], store / f"w{n}-{i}", node=f"node{i}")
        procs.append(worker)
        workers.append(worker)
    hub = Hub(*(w.url for w in workers))
    wait_for(lambda: hub.get("/status").json()["hub"]["workers_ok"] == n, 30, "workers up")
    return procs, ports, hub


def stop(procs: list[Proc], hub: Hub) -> None:
    hub.stop()
    for proc in reversed(procs):
        proc.stop()


def query_times(total: int, n: int, store: Path, reps: int = 5) -> dict[str, float]:
    procs, ports, hub = cluster(n, store)
    try:
        per = total // n
        for port in ports:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                for i in range(per):
                    client.get(f"/q/{i}")
        wait_for(lambda: len(hub.get("/entries", params={"limit": total}).json()["entries"]) >= per * n * 0.98,
                 60, "entries indexed")
        first, full = [], []
        for _ in range(reps):
            start = time.perf_counter()
            with httpx.stream("GET", hub.url + "/entries", params={"q": "http", "limit": total}, timeout=60) as r:
                got_first = None
                chunks = []
                for chunk in r.iter_bytes():
                    if got_first is None and b'"id"' in chunk:
                        got_first = time.perf_counter() - start
                    chunks.append(chunk)
            full.append(time.perf_counter() - start)
            first.append(got_first if got_first is not None else full[-1])
            count = len(json.loads(b"".join(chunks))["entries"])
        return {"workers": n, "entries": count, "first_ms": statistics.median(first) * 1000,
                "full_ms": statistics.median(full) * 1000}
    finally:
        stop(procs, hub)


class TimedSse:
    def __init__(self, url: str) -> None:
        self.arrived: dict[str, float] = {}
        self.client = httpx.Client(timeout=httpx.Timeout(30, read=None))
        self.response = self.client.send(self.client.build_request("GET", url), stream=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        kind = None
        try:
            for line in self.response.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind == "entry":
                    now = time.perf_counter()
                    path = (json.loads(line[5:]).get("request") or {}).get("path")
                    self.arrived.setdefault(path, now)
                elif not line:
                    kind = None
        except httpx.HTTPError:
            pass

    def close(self) -> None:
        self.response.close()
        self.client.close()


def latency(rate: float, count: int, store: Path) -> dict[str, float]:
    procs, ports, hub = cluster(1, store)
    reader = TimedSse(hub.url + "/stream")
    try:
        time.sleep(1)
        sent: dict[str, float] = {}
        start = time.perf_counter()
        with httpx.Client(base_url=f"http://127.0.0.1:{ports[0]}", timeout=10) as client:
            for i in range(count):
                due = start + i / rate
                if (delay := due - time.perf_counter()) > 0:
                    time.sleep(delay)
                path = f"/lat/{i}"
                sent[path] = time.perf_counter()
                client.get(path)
        achieved = count / (time.perf_counter() - start)
        wait_for(lambda: len(reader.arrived) >= count * 0.98, 120, "entries on the stream", 0.2)
        lat = sorted((reader.arrived[p] - t) * 1000 for p, t in sent.items() if p in reader.arrived)
        return {"target_rps": rate, "achieved_rps": achieved, "matched": len(lat), "sent": count,
                "p50_ms": lat[len(lat) // 2], "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}
    finally:
        reader.close()
        stop(procs, hub)


def slow_rss(requests: int, store: Path) -> dict[str, float]:
    saved = Path(TCP_WMEM).read_text().strip()
    low, default, _ = saved.split()
    Path(TCP_WMEM).write_text(f"{low} {default} 65536")
    procs, ports, hub = cluster(1, store)
    socks = []
    try:
        pid = hub.process.pid
        idle = rss_mb(pid)
        socks = [open_slow_client(hub.url) for _ in range(100)]
        wait_for(lambda: metric(hub, "shark_hub_sse_clients") == 100, 30, "100 clients")
        connected = rss_mb(pid)
        peak = connected
        start = time.perf_counter()
        with httpx.Client(base_url=f"http://127.0.0.1:{ports[0]}", timeout=10) as client:
            for i in range(requests):
                client.get(f"/s/{i}")
                if i % 100 == 0:
                    peak = max(peak, rss_mb(pid))
        seconds = time.perf_counter() - start
        time.sleep(3)
        final = rss_mb(pid)
        return {"requests": requests, "seconds": seconds, "idle_mb": idle, "connected_mb": connected,
                "peak_mb": max(peak, final), "final_mb": final}
    finally:
        for sock in socks:
            sock.close()
        stop(procs, hub)
        Path(TCP_WMEM).write_text(saved)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="entries for the /entries query")
    parser.add_argument("--rate", type=float, nargs="+", default=[500, 2000])
    parser.add_argument("--latency-count", type=int, default=3000)
    parser.add_argument("--slow-requests", type=int, default=1500)
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    print("| query over | entries | first entry (median of 5) | full answer (median of 5) |")
    print("|---|---|---|---|")
    for n in (1, 4):
        r = query_times(args.requests, n, store)
        print(f"| {r['workers']} worker(s) | {r['entries']} | {r['first_ms']:.1f} ms | {r['full_ms']:.1f} ms |",
              flush=True)
    print("\n| target req/s | achieved req/s | matched/sent | p50 | p99 |\n|---|---|---|---|---|")
    for rate in args.rate:
        r = latency(rate, args.latency_count, store)
        print(f"| {rate:.0f} | {r['achieved_rps']:.0f} | {r['matched']}/{r['sent']} | {r['p50_ms']:.1f} ms "
              f"| {r['p99_ms']:.1f} ms |", flush=True)
    r = slow_rss(args.slow_requests, store)
    print("\n| 100 non-reading SSE clients | hub RSS |\n|---|---|")
    print(f"| idle | {r['idle_mb']:.1f} MB |\n| 100 clients connected | {r['connected_mb']:.1f} MB |\n"
          f"| peak during {r['requests']} requests ({r['seconds']:.0f} s) | {r['peak_mb']:.1f} MB |\n"
          f"| 3 s after | {r['final_mb']:.1f} MB |")


if __name__ == "__main__":
    main()
