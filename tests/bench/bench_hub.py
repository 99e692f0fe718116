"""Hub benchmark (issue 4), run on demand as root; not part of the test suite.

  .venv/bin/python tests/bench/bench_hub.py [--scenario first-entry|latency|clients|rss ...]
      [--hub-tree DIR] [--worker-tree DIR] [--label TEXT] [--max-load L] [--json-out FILE]

Every scenario runs on network namespaces as nodes (tests/bench/_hub_cluster.py): per node an
asyncio HTTP server and a real worker capturing its own veth (`--bpf 'tcp port 8080'`), the
hub outside the nodes (in the bridge's namespace), load and SSE clients as separate processes
there too (tests/bench/_hub_load.py). Each prints a markdown table; --json-out keeps them all.

first-entry  Every node preloaded with the same traffic (--per-worker requests); one hub over
             1, 4, 8 workers asks `/entries?q=QUERY&limit=L`. Time to the first entry (the
             first body chunk holding one: the hub answers /entries in one JSON piece, so this
             is close to the full time) and to the full answer, median and p90 of --reps runs
             on one keep-alive connection, after 2 warm-up runs, and the CPU the hub and the
             queried workers spent per query. Peer: the same query straight to one worker (its
             NDJSON /entries). Reported: the 8/1 ratio against the goal 1.5x.
latency      One worker, the hub, one SSE client on the hub's /stream and one on the worker's
             own /stream (the peer: what the worker alone takes). Paced load at each --rates
             for --seconds. Latency = arrival at the client - (entry ts + elapsed_ms/1000), the
             entry's last packet. Entries received vs requests answered (losses), `lost`
             events, CPU of each process and its busiest thread from the start of the load
             until the last entry arrived.
clients      K SSE clients (--clients 1 10 100) with the same query on one hub over
             --clients-workers workers, paced load at --clients-rate: connections the workers
             hold for the hub (their /status stream.subscribers before, with and after the K
             clients, and TCP connections on their API port), CPU of the hub, the workers and
             the clients, latency p50/p99 over all clients, losses.
rss          Hub RSS (VmRSS) with 100 SSE clients that never read (send buffers of the bridge
             namespace capped at 64 KB so the hub's queues, not the kernel, hold the backlog)
             while --slow-requests entries flow; one reading client tells when they have.

Two designs side by side: --hub-tree/--worker-tree run the hub/workers from another tree, e.g.
an earlier commit exported with `git archive REV | tar -x -C DIR` (the default is this
checkout). --profile DIR runs py-spy (`.venv/bin/pip install py-spy`; not a project
dependency) on the hub and the worker during the fastest latency run and prints where their
time went. Namespaces and processes are removed on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH)]

from _common import ROOT, machine, table, tree_pids, wait_for_quiet  # noqa: E402
from _hub_cluster import AUTH, Lab, SseClients, established, run_load, set_tcp_wmem_max, worker_status  # noqa: E402
from _hub_load import open_slow_client  # noqa: E402
from support.processes import wait_for  # noqa: E402

SCENARIOS = ("first-entry", "latency", "clients", "rss")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FIRST_ENTRY_GOAL = 1.5
P99_GOAL_MS = 1000.0


# -- CPU and memory of processes ----------------------------------------------------------------
def thread_ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime in clock ticks of every thread of these processes."""
    ticks = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                ticks[int(tid)] = int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                continue
    return ticks


class CpuWindow:
    """CPU used by named process trees between start() and stop(): % of one core (200% = both
    cores of this machine), and the busiest single thread's %."""

    def __init__(self, trees: dict[str, int | list[int]]) -> None:
        self.pids = {name: [p for root in (roots if isinstance(roots, list) else [roots]) for p in tree_pids(root)]
                     for name, roots in trees.items()}
        self.before: dict[str, dict[int, int]] = {}
        self.started = 0.0
        self.seconds = 0.0
        self.result: dict[str, dict[str, float]] = {}

    def start(self) -> None:
        self.before = {name: thread_ticks(pids) for name, pids in self.pids.items()}
        self.started = time.monotonic()

    def stop(self) -> dict[str, dict[str, float]]:
        seconds = self.seconds = time.monotonic() - self.started
        for name, pids in self.pids.items():
            after = thread_ticks(pids)
            deltas = [(after[tid] - self.before[name].get(tid, 0)) / CLK_TCK for tid in after]
            self.result[name] = {"cpu_pct": 100 * sum(deltas) / seconds,
                                 "top_thread_pct": 100 * max(deltas, default=0) / seconds}
        return self.result


def cpu_cell(cpu: dict[str, float]) -> str:
    return f"{cpu['cpu_pct']:.0f}% ({cpu['top_thread_pct']:.0f}%)"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * fraction) - 1)]


# -- first-entry -------------------------------------------------------------------------------
def timed_get(client: httpx.Client, url: str, params: dict[str, Any], marker: bytes) -> tuple[float, float, bytes]:
    """(seconds to the first body chunk containing `marker`, seconds to the end, body)."""
    start = time.perf_counter()
    first = None
    chunks = []
    with client.stream("GET", url, params=params) as response:
        for chunk in response.iter_bytes():
            if first is None and marker in chunk:
                first = time.perf_counter() - start
            chunks.append(chunk)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: HTTP {response.status_code}: {b''.join(chunks)[:300]!r}")
    full = time.perf_counter() - start
    return first if first is not None else full, full, b"".join(chunks)


def repeat_query(url: str, params: dict[str, Any], reps: int, marker: bytes, check: Any,
                 cpu_of: dict[str, list[int]]) -> dict[str, float]:
    """reps timed GETs after two warm-ups, and the CPU the named processes spent per query
    (the hub's own, and the workers' summed: on 2 cores, 8 workers answering at once queue
    for the CPU where a cluster would run each on its own node)."""
    firsts, fulls = [], []
    with httpx.Client(timeout=120, headers=AUTH) as client:
        for _ in range(2):
            check(timed_get(client, url, params, marker)[2])
        cpu = CpuWindow(cpu_of)
        cpu.start()
        for _ in range(reps):
            first, full, body = timed_get(client, url, params, marker)
            firsts.append(first * 1000)
            fulls.append(full * 1000)
        used = cpu.stop()
        check(body)
    per_query = {f"{name}_cpu_ms": used[name]["cpu_pct"] * cpu.seconds * 10 / reps for name in cpu_of}
    return {"first_med_ms": statistics.median(firsts), "first_p90_ms": nearest_rank(firsts, 0.9),
            "full_med_ms": statistics.median(fulls), "full_p90_ms": nearest_rank(fulls, 0.9), **per_query}


def first_entry(lab: Lab, store: Path, args: argparse.Namespace) -> dict[str, Any]:
    counts = sorted(args.workers)
    nodes = lab.nodes[:max(counts)]
    lab.http_servers(nodes)
    workers = lab.workers(nodes, store / "first-entry")
    load = run_load([n.server_url for n in nodes], "/fe/", rate=args.preload_rate,
                    count=args.per_worker * len(nodes), connections=2)
    for worker in workers:
        wait_for(lambda w=worker: worker_status(w)["index"]["entries"] >= args.per_worker, 120,
                 f"{args.per_worker} entries indexed by {worker.node}", 0.25)
    indexed = [worker_status(w)["index"]["entries"] for w in workers]
    rows: list[dict[str, Any]] = []

    def hub_check(n: int, limit: int) -> Any:
        def check(body: bytes) -> None:
            answer = json.loads(body)
            bad = [w for w in answer["workers"] if not w["ok"]]
            expected = min(limit, sum(indexed[:n]))
            if bad or len(answer["entries"]) != expected:
                raise RuntimeError(f"hub answer: {len(answer['entries'])} entries (expected {expected}), "
                                   f"failed workers {bad}")
        return check

    def worker_check(limit: int) -> Any:
        def check(body: bytes) -> None:
            got = body.count(b"\n")
            if got != min(limit, indexed[0]):
                raise RuntimeError(f"worker answer: {got} entries, expected {min(limit, indexed[0])}")
        return check

    for limit in args.limit:
        params = {"q": args.query, "limit": limit}
        peer = repeat_query(workers[0].url + "/entries", params, args.reps, b"\n", worker_check(limit),
                            {"hub": [], "workers": [workers[0].process.pid]})
        rows.append({"over": "worker alone (no hub)", "workers": 1, "limit": limit,
                     "entries": min(limit, indexed[0]), **peer})
    for n in counts:
        hub = lab.hub(workers[:n])
        try:
            for limit in args.limit:
                params = {"q": args.query, "limit": limit}
                times = repeat_query(hub.url + "/entries", params, args.reps, b'"id"', hub_check(n, limit),
                                     {"hub": [hub.process.pid], "workers": [w.process.pid for w in workers[:n]]})
                rows.append({"over": f"hub, {n} worker{'s' if n > 1 else ''}", "workers": n, "limit": limit,
                             "entries": min(limit, sum(indexed[:n])), **times})
        finally:
            lab.stop(hub)
    ratios = {}
    for limit in args.limit:
        by_n = {r["workers"]: r for r in rows if r["limit"] == limit and r["over"].startswith("hub")}
        if min(counts) in by_n and max(counts) in by_n:
            ratios[limit] = (by_n[max(counts)]["first_med_ms"] / by_n[min(counts)]["first_med_ms"],
                             by_n[max(counts)]["full_med_ms"] / by_n[min(counts)]["full_med_ms"])
    print(f"\n### first-entry: `/entries?q={args.query}&limit=L`, {args.per_worker} entries per worker "
          f"(indexed: {min(indexed)}-{max(indexed)}), {args.reps} runs each after 2 warm-ups; preload "
          f"{load['answered']} requests at {load['answered_rps']:.0f}/s\n")
    print(table(["query over", "limit", "entries", "first entry median ms", "p90", "full answer median ms",
                 "p90", "hub CPU ms/query", "workers CPU ms/query"],
                [[r["over"], r["limit"], r["entries"], r["first_med_ms"], r["first_p90_ms"], r["full_med_ms"],
                  r["full_p90_ms"], r["hub_cpu_ms"] if r["workers"] and r["over"].startswith("hub") else None,
                  r["workers_cpu_ms"]] for r in rows]))
    for limit, (first, full) in ratios.items():
        verdict = "meets" if first <= FIRST_ENTRY_GOAL else "misses"
        print(f"\nlimit {limit}: {max(counts)} workers / {min(counts)} worker = {first:.2f}x to the first entry "
              f"({verdict} the goal <= {FIRST_ENTRY_GOAL}x), {full:.2f}x to the full answer")
    return {"rows": rows, "ratios": {str(k): v for k, v in ratios.items()}, "indexed": indexed, "preload": load}


# -- latency -----------------------------------------------------------------------------------
def profile_start(out_dir: Path, name: str, pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(spy, os.X_OK):
        print("--profile: py-spy not found (.venv/bin/pip install py-spy)", file=sys.stderr)
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                             "--format", "raw", "--subprocesses", "--nonblocking", "--threads",
                             "--output", str(out_dir / f"{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(path: Path, top: int = 10) -> list[tuple[str, float]]:
    """Own time by function (the innermost frame of each sample) from py-spy's raw output."""
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = stack.split(";")[-1]
        own[leaf] += int(count)
        total += int(count)
    return [(frame, 100 * n / total) for frame, n in own.most_common(top)] if total else []


def latency(lab: Lab, store: Path, args: argparse.Namespace) -> dict[str, Any]:
    node = lab.nodes[0]
    (server,) = lab.http_servers([node])
    (worker,) = lab.workers([node], store / "latency")
    hub = lab.hub([worker])
    rows = []
    for rate in args.rates:
        prefix = f"/r{int(rate)}/"
        via_hub = lab.start(SseClients(f"{hub.url}/stream?q={args.query}", 1, prefix, status_events=1))
        direct = lab.start(SseClients(f"{worker.url}/stream?q={args.query}", 1, prefix))
        before = worker_status(worker)
        cpu = CpuWindow({"hub": hub.process.pid, "worker": worker.process.pid, "server": server.process.pid,
                         "sse clients": via_hub.process.pid})
        profilers = []
        if args.profile and rate == max(args.rates):
            profilers = [p for p in (profile_start(args.profile, "hub", hub.process.pid, args.seconds),
                                     profile_start(args.profile, "worker", worker.process.pid, args.seconds)) if p]
        cpu.start()
        load = run_load([node.server_url], prefix, rate=rate, seconds=args.seconds, connections=8)
        via_hub.wait_entries(load["answered"])
        direct.wait_entries(load["answered"])
        used = cpu.stop()
        hub_r, direct_r = via_hub.result(), direct.result()
        lab.procs = [p for p in lab.procs if p not in (via_hub, direct)]
        for spy in profilers:
            spy.wait(60)
        after = worker_status(worker)
        rows.append({"rate": rate, "load": load, "hub": hub_r, "worker_direct": direct_r, "cpu": used,
                     "cpu_window_s": cpu.seconds,
                     "worker_entries": after["index"]["entries"] - before["index"]["entries"],
                     "capture_dropped": after["capture"]["dropped"] - before["capture"]["dropped"],
                     "shed_segments": after["dissection"]["shed_segments"] - before["dissection"]["shed_segments"],
                     "lag_s_after": after["dissection"]["lag_seconds"]})
    print(f"\n### latency: packet -> SSE client (`/stream?q={args.query}`), one worker, {args.seconds:g} s per rate\n")
    print(table(["target req/s", "answered req/s", "path", "received / answered", "lost events", "p50 ms",
                 "p90 ms", "p99 ms", "max ms"],
                [row for r in rows for row in (
                    [int(r["rate"]), round(r["load"]["answered_rps"]), "hub",
                     f"{r['hub']['unique_min']} / {r['load']['answered']}", r["hub"]["lost_events"],
                     r["hub"]["p50_ms"], r["hub"]["p90_ms"], r["hub"]["p99_ms"],
                     r["hub"]["max_ms"]],
                    ["", "", "worker direct", f"{r['worker_direct']['unique_min']} / {r['load']['answered']}",
                     r["worker_direct"]["lost_events"], r["worker_direct"]["p50_ms"], r["worker_direct"]["p90_ms"],
                     r["worker_direct"]["p99_ms"], r["worker_direct"]["max_ms"]])]))
    print("\nCPU from the start of the load until the last entry reached both SSE clients, % of one core "
          "(busiest thread in parentheses); worker counters over the run\n")
    print(table(["target req/s", "window s", "hub", "worker (both processes)", "HTTP server", "SSE client",
                 "worker entries", "capture drops", "shed segments", "dissection lag after s"],
                [[int(r["rate"]), r["cpu_window_s"], cpu_cell(r["cpu"]["hub"]), cpu_cell(r["cpu"]["worker"]),
                  cpu_cell(r["cpu"]["server"]), cpu_cell(r["cpu"]["sse clients"]), r["worker_entries"],
                  r["capture_dropped"], r["shed_segments"],
                  r["lag_s_after"]] for r in rows]))
    for r in rows:
        p99, missing = r["hub"]["p99_ms"], r["load"]["answered"] - r["hub"]["unique_min"]
        verdict = "meets" if p99 is not None and p99 <= P99_GOAL_MS and not missing else "misses"
        print(f"\n{int(r['rate'])} req/s: p99 through the hub {p99 if p99 is None else round(p99)} ms, "
              f"{missing} entries missing ({verdict} the goal p99 <= {P99_GOAL_MS:g} ms, nothing lost)")
    profiles = {}
    if args.profile:
        for name in ("hub", "worker"):
            path = args.profile / f"{name}.txt"
            if path.exists():
                profiles[name] = profile_summary(path)
                print(f"\npy-spy, {name} at {max(args.rates):g} req/s, own time by function (all threads; "
                      "py-spy leaves idle threads' samples out):\n")
                print(table(["function", "% of samples"], profiles[name]))
    return {"rows": rows, "profiles": profiles}


# -- clients -----------------------------------------------------------------------------------
def clients(lab: Lab, store: Path, args: argparse.Namespace) -> dict[str, Any]:
    nodes = lab.nodes[:args.clients_workers]
    lab.http_servers(nodes)
    workers = lab.workers(nodes, store / "clients")
    hub = lab.hub(workers)
    ports = [int(w.url.rsplit(":", 1)[1].split("/", 1)[0]) for w in workers]

    def subscribers() -> int:
        return sum(worker_status(w)["stream"]["subscribers"] for w in workers)
    rows = []
    for k in args.clients:
        prefix = f"/k{k}/"
        before = subscribers()
        readers = lab.start(SseClients(f"{hub.url}/stream?q={args.query}", k, prefix, status_events=len(workers)))
        time.sleep(1)
        during = subscribers()
        connections = sum(established(n, p) for n, p in zip(nodes, ports))
        cpu = CpuWindow({"hub": hub.process.pid, "workers": [w.process.pid for w in workers],
                         "sse clients": readers.process.pid})
        cpu.start()
        load = run_load([n.server_url for n in nodes], prefix, rate=args.clients_rate,
                        seconds=args.clients_seconds, connections=4)
        readers.wait_entries(load["answered"])
        used = cpu.stop()
        result = readers.result()
        lab.procs.remove(readers)
        time.sleep(3)
        rows.append({"clients": k, "subscribers_before": before, "worker_subscribers": during,
                     "subscribers_after": subscribers(), "worker_tcp": connections, "cpu_window_s": cpu.seconds,
                     "hub_rss_mb": rss_mb(hub.process.pid), "load": load, "cpu": used, "sse": result})
    print(f"\n### clients: K SSE clients with the same query (`/stream?q={args.query}`), hub over "
          f"{len(workers)} workers, {args.clients_rate:g} req/s for {args.clients_seconds:g} s\n")
    print("Worker stream subscribers (sum over the workers' /status) before the K clients came, with them, "
          "and 3 s after they left; TCP connections on the workers' API ports with them (the hub's status "
          "polls included); CPU from the start of the load until every client had every entry (or none came "
          "for 5 s), % of one core, busiest thread in parentheses.\n")
    print(table(["K", "worker subscribers before / with K / after", "worker API TCP conns", "window s",
                 "hub CPU", "workers CPU", "SSE clients CPU", "hub RSS MB", "received / answered (worst client)",
                 "lost events", "p50 ms", "p99 ms", "max ms"],
                [[r["clients"], f"{r['subscribers_before']} / {r['worker_subscribers']} / {r['subscribers_after']}",
                  r["worker_tcp"], r["cpu_window_s"], cpu_cell(r["cpu"]["hub"]), cpu_cell(r["cpu"]["workers"]),
                  cpu_cell(r["cpu"]["sse clients"]), r["hub_rss_mb"],
                  f"{r['sse']['unique_min']} / {r['load']['answered']}", r["sse"]["lost_events"],
                  r["sse"]["p50_ms"], r["sse"]["p99_ms"], r["sse"]["max_ms"]] for r in rows]))
    return {"rows": rows}


# -- rss ---------------------------------------------------------------------------------------
def rss(lab: Lab, store: Path, args: argparse.Namespace) -> dict[str, Any]:
    node = lab.nodes[0]
    lab.http_servers([node])
    (worker,) = lab.workers([node], store / "rss")
    saved = set_tcp_wmem_max(65536)   # this (the bridge) namespace only
    sockets = []
    try:
        hub = lab.hub([worker])
        pid = hub.process.pid
        idle = rss_mb(pid)
        sentinel = lab.start(SseClients(hub.url + "/stream", 1, "/rss/", status_events=1))
        sockets = [open_slow_client(hub.url + "/stream", AUTH["Authorization"].split()[1])
                   for _ in range(args.slow_clients)]
        wait_for(lambda: hub.metric("shark_hub_sse_clients") == args.slow_clients + 1, 30,
                 f"{args.slow_clients + 1} SSE clients at the hub")
        connected = rss_mb(pid)
        samples = [connected]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.25):
                samples.append(rss_mb(pid))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu = CpuWindow({"hub": pid})
        cpu.start()
        load = run_load([node.server_url], "/rss/", rate=args.slow_rate, count=args.slow_requests, connections=4)
        seen = sentinel.wait_entries(load["answered"], idle_s=10, timeout=180)
        used = cpu.stop()
        time.sleep(3)
        done.set()
        sampler.join(5)
        final = rss_mb(pid)
        reading = sentinel.result()
        lab.procs.remove(sentinel)
        for sock in sockets:
            sock.close()
        sockets = []
        wait_for(lambda: hub.metric("shark_hub_sse_clients") == 0, 30, "the hub's SSE clients gone")
        after_close = rss_mb(pid)
        result = {"slow_clients": args.slow_clients, "requests": load["answered"], "seconds": load["total_s"],
                  "idle_mb": idle, "connected_mb": connected, "peak_mb": max(samples + [final]),
                  "final_mb": final, "after_close_mb": after_close, "reader_seen": seen,
                  "reader_lost": reading["lost_events"], "hub_cpu": used["hub"]}
    finally:
        for sock in sockets:
            sock.close()
        Path("/proc/sys/net/ipv4/tcp_wmem").write_text(saved)
    r = result
    print(f"\n### rss: hub VmRSS, {r['slow_clients']} SSE clients that never read, {r['requests']} requests at "
          f"{args.slow_rate:g}/s ({r['seconds']:.0f} s); a reading client saw {r['reader_seen']} of them "
          f"(lost events {r['reader_lost']}); hub CPU {cpu_cell(r['hub_cpu'])}\n")
    print(table(["point", "hub RSS MB"],
                [["idle", r["idle_mb"]], [f"{r['slow_clients']} clients connected", r["connected_mb"]],
                 ["peak while entries flowed", r["peak_mb"]], ["3 s after the traffic", r["final_mb"]],
                 ["slow clients gone", r["after_close_mb"]]]))
    return r


# -- main --------------------------------------------------------------------------------------
def code_label(hub_tree: Path | None, worker_tree: Path | None) -> str:
    if hub_tree is not None or worker_tree is not None:
        return f"hub from {hub_tree or 'this checkout'}, workers from {worker_tree or 'this checkout'}"
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "hub/"], capture_output=True, text=True)
    label = rev.stdout.strip() or "unknown commit"
    return label + (" + uncommitted hub/ changes" if dirty.stdout.strip() else "")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="repeat for several; default: all four")
    parser.add_argument("--label", default="", help="names the hub design under test in the output")
    parser.add_argument("--hub-tree", type=Path, metavar="DIR",
                        help="run the hub (and its shark/) from DIR, e.g. an earlier commit: "
                             "git archive REV | tar -x -C DIR")
    parser.add_argument("--worker-tree", type=Path, metavar="DIR", help="run the workers from DIR")
    parser.add_argument("--query", default="http", help="KFL query of every scenario")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--max-load", type=float, default=0.0,
                        help="before each scenario wait (up to --patience s) for the 1-minute load to "
                             "fall below this; 0: do not wait")
    parser.add_argument("--patience", type=float, default=300)
    group = parser.add_argument_group("first-entry")
    group.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    group.add_argument("--per-worker", type=int, default=2000, help="requests preloaded per worker")
    group.add_argument("--preload-rate", type=float, default=3000)
    group.add_argument("--limit", type=int, nargs="+", default=[100, 1000])
    group.add_argument("--reps", type=int, default=10)
    group = parser.add_argument_group("latency")
    group.add_argument("--rates", type=float, nargs="+", default=[500, 1000, 2000])
    group.add_argument("--seconds", type=float, default=10)
    group.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the fastest rate into DIR")
    group = parser.add_argument_group("clients")
    group.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100])
    group.add_argument("--clients-workers", type=int, default=2)
    group.add_argument("--clients-rate", type=float, default=200)
    group.add_argument("--clients-seconds", type=float, default=10)
    group = parser.add_argument_group("rss")
    group.add_argument("--slow-clients", type=int, default=100)
    group.add_argument("--slow-requests", type=int, default=3000)
    group.add_argument("--slow-rate", type=float, default=500)
    args = parser.parse_args()
    scenarios = args.scenario or list(SCENARIOS)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, capture)")
    size = max(1, max(args.workers) if "first-entry" in scenarios else 0,
               args.clients_workers if "clients" in scenarios else 0)
    signal.signal(signal.SIGTERM, _interrupt)
    info = machine()
    code = code_label(args.hub_tree, args.worker_tree) + (f" ({args.label})" if args.label else "")
    print(f"hub benchmark: {', '.join(scenarios)}; code {code}; {info['nproc']} cores, load {info['load']}; "
          f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    results: dict[str, Any] = {"machine": info, "code": code, "argv": sys.argv}
    store = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    runners = {"first-entry": first_entry, "latency": latency, "clients": clients, "rss": rss}
    try:
        with Lab(size, args.hub_tree, args.worker_tree) as lab:
            for name in scenarios:
                if args.max_load > 0:
                    wait_for_quiet(args.max_load, args.patience)
                print(f"\n({name}: 1-minute load before {os.getloadavg()[0]:.2f})", flush=True)
                started = time.monotonic()
                results[name] = runners[name](lab, store, args)
                while lab.procs:   # each scenario starts from fresh servers, workers and hub
                    lab.stop(lab.procs[-1])
                print(f"\n({name}: {time.monotonic() - started:.0f} s, load after {os.getloadavg()[0]:.2f})",
                      flush=True)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {args.json_out}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as stopped:   # Ctrl-C or SIGTERM: everything was cleaned up on the way out
        print(f"bench_hub: interrupted ({stopped or 'Ctrl-C'}); namespaces and processes removed", file=sys.stderr)
        sys.exit(130)
