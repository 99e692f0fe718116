"""HTTP dissection rate from a stored pcap: our path against tshark, on the same file.

    .venv/bin/python tests/bench/bench_dissect.py [--exchanges 8000] [--repeat 3] [--json-out FILE]

The pcap is made once (kept in --work-dir, reused unless --regenerate): the HTTP test server
(tests/support/http_server.py) on lo, clients on keep-alive connections and on one connection
per request, a mix of GET/HEAD/POST, JSON, gzip, chunked, 204, 404/500 and bodies from 6 bytes
to 20 kB, captured with tcpdump -w. Then, each timed as a child process (wall time from start
to exit or to done, peak RSS and CPU from wait4):
  (a) in-process: worker.sources.open_file_source -> worker.packet.decode ->
      worker.assembler.Assembler -> worker.dissectors (select.open_session), counting exchanges;
      also its stages alone (read, +decode, +assembler without dissectors) to see where time goes;
  (b) the whole worker: `python -m worker --pcap FILE` until /status says the file source is
      finished and dissection caught up, entries counted from index.entries;
  (c) tshark -r FILE -T json -J http > file, and tshark -r FILE -Y http (the cheaper reference).
Messages are HTTP requests plus responses.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (PYTHON, ROOT, Child, Worker, machine, table, tree_cpu_seconds,  # noqa: E402
                     tree_peak_rss_mb, wait_for_quiet, write_json)

# (method, path, body) — cycled by every client, so every run of the generator sends the same mix.
REQUESTS: list[tuple[str, str, bytes | None]] = [
    ("GET", "/", None),
    ("GET", "/json", None),
    ("GET", "/api/orders?customer=42&page=3", None),
    ("GET", "/gzip", None),
    ("GET", "/chunked", None),
    ("GET", "/bytes/1500", None),
    ("POST", "/echo", json.dumps({"order": {"id": 7, "items": ["a", "b", "c"] * 20}}).encode()),
    ("GET", "/status/404", None),
    ("HEAD", "/json", None),
    ("GET", "/nobody", None),
    ("GET", "/bytes/20000", None),
    ("POST", "/created/orders", b'{"sku": "x-1", "qty": 2}'),
    ("GET", "/status/500", None),
    ("GET", "/deflate", None),
]
HEADERS = {"User-Agent": "shark-bench/1.0", "Accept": "*/*",
           "Authorization": "Bearer 0123456789abcdef", "X-Request-Id": "bench"}


# -- the pcap -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client(port: int, plan: list[int], keep_alive: bool, counts: dict[str, int],
            lock: threading.Lock) -> None:
    conn = None
    sent = answered = 0
    for i in plan:
        method, path, body = REQUESTS[i % len(REQUESTS)]
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = dict(HEADERS)
        if body is not None:
            headers["Content-Type"] = "application/json"
        if not keep_alive:
            headers["Connection"] = "close"
        conn.request(method, path, body=body, headers=headers)
        sent += 1
        response = conn.getresponse()
        response.read()
        answered += 1
        if not keep_alive:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()
    with lock:
        counts["requests"] += sent
        counts["responses"] += answered


def generate_pcap(path: Path, exchanges: int, logs: Path) -> dict:
    """Capture `exchanges` real HTTP exchanges on lo into `path`; returns what was sent."""
    port = _free_port()
    server = Child([PYTHON, "-m", "support.http_server", str(port)], logs, "http-server",
                   env={"PYTHONPATH": str(ROOT / "tests")})
    tcpdump = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"http server did not listen: {server.stderr()}")
                time.sleep(0.1)
        tcpdump = Child(["tcpdump", "-i", "lo", "-n", "-B", "65536", "-w", str(path),
                         f"tcp port {port}"], logs, "gen-tcpdump")
        tcpdump.wait_stderr(r"listening on lo", 20)
        time.sleep(0.5)
        # Three quarters on keep-alive connections of 100 requests, the rest one per connection.
        keep = exchanges * 3 // 4
        plans: list[tuple[list[int], bool]] = []
        for start in range(0, keep, 100):
            plans.append((list(range(start, min(start + 100, keep))), True))
        single = list(range(keep, exchanges))
        plans += [(single[k::16], False) for k in range(16)]
        random.Random(7).shuffle(plans)
        counts, lock = {"requests": 0, "responses": 0}, threading.Lock()
        queue = list(plans)
        queue_lock = threading.Lock()

        def worker_thread() -> None:
            while True:
                with queue_lock:
                    if not queue:
                        return
                    plan, keep_alive = queue.pop()
                _client(port, plan, keep_alive, counts, lock)
        threads = [threading.Thread(target=worker_thread) for _ in range(16)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.monotonic() - started
        time.sleep(1.0)
    finally:
        if tcpdump is not None:
            tcpdump.stop(signal.SIGINT)
        server.stop()
    text = tcpdump.stderr()
    dropped = int(m.group(1)) if (m := re.search(r"(\d+) packets? dropped by kernel", text)) else -1
    captured = int(m.group(1)) if (m := re.search(r"(\d+) packets? captured", text)) else -1
    if dropped != 0:
        raise RuntimeError(f"tcpdump dropped {dropped} packets while making {path}: rerun")
    info = {**counts, "packets": captured, "bytes": path.stat().st_size,
            "generation_seconds": round(took, 2)}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# -- (a) in-process -----------------------------------------------------------------------------
def in_process(path: str, stage: str) -> dict:
    """Runs inside a fresh child (`--in-process STAGE FILE`): read the file and take it as far
    as `stage` (read | decode | assemble | dissect); returns counts and seconds."""
    started = time.perf_counter()
    from worker.assembler import Assembler
    from worker.dissectors import registry
    from worker.dissectors.base import Exchange, FlowInfo
    from worker.dissectors.select import open_session
    from worker.packet import decode
    from worker.sources import open_file_source

    imported = time.perf_counter()
    counts = {"exchanges": 0, "requests": 0, "responses": 0, "incomplete": 0, "packets": 0}
    dissectors = registry()

    def emit(exchange: Exchange) -> None:
        counts["exchanges"] += 1
        counts["requests"] += 1
        if exchange.response is not None:
            counts["responses"] += 1
        if not exchange.complete:
            counts["incomplete"] += 1

    class Nothing:
        def on_data(self, *args: object) -> None: pass
        def on_gap(self, *args: object) -> None: pass
        def on_close(self, *args: object) -> None: pass

    nothing = Nothing()

    def new_session(flow: FlowInfo):  # type: ignore[no-untyped-def]
        if stage == "assemble":
            return nothing
        return open_session(flow, emit, dissectors)

    assembler = Assembler(new_session)
    source = open_file_source(path)
    linktype = source.linktype
    packet = assembler.packet
    n = 0
    last_ts = last_expire = 0
    while True:
        batch = source.read_batch(4096)
        if not batch:
            break
        if stage != "read":
            for ts_ns, data, _wirelen in batch:
                decoded = decode(linktype, data)
                n += 1
                if decoded is None or stage == "decode":
                    continue
                packet(ts_ns, (0, n), decoded)
                if ts_ns - last_expire > 1_000_000_000:
                    assembler.expire(ts_ns)
                    last_expire = ts_ns
        counts["packets"] += len(batch)
        last_ts = batch[-1][0]
    assembler.close_all(last_ts)
    error = source.stats().error
    source.close()
    done = time.perf_counter()
    return {**counts, "seconds": done - imported, "import_seconds": imported - started,
            "source_error": error}


def run_in_process(pcap: Path, stage: str, logs: Path) -> dict:
    child = Child([PYTHON, __file__, "--in-process", stage, str(pcap)], logs, f"inproc-{stage}",
                  measure=True)
    code = child.wait(600)
    if code != 0:
        raise RuntimeError(f"in-process {stage} failed ({code}): {child.stderr()[-2000:]}")
    result = json.loads(child.stdout())
    result.update(wall=child.ended - child.started, rss_mb=child.maxrss_mb, cpu_s=child.cpu_seconds)
    result["messages"] = result["requests"] + result["responses"]
    return result


# -- (b) the whole worker -----------------------------------------------------------------------
def run_worker(pcap: Path, logs: Path, base: Path) -> dict:
    storage = Path(tempfile.mkdtemp(prefix="worker-", dir=base))
    started = time.monotonic()
    worker = Worker(["--pcap", str(pcap), "--storage-limit", "4GB"], storage, logs, "worker-replay")
    try:
        # Done = the first poll that saw the file finished, dissection caught up and the final
        # entry count (confirmed by two more polls that see no change).
        seen: tuple[int, float] | None = None
        same = 0
        while True:
            polled = time.monotonic()
            status = worker.status()
            finished = all(s["finished"] for s in status["capture"]["sources"])
            caught_up = status["dissection"]["caught_up"]
            entries = status["index"]["entries"]
            if finished and caught_up:
                if seen is not None and seen[0] == entries:
                    same += 1
                    if same >= 2:
                        break
                else:
                    seen, same = (entries, polled), 0
            else:
                seen, same = None, 0
            if time.monotonic() - started > 600:
                raise RuntimeError(f"worker replay did not finish: {status}")
            time.sleep(0.1)
        done = seen[1]
        rss = tree_peak_rss_mb(worker.pid)
        cpu = tree_cpu_seconds(worker.pid)
        with urllib.request.urlopen(f"{worker.url}/entries?limit=100000", timeout=60) as response:
            rows = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    finally:
        worker.stop()
        shutil.rmtree(storage, ignore_errors=True)
    responses = sum(1 for r in rows if r.get("response") is not None)
    return {"wall": done - started, "startup": worker.ready - started, "entries": entries,
            "requests": len(rows), "responses": responses, "messages": len(rows) + responses,
            "incomplete": sum(1 for r in rows if r.get("complete") is False),
            "packets": status["dissection"]["packets"], "rss_mb": rss, "cpu_s": cpu}


# -- (c) tshark ---------------------------------------------------------------------------------
def run_tshark(pcap: Path, mode: str, logs: Path, base: Path) -> dict:
    out = base / f"tshark-{mode}.out"
    argv = ["tshark", "-r", str(pcap)]
    argv += ["-T", "json", "-J", "http"] if mode == "json" else ["-Y", "http"]
    child = Child(argv, logs, f"tshark-{mode}", stdout=out, measure=True)
    code = child.wait(600)
    if code != 0:
        raise RuntimeError(f"tshark {mode} failed ({code}): {child.stderr()[-2000:]}")
    requests = responses = lines = 0
    request_line = re.compile(r"\bHTTP\b.*\b(GET|POST|HEAD|PUT|DELETE) ")
    with open(out, errors="replace") as output:   # line by line: the JSON is large
        for line in output:
            if mode == "json":
                requests += '"http.request": "1"' in line
                responses += '"http.response": "1"' in line
            elif line.strip():
                lines += 1
                requests += bool(request_line.search(line))
    if mode != "json":
        responses = lines - requests
    size = out.stat().st_size
    out.unlink()
    return {"wall": child.ended - child.started, "requests": requests, "responses": responses,
            "messages": requests + responses, "rss_mb": child.maxrss_mb,
            "cpu_s": child.cpu_seconds, "output_bytes": size}


# -- main ---------------------------------------------------------------------------------------
def _median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["wall"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["walls"] = [round(r["wall"], 3) for r in runs]
    chosen["rss_mb"] = max(r["rss_mb"] for r in runs)
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchanges", type=int, default=8000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--work-dir", default="/tmp/shark-bench-dissect",
                        help="keeps the generated pcap between runs")
    parser.add_argument("--pcap", default=None, help="use this pcap instead of generating one")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage runs")
    parser.add_argument("--max-load", type=float, default=1.0,
                        help="wait (up to 5 min) for the 1-min load to drop below this first")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--in-process", nargs=2, metavar=("STAGE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(in_process(args.in_process[1], args.in_process[0])))
        return 0
    if shutil.which("tshark") is None:
        parser.error("tshark is not installed")

    base = Path(args.work_dir)
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if args.pcap:
        pcap = Path(args.pcap)
        meta_path = pcap.with_suffix(".json")
        made = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    else:
        pcap = base / f"http-{args.exchanges}.pcap"
        if args.regenerate or not pcap.exists() or not pcap.with_suffix(".json").exists():
            print(f"generating {pcap} ({args.exchanges} exchanges)", file=sys.stderr, flush=True)
            made = generate_pcap(pcap, args.exchanges, logs)
        else:
            made = json.loads(pcap.with_suffix(".json").read_text())
    print(f"pcap {pcap}: {made}", file=sys.stderr, flush=True)

    load_before = wait_for_quiet(args.max_load, 300)
    info = machine()
    results: dict[str, dict] = {}
    plan: list[tuple[str, object]] = [
        ("ours in-process", lambda: run_in_process(pcap, "dissect", logs)),
        ("ours worker --pcap", lambda: run_worker(pcap, logs, base)),
        ("tshark -T json -J http", lambda: run_tshark(pcap, "json", logs, base)),
        ("tshark -Y http", lambda: run_tshark(pcap, "filter", logs, base)),
    ]
    if not args.no_stages:
        plan += [(f"stage: {s}", (lambda s=s: run_in_process(pcap, s, logs)))
                 for s in ("read", "decode", "assemble")]
    runs: dict[str, list[dict]] = {name: [] for name, _ in plan}
    for i in range(args.repeat):   # interleaved, so a burst of load hits every tool alike
        for name, fn in plan:
            result = fn()  # type: ignore[operator]
            runs[name].append(result)
            print(f"  [{i + 1}/{args.repeat}] {name}: {result['wall']:.2f}s, "
                  f"{result.get('messages', '-')} messages", file=sys.stderr, flush=True)
    for name in runs:
        results[name] = _median_run(runs[name])
    load_after = [round(x, 2) for x in os.getloadavg()]

    peer = results["tshark -T json -J http"]
    rows = []
    for name in ("ours in-process", "ours worker --pcap", "tshark -T json -J http", "tshark -Y http"):
        r = results[name]
        rate = r["messages"] / r["wall"]
        r["messages_per_s"] = rate
        rows.append([name, r["messages"], r["wall"], rate, r["cpu_s"], r["rss_mb"],
                     f"{rate / (peer['messages'] / peer['wall']):.2f}x"])
    print(f"\nmachine: {info['nproc']} x {info['cpu']}, kernel {info['kernel']}, "
          f"Python {info['python']}; load before {load_before}, after {load_after}")
    print(f"pcap: {made.get('packets')} packets, {made.get('bytes', pcap.stat().st_size):,} bytes, "
          f"{made.get('requests')} requests / {made.get('responses')} responses sent; "
          f"median of {args.repeat} runs")
    print(table(["tool", "messages", "wall s", "messages/s", "cpu s", "peak RSS MB",
                 "rate / tshark json"], rows))
    worker = results["ours worker --pcap"]
    print(f"worker --pcap: startup (to 'serving on') {worker['startup']:.2f}s of its wall time; "
          f"{worker['entries']} entries, {worker['incomplete']} incomplete")
    inproc = results["ours in-process"]
    print(f"in-process: {inproc['exchanges']} exchanges, {inproc['incomplete']} incomplete, "
          f"imports {inproc['import_seconds']:.2f}s + work {inproc['seconds']:.2f}s")
    if not args.no_stages:
        stage_rows = []
        for s in ("read", "decode", "assemble"):
            r = results[f"stage: {s}"]
            stage_rows.append([s, r["packets"], r["seconds"], r["packets"] / r["seconds"]])
        stage_rows.append(["dissect (all)", inproc["packets"], inproc["seconds"],
                           inproc["packets"] / inproc["seconds"]])
        print("\nin-process stages (work time, imports excluded):")
        print(table(["up to", "packets", "seconds", "packets/s"], stage_rows))
    write_json(args.json_out, {"machine": info, "load_before": load_before, "load_after": load_after,
                               "pcap": {"path": str(pcap), **made}, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
