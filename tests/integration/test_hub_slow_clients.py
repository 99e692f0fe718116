"""100 SSE clients that never read: the hub's memory stays bounded (measured as the hub
process's VmRSS), each client's queue holds at most its 1000 events (`/metrics`
shark_hub_live_queued_events), a normal client still gets new entries, the client count goes
back down when the slow ones leave, and a client connecting after them is served."""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from support.processes import Proc, free_port, wait_for
from test_hub_live import AUTH, Hub, SseReader

pytestmark = pytest.mark.root

# 100 slow clients + 1 reading client. Each hub SSE client holds one upstream stream to each
# worker; httpx's default pool of 100 connections once starved the 101st client (and every
# /entries after it), so the hub's worker clients have no connection limit now.
SLOW_CLIENTS = 100
REQUESTS = 3000
TRAFFIC_BUDGET_S = 120.0          # traffic stops at REQUESTS or after this long, whichever first
MB = 1024 * 1024
CLIENT_QUEUE = 1000                # events a live client's queue holds (docs/OPERATIONS.md)

# The bound. Each SSE client has one queue of at most hub.stream.CLIENT_QUEUE = 1000 events; a
# queued event held its own copy of the entry's JSON when each client had its own upstream
# stream (measured then, and kept as the bound; clients of one query now share one HubEvent,
# hub/events.py): ~0.9 KB of summary JSON
# (measured 892-905 B) plus Python object overhead; measured ~1.0-1.1 KB per queued event
# while the queues fill (+45-50 MB per 44,400 events); call it <= 1.5 KB. 100 clients x 1000 x 1.5 KB =
# ~150 MB worst case for the queues; add per-connection state (uvicorn protocol, the httpx
# upstream stream, the asyncio transport's write buffer up to its 64 KB high-water mark:
# 100 x ~100 KB = ~10 MB) and allocator slack. 250 MB of growth over the idle hub is therefore
# a bound an unbounded queue would blow through (3000 entries x 100 clients x ~1.5 KB = ~450 MB)
# while a bounded one stays well under.
MAX_GROWTH_MB = 250
# Not linear in traffic: once ~1150 entries have gone by, every slow client's queue is full
# (1000 entries, plus ~70 in the 64 KB kernel send buffer and ~70 in the transport's write
# buffer) and the oldest are dropped. Measured on a 2-CPU box: +45-50 MB per 444 entries while
# the queues fill, then +23, +15, +10 MB per 444 (allocator settling, decaying, not linear). An
# unbounded queue would grow by the same ~45 MB every 444 entries, i.e. the second half of the
# traffic would cost as much as the first; we require it to cost under 60% of the first half.
SECOND_HALF_MAX_RATIO = 0.6


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def open_slow_client(base_url: str) -> socket.socket:
    """An SSE request on a raw socket whose reader never reads; a tiny receive buffer so the
    kernel stops accepting data early and the hub's side of the connection backs up."""
    parts = urlsplit(base_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # before connect: sets the window
    sock.connect((parts.hostname, parts.port))
    sock.sendall((f"GET {parts.path}/stream HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                  f"Authorization: {AUTH['Authorization']}\r\n"
                  "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").encode())
    return sock


def metric(hub: Hub, name: str) -> float:
    text = httpx.get(hub.url.removesuffix("/api/v1") + "/metrics", timeout=30, headers=AUTH).text
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics:\n{text}"
    return float(match.group(1))


def drive(port: int, count: int, budget_s: float) -> int:
    """`count` GETs on one keep-alive connection, stopping early after budget_s; returns sent."""
    deadline = time.monotonic() + budget_s
    sent = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        while sent < count and time.monotonic() < deadline:
            client.get(f"/load/{sent}")
            sent += 1
    return sent


@pytest.fixture
def http_server() -> Iterator[int]:
    """The test HTTP server with TCP_NODELAY (support/http_server.py --nodelay): with Nagle on, each
    keep-alive response's body waited for the client's delayed ACK, ~20 requests/s, and the traffic
    stopped at its time budget at ~2300 of the 3000 requests after 120 s; now all 3000 go in ~10-30 s."""
    port = free_port()
    server = Proc([sys.executable, "-m", "support.http_server", str(port), "--nodelay"],
                  env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    server.wait_line(r"listening")
    yield port
    server.stop()


TCP_WMEM = "/proc/sys/net/ipv4/tcp_wmem"


@pytest.fixture
def small_send_buffers():
    """Cap TCP send-buffer autotuning at 64 KB while the test runs (restored after). On lo the
    kernel otherwise grows each of the hub's socket send buffers to tcp_wmem's max (4 MB here):
    ~4500 entries per slow client would sit in the kernel, never in the hub's queues, and the
    test would measure nothing. With 64 KB only ~70 entries fit, so the queues do fill."""
    with open(TCP_WMEM) as file:
        saved = file.read().strip()
    low, default, _ = saved.split()
    with open(TCP_WMEM, "w") as file:
        file.write(f"{low} {default} 65536")
    yield
    with open(TCP_WMEM, "w") as file:
        file.write(saved)


def test_hundred_slow_clients_keep_hub_memory_bounded(small_send_buffers, start_worker, http_server,
                                                      record_property):
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", node="alpha")
    hub = Hub(worker.url)
    pid = hub.process.pid
    sockets: list[socket.socket] = []
    sentinel = normal = None
    try:
        wait_for(lambda: hub.get("/status").json()["hub"]["workers_ok"] == 1, what="worker up at the hub")
        idle = rss_mb(pid)
        # a reading client that tells us when the hub has received the traffic (not a slow one)
        sentinel = SseReader(hub.url + "/stream")
        wait_for(lambda: any(e.get("event") == "status" for e in sentinel.events), what="status event")
        sockets = [open_slow_client(hub.url) for _ in range(SLOW_CLIENTS)]
        wait_for(lambda: metric(hub, "shark_hub_sse_clients") == SLOW_CLIENTS + 1, timeout=30,
                 what=f"{SLOW_CLIENTS + 1} SSE clients at the hub")
        connected = rss_mb(pid)

        # RSS sampled in the background against how many entries the hub has fanned out so far
        samples: list[tuple[int, float]] = [(0, connected)]
        done = threading.Event()

        def entries_seen() -> int:   # counted, not decoded: sampled often
            return sum(1 for event in list(sentinel.events) if event.get("event") == "entry")

        queued: list[float] = []

        def sample() -> None:
            # every 0.1 s: the traffic now takes seconds, not minutes, and the bound compares
            # the RSS up to half the entries with the RSS at the end; the queues' fill every
            # 1 s (a /metrics request each)
            ticks = 0
            while not done.wait(0.1):
                samples.append((entries_seen(), rss_mb(pid)))
                ticks += 1
                if ticks % 10 == 0:
                    queued.append(metric(hub, "shark_hub_live_queued_events"))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        sent = drive(http_server, REQUESTS, TRAFFIC_BUDGET_S)
        sending_s = time.monotonic() - started
        assert sent >= REQUESTS * 0.6, f"only {sent} requests within {TRAFFIC_BUDGET_S}s"
        # the hub has fanned out (almost) everything sent; a few may still be in flight
        wait_for(lambda: len(sentinel.entries()) >= sent * 0.98, timeout=180, interval=0.5,
                 what=f"{sent} entries seen by the reading client")
        time.sleep(1)
        done.set()
        sampler.join(5)
        samples.append((len(sentinel.entries()), rss_mb(pid)))
        seen = samples[-1][0]
        peak = max(rss for _, rss in samples)
        half = max(rss for n, rss in samples if n <= seen / 2)    # RSS up to half the traffic
        final = samples[-1][1]
        sizes = [len(e["data"]) for e in sentinel.events if e.get("event") == "entry"]
        marks = [max((rss for n, rss in samples if n <= seen * k / 6), default=connected) for k in range(1, 7)]
        report = (f"hub RSS MB: idle {idle:.1f}, {SLOW_CLIENTS} slow clients connected {connected:.1f}, "
                  + ", ".join(f"<= {seen * k // 6} entries {rss:.1f}" for k, rss in enumerate(marks, 1))
                  + f", final {final:.1f}; peak growth {peak - idle:.1f}; "
                  f"lost events {metric(hub, 'shark_hub_sse_lost_events_total'):.0f}; "
                  f"sent {sent} in {sending_s:.1f}s, entries seen {seen}; "
                  f"entry JSON {min(sizes)}-{max(sizes)} B")
        print(report)
        record_property("hub_rss", report)
        queued.append(metric(hub, "shark_hub_live_queued_events"))
        report += f"; queued events max {max(queued):.0f}"
        assert sizes
        # The queues' bound itself: RSS alone cannot show it any more, since the clients of
        # one query share each event (an unbounded queue holds only references: ~5 MB here).
        # The slow clients' queues filled (so the bound was reached, not merely unneeded) and
        # never held more than CLIENT_QUEUE events each.
        assert max(queued) <= (SLOW_CLIENTS + 1) * CLIENT_QUEUE, report
        assert max(queued) >= SLOW_CLIENTS * CLIENT_QUEUE * 0.9, report
        assert peak - idle < MAX_GROWTH_MB, report
        assert final - half < SECOND_HALF_MAX_RATIO * (half - connected), report
        # (shark_hub_sse_lost_events_total stays 0 here: a `lost` event is counted when it is
        # sent, and these clients never read far enough to be sent one)

        # the reading client still gets new entries promptly, with the slow ones still connected
        httpx.get(f"http://127.0.0.1:{http_server}/after-the-flood", timeout=10)
        wait_for(lambda: any(e["request"]["path"] == "/after-the-flood" for e in sentinel.entries()),
                 timeout=20, what="a new entry on the reading client beside the slow ones")

        for sock in sockets:
            sock.close()
        sockets = []
        # only the reading client is left
        wait_for(lambda: metric(hub, "shark_hub_sse_clients") == 1, timeout=30,
                 what="SSE client count back to 1 after the slow clients left")
        # a client connecting after the flood is served as any other
        normal = SseReader(hub.url + "/stream")
        wait_for(lambda: any(e.get("event") == "status" for e in normal.events), timeout=20,
                 what="a status event for a client connecting after the slow ones left")
    finally:
        for sock in sockets:
            sock.close()
        for reader in (sentinel, normal):
            if reader is not None:
                reader.close()
        assert hub.stop() == 0, hub.output

