"""Web UI benchmark (issue 6), run on demand as root; not part of the test suite.

  .venv/bin/python tests/bench/bench_spa.py [--entries 100000] [--connections 1000]
                                            [--steps 200] [--json-out FILE] [--keep DIR]

Writes a pcap of --entries small HTTP/1.1 exchanges (--connections keep-alive connections
between 20 clients and 10 services; 5% answered 500, 3% 404), runs `kubectl shark tap --local
--pcap FILE` on it, waits until the worker has dissected every exchange, and opens the UI in
Debian's headless Chromium (Playwright) with `?limit=N`, so the page holds all N entries. Then:

load       navigation -> all N rows in the page (the hub's /entries answer, JSON parsing, the
           store); the /entries request alone from the Resource Timing API; JS heap after.
scroll     --steps jumps to random positions of the feed: the list's draw() per jump (JS
           only) and the time from setting scrollTop to the second animation frame after it
           (style, layout, paint; bounded below by the 16.7 ms frame); then 100 wheel
           events of 600 px as a user scrolls. Long tasks (> 50 ms) counted throughout.
filter     a filter typed into the KFL box and Enter -> its rows shown (the hub asks the
           worker again: KFL runs there, not in the page), then the empty filter -> all N
           rows again.
ingest     N more entries pushed through the page's live path (addEntries, as the stream's
           batches arrive: 500 per animation frame) on top of the N held: time per batch,
           long tasks; the page keeps at most 200k rows and drops the oldest.
peer       the same rows as a plain <table> (every row in the DOM, no virtualization):
           time to build and lay out, and the same random scroll jumps.

DOM rows are counted after each phase: the list keeps only the rows in view (plus a margin).
Numbers are wall-clock on a shared machine; say so when you quote them.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dpkt
import httpx

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from _common import machine, table  # noqa: E402
from factories import tcp_conversation  # noqa: E402
from support.processes import Proc, free_port, wait_for  # noqa: E402

CHROMIUM = "/usr/lib/chromium/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
START_NS = 1_764_150_000_000_000_000
SERVICES = [(f"10.0.1.{i}", 8080) for i in range(1, 11)]
CLIENTS = [f"10.0.0.{i}" for i in range(1, 21)]


# -- the capture --------------------------------------------------------------------------------
def exchange(number: int) -> tuple[bytes, bytes, int]:
    """Request, response and status of exchange `number`: mostly 200, 5% 500, 3% 404."""
    status = 500 if number % 20 == 0 else 404 if number % 33 == 0 else 200
    path = ["/api/orders/", "/api/users/", "/api/cart/"][number % 3] + str(number)
    request = f"GET {path} HTTP/1.1\r\nHost: shop\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n".encode()
    body = json.dumps({"id": number, "ok": status == 200}).encode()
    reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}[status]
    response = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return request, response, status


def write_pcap(path: Path, entries: int, connections: int, seconds: float = 600.0) -> dict[str, int]:
    """`entries` exchanges over `connections` keep-alive connections, `seconds` of capture."""
    per_connection = -(-entries // connections)
    statuses: dict[str, int] = {}
    rng = random.Random(6)
    made = 0
    frames = 0
    with open(path, "wb") as out:
        writer = dpkt.pcap.Writer(out, nano=True)
        for conn in range(connections):
            count = min(per_connection, entries - made)
            if count <= 0:
                break
            pairs = [exchange(made + k) for k in range(count)]
            for _, _, status in pairs:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            client = (CLIENTS[conn % len(CLIENTS)], 20000 + conn)
            packets = tcp_conversation([p[0] for p in pairs], [p[1] for p in pairs], client=client,
                                       server=SERVICES[conn % len(SERVICES)], client_isn=1000 + conn,
                                       server_isn=900_000 + conn)
            # handshake, then per exchange: request, ACK, response, ACK; then the FINs
            start = START_NS + int(conn * seconds * 1e9 / connections)
            gap = int(seconds * 1e9 / connections / (count + 2))
            stamps = [start, start + 50_000, start + 100_000]
            for k in range(count):
                t = start + (k + 1) * gap
                latency = int(rng.lognormvariate(0, 1) * 1_000_000)   # ~1 ms median, long tail
                stamps += [t, t + 20_000, t + latency, t + latency + 20_000]
            tail = stamps[-1]
            stamps += [tail + 10_000 * (i + 1) for i in range(len(packets) - len(stamps))]
            for ts, (_, frame, _) in zip(stamps, packets):
                writer.writepkt(frame, ts=ts / 1e9)
                frames += 1
            made += count
    return {"exchanges": made, "frames": frames, **{f"status_{k}": v for k, v in statuses.items()}}


# -- the page -------------------------------------------------------------------------------------
LONG_TASKS_JS = """() => {
  window.__longTasks = [];
  new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); })
    .observe({ type: "longtask", buffered: false });
}"""

SCROLL_JS = """async (steps) => {
  const feed = document.querySelector("#feed");
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const draws = [];
  const original = window.shark.feed.draw.bind(window.shark.feed);
  window.shark.feed.draw = () => { const t = performance.now(); original(); draws.push(performance.now() - t); };
  const frames = [];
  let seed = 7;
  const random = () => { seed = (seed * 16807) % 2147483647; return seed / 2147483647; };
  for (let i = 0; i < steps; i += 1) {
    const t = performance.now();
    feed.scrollTop = random() * (feed.scrollHeight - feed.clientHeight);
    await frame(); await frame();
    frames.push(performance.now() - t);
  }
  window.shark.feed.draw = original;
  return { draws, frames, domRows: feed.querySelectorAll(".feed-row").length };
}"""

PEER_JS = """async ({ json, steps }) => {
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const rows = JSON.parse(json);
  const t0 = performance.now();
  const wrap = document.createElement("div");
  wrap.style.cssText = "height: 800px; overflow: auto; font: 12px monospace";
  const tableEl = document.createElement("table");
  const body = document.createElement("tbody");
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const value of [r.ts, r.protocol, r.src.ip, `${r.dst.ip}:${r.dst.port}`, r.summary, r.statusText, r.elapsed, r.size]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    body.append(tr);
  }
  tableEl.append(body);
  wrap.append(tableEl);
  document.body.append(wrap);
  void wrap.scrollHeight;   // force layout
  await frame();
  const build = performance.now() - t0;
  const frames = [];
  let seed = 7;
  const random = () => { seed = (seed * 16807) % 2147483647; return seed / 2147483647; };
  for (let i = 0; i < steps; i += 1) {
    const t = performance.now();
    wrap.scrollTop = random() * (wrap.scrollHeight - wrap.clientHeight);
    await frame(); await frame();
    frames.push(performance.now() - t);
  }
  return { build, frames, domRows: body.children.length };
}"""

INGEST_JS = """async ({ count, batch }) => {
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const base = window.shark.store.items.slice(-1000);
  let ts = window.shark.store.newest.ts;
  const times = [];
  const t0 = performance.now();
  for (let made = 0; made < count; made += batch) {
    const entries = [];
    for (let i = 0; i < batch; i += 1) {
      const r = base[(made + i) % base.length];
      ts += 0.0001;
      entries.push({ id: `live:${made + i}`, node: "live", protocol: r.protocol, ts, src: r.src, dst: r.dst,
        summary: r.summary, status: r.status, elapsed_ms: r.elapsed, request: {}, response: { status: r.status },
        size: { request: r.size, response: 0 }, tags: [], complete: true });
    }
    const t = performance.now();
    window.shark.addEntries(entries);
    times.push(performance.now() - t);
    await frame();
  }
  return { total: performance.now() - t0, times, kept: window.shark.store.length,
           trimmed: window.shark.store.trimmed, domRows: document.querySelectorAll("#feed .feed-row").length };
}"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "p90": round(pct(values, 90), 2),
            "p99": round(pct(values, 99), 2), "max": round(max(values), 2)}


def page_metrics(page: Any) -> dict[str, float]:
    """The page's JS heap in use after a full garbage collection, and its DOM nodes (Chrome
    DevTools Protocol): the plain table's rows live in the DOM, not in the JS heap."""
    session = page.context.new_cdp_session(page)
    try:
        session.send("HeapProfiler.collectGarbage")
        session.send("Performance.enable")
        metrics = {m["name"]: m["value"] for m in session.send("Performance.getMetrics")["metrics"]}
    finally:
        session.detach()
    return {"js_heap_mb": round(metrics.get("JSHeapUsedSize", 0) / 2**20, 1), "dom_nodes": int(metrics.get("Nodes", 0))}


def biggest_load(page: Any, limit: int) -> dict[str, Any]:
    """The page's own account of its main /entries load (window.shark.state.loadLog): the hub's
    answer (headers, body), parsing and row making (in the loader's Web Worker), and putting
    the rows into the list (on the page's thread)."""
    log = page.evaluate("window.shark.state.loadLog")
    main = max((item for item in log if item["limit"] == limit), key=lambda item: item["rows"], default=None)
    if main is None:
        return {}
    seconds = lambda ms: round((ms or 0) / 1000, 3)  # noqa: E731
    return {"hub_headers_s": seconds(main.get("headers_ms")), "hub_body_s": seconds(main.get("body_ms")),
            "json_mb": round(main.get("chars", 0) / 2**20, 1), "parse_s": seconds(main.get("parse_ms")),
            "rows_s": seconds(main.get("rows_ms")), "insert_s": seconds(main.get("insert_ms")),
            "in_web_worker": main.get("worker_thread")}


def long_tasks(page: Any) -> list[float]:
    tasks = page.evaluate("window.__longTasks.splice(0)")
    return [round(t, 1) for t in tasks]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-spa-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "entries": args.entries}
    capture = work / "exchanges.pcap"
    started = time.monotonic()
    results["pcap"] = write_pcap(capture, args.entries, args.connections)
    results["pcap"]["write_s"] = round(time.monotonic() - started, 1)
    print(f"pcap: {results['pcap']} -> {capture}", file=sys.stderr, flush=True)

    port = free_port()
    tap = Proc([sys.executable, "-m", "shark.cli", "tap", "--local", "--pcap", str(capture), "--no-open",
                "--proxy-port", str(port), "--state-dir", str(work / "state"), "--storage-limit", "1GB"])
    try:
        hub = tap.wait_line(rf"UI and API at (http://127\.0\.0\.1:{port})", timeout=120).group(1)
        token = tap.wait_line(r"log in to the UI at \S+\?token=(\S+)").group(1)
        started = time.monotonic()

        def dissected() -> int | None:
            status = httpx.get(f"{hub}/api/v1/status", timeout=30, headers={"Authorization": f"Bearer {token}"}).json()
            worker = (status["workers"] or [{}])[0].get("status") or {}
            entries = worker.get("index", {}).get("entries", 0)
            return entries if entries >= args.entries and worker.get("dissection", {}).get("caught_up") else None
        results["worker_dissect_s"] = round(wait_for(lambda: dissected() and time.monotonic() - started,
                                                     timeout=1800, what=f"{args.entries} entries", interval=1.0), 1)
        print(f"worker: all entries after {results['worker_dissect_s']} s", file=sys.stderr, flush=True)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.add_init_script(f"({LONG_TASKS_JS})()")
            limit = min(args.entries, 100_000)
            started = time.monotonic()
            page.goto(f"{hub}/?limit={limit}&token={token}")     # logged in as tap opens it
            page.wait_for_function(f"window.shark && window.shark.store.length >= {limit} && window.shark.state.loads === 0",
                                   timeout=600_000, polling=50)
            load_s = time.monotonic() - started
            loaded = biggest_load(page, limit)
            results["load"] = {"rows": page.evaluate("window.shark.store.length"), "total_s": round(load_s, 2),
                               **loaded,
                               **page_metrics(page), "long_tasks_ms": long_tasks(page),
                               "dom_rows": page.evaluate("document.querySelectorAll('#feed .feed-row').length")}
            print(f"load: {results['load']}", file=sys.stderr, flush=True)

            scroll = page.evaluate(SCROLL_JS, args.steps)
            results["scroll"] = {"draw_ms": summary(scroll["draws"]), "frame_ms": summary(scroll["frames"]),
                                 "dom_rows": scroll["domRows"], "long_tasks_ms": long_tasks(page)}
            page.locator("#feed").hover()
            started = time.monotonic()
            for _ in range(100):
                page.mouse.wheel(0, 600)
            page.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
            results["scroll"]["wheel_100x600px_s"] = round(time.monotonic() - started, 2)
            results["scroll"]["wheel_long_tasks_ms"] = long_tasks(page)
            print(f"scroll: {results['scroll']}", file=sys.stderr, flush=True)

            expected = results["pcap"].get("status_500", 0)
            filters = {}
            for label, query, want in (("status >= 500", "status >= 500", min(expected, limit)),
                                       ('request.path.startsWith("/api/users/")', 'request.path.startsWith("/api/users/")', None),
                                       ("(none: all rows again)", "", limit)):
                box = page.get_by_role("combobox", name="KFL filter")
                box.fill(query)
                page.evaluate("window.shark.state.loadLog.splice(0)")
                started = time.monotonic()
                box.press("Enter")
                page.wait_for_function(
                    """([q, want]) => window.shark.state.q === q && window.shark.state.loads === 0
                       && (want === null ? window.shark.store.length > 0 : window.shark.store.length >= want)""",
                    arg=[query, want], timeout=600_000, polling=20)
                took = time.monotonic() - started
                filters[label] = {"rows": page.evaluate("window.shark.store.length"), "s": round(took, 2),
                                  **biggest_load(page, limit), "long_tasks_ms": long_tasks(page)}
                print(f"filter {label}: {filters[label]}", file=sys.stderr, flush=True)
            results["filter"] = filters

            ingest = page.evaluate(INGEST_JS, {"count": args.entries, "batch": 500})
            results["ingest"] = {"entries": args.entries, "batch": 500, "total_s": round(ingest["total"] / 1000, 2),
                                 "add_ms": summary(ingest["times"]), "kept": ingest["kept"], "trimmed": ingest["trimmed"],
                                 "dom_rows": ingest["domRows"], "long_tasks_ms": long_tasks(page),
                                 **page_metrics(page)}
            print(f"ingest: {results['ingest']}", file=sys.stderr, flush=True)

            # one JSON string crosses to Python and back quickly; 100k objects do not
            rows = page.evaluate(f"JSON.stringify(window.shark.store.items.slice(0, {limit}))")
            peer_page = browser.new_page(viewport={"width": 1440, "height": 900})
            peer_page.set_content("<!doctype html><body></body>")
            peer_page.evaluate(LONG_TASKS_JS)
            peer = peer_page.evaluate(PEER_JS, {"json": rows, "steps": args.steps})
            results["peer_plain_table"] = {"rows": peer["domRows"], "build_s": round(peer["build"] / 1000, 2),
                                           "frame_ms": summary(peer["frames"]), **page_metrics(peer_page),
                                           "long_tasks_count": len(long_tasks(peer_page))}
            print(f"peer: {results['peer_plain_table']}", file=sys.stderr, flush=True)
            browser.close()
    finally:
        tap.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


def report(results: dict[str, Any]) -> None:
    load, scroll, ingest, peer = results["load"], results["scroll"], results["ingest"], results["peer_plain_table"]
    rows = [
        ["load", f"{load['rows']:,} rows in {load['total_s']} s: hub {load['hub_headers_s']} s to headers + "
                 f"{load['hub_body_s']} s body ({load['json_mb']} MB JSON), parse {load['parse_s']} s and rows "
                 f"{load['rows_s']} s in the Web Worker, into the list {load['insert_s']} s; JS heap {load['js_heap_mb']} MB, "
                 f"{load['dom_nodes']:,} DOM nodes; {len(load['long_tasks_ms'])} long tasks, longest "
                 f"{max(load['long_tasks_ms'], default=0)} ms"],
        ["scroll (random jumps)", f"draw() p50 {scroll['draw_ms']['p50']} / p99 {scroll['draw_ms']['p99']} ms; "
                                  f"to the 2nd frame p50 {scroll['frame_ms']['p50']} / p99 {scroll['frame_ms']['p99']} ms; "
                                  f"{scroll['dom_rows']} rows in the DOM; {len(scroll['long_tasks_ms'])} long tasks"],
        ["scroll (wheel)", f"100 x 600 px in {scroll['wheel_100x600px_s']} s; {len(scroll['wheel_long_tasks_ms'])} long tasks"],
    ]
    for label, item in results["filter"].items():
        rows.append([f"filter {label}", f"{item['rows']:,} rows in {item['s']} s (hub "
                                        f"{round(item.get('hub_headers_s', 0) + item.get('hub_body_s', 0), 2)} s); "
                                        f"{len(item['long_tasks_ms'])} long tasks, longest {max(item['long_tasks_ms'], default=0)} ms"])
    rows.append(["ingest", f"{ingest['entries']:,} live entries in batches of {ingest['batch']}: {ingest['total_s']} s, "
                           f"addEntries p50 {ingest['add_ms']['p50']} / p99 {ingest['add_ms']['p99']} / max {ingest['add_ms']['max']} ms; "
                           f"kept {ingest['kept']:,} (dropped {ingest['trimmed']:,}); {len(ingest['long_tasks_ms'])} long tasks; "
                           f"JS heap {ingest['js_heap_mb']} MB, {ingest['dom_nodes']:,} DOM nodes"])
    rows.append(["peer: plain table", f"{peer['rows']:,} rows built and laid out in {peer['build_s']} s; random jumps to the "
                                      f"2nd frame p50 {peer['frame_ms']['p50']} / p99 {peer['frame_ms']['p99']} ms; "
                                      f"JS heap {peer['js_heap_mb']} MB, {peer['dom_nodes']:,} DOM nodes; "
                                      f"{peer['long_tasks_count']} long tasks"])
    print(table(["phase", "result"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200, help="random scroll jumps")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--keep", help="keep the pcap and the store in this directory")
    args = parser.parse_args()
    results = run(args)
    print(json.dumps(results, indent=1), file=sys.stderr)
    report(results)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
