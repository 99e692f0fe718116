"""A worker and a hub under steady mixed traffic (HTTP/1, Redis, DNS on lo) for a while, their
memory and the store's disk use sampled every second: the soak benchmark
(tests/bench/bench_soak.py, minutes) and its short version in the suite
(tests/integration/test_soak_short.py) share it.

The worker captures only the soak's ports; a live client follows the hub's /stream the whole
time (so the hub's feed works too). Redis is the machine's server, under keys `shark:soak:*`
deleted after; HTTP is the test server; DNS a dnslib server on a free port, one UDP socket per
query as stub resolvers do.
"""

from __future__ import annotations

import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from support.procstat import dir_apparent_bytes, tree_rss_mb
from support.processes import Proc, Worker, free_port

TESTS = Path(__file__).resolve().parents[1]


@dataclass
class Sample:
    t: float
    worker_rss_mb: float
    hub_rss_mb: float
    store_bytes: int
    entries: int
    kernel_dropped: int
    shed_bytes: int
    live_lost: int


@dataclass
class SoakResult:
    samples: list[Sample]
    requests: dict[str, int]            # exchanges the clients completed, per protocol
    errors: dict[str, int]              # client errors, per protocol
    streamed: int                       # entry events the hub's live client received
    storage_limit: int
    final_status: dict[str, Any] = field(default_factory=dict)

    def spread(self, name: str) -> tuple[float, float, float]:
        """min, median, max of one sampled series."""
        values = [getattr(s, name) for s in self.samples]
        return min(values), statistics.median(values), max(values)


class _Clients:
    """Traffic threads until stopped, counting what they completed."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.requests: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.threads: list[threading.Thread] = []

    def run(self, name: str, once: Callable[[], None], setup: Callable[[], Any] | None = None) -> None:
        def loop() -> None:
            while not self.stop.is_set():
                try:
                    once()
                    self.requests[name] = self.requests.get(name, 0) + 1
                except Exception:  # noqa: BLE001 - counted; a soak goes on
                    self.errors[name] = self.errors.get(name, 0) + 1
                    time.sleep(0.01)
        thread = threading.Thread(target=loop, name=f"soak-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def _dns_server(port: int) -> Any:
    from dnslib import QTYPE, RR, A
    from dnslib.server import BaseResolver, DNSLogger, DNSServer

    class Fixed(BaseResolver):
        def resolve(self, request, handler):  # noqa: ANN001, ANN201 (dnslib's interface)
            reply = request.reply()
            if request.q.qtype == QTYPE.A:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("192.0.2.10"), ttl=60))
            return reply
    server = DNSServer(Fixed(), port=port, address="127.0.0.1",
                       logger=DNSLogger("-recv,-send,-request,-reply,-truncated,-error,-data"))
    server.start_thread()
    return server


CATCH_UP_S = 30.0


def soak(seconds: float, tmp: Path, storage_limit: str = "16MB", clients_per_protocol: int = 1,
         on_sample: Callable[[Sample], None] | None = None) -> SoakResult:
    import redis
    from dnslib import DNSRecord

    http_port, dns_port = free_port(), free_port()
    http = Proc([sys.executable, "-m", "support.http_server", str(http_port)], env={"PYTHONPATH": str(TESTS)})
    http.wait_line("listening")
    dns = _dns_server(dns_port)
    store = tmp / "soak-store"
    worker = Worker(["--iface", "lo", "--bpf", f"tcp port {http_port} or tcp port 6379 or udp port {dns_port}",
                     "--storage-limit", storage_limit], store, node="soak")
    hub = Proc([sys.executable, "-m", "hub", "--worker", worker.url.removesuffix("/api/v1"), "--listen", "127.0.0.1:0"])
    hub_url = hub.wait_line(r"hub serving on (http://\S+)").group(1)
    streamed = [0]
    following = threading.Event()

    def follow() -> None:
        try:
            with httpx.stream("GET", f"{hub_url}/api/v1/stream", timeout=httpx.Timeout(30, read=None)) as answer:
                following.set()
                for line in answer.iter_lines():
                    if line.startswith("event: entry"):
                        streamed[0] += 1
        except httpx.HTTPError:
            pass
    threading.Thread(target=follow, name="soak-follow", daemon=True).start()
    following.wait(10)
    clients = _Clients()
    caches: list[Any] = []
    try:
        for _ in range(clients_per_protocol):
            web = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10)
            r = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
            caches += [web, r]
            counter = iter(range(10**12))
            clients.run("http", lambda web=web, counter=counter: (
                web.post("/echo", json={"n": next(counter)}) if next(counter) % 4 == 0 else web.get("/json")))
            clients.run("redis", lambda r=r, counter=counter: (
                r.set(f"shark:soak:{next(counter) % 1000}", "v" * 64), r.get("shark:soak:1")))

            def query(counter=counter) -> None:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(2)
                    s.sendto(DNSRecord.question(f"h{next(counter) % 5000}.soak.test").pack(), ("127.0.0.1", dns_port))
                    s.recv(4096)
            clients.run("dns", query)
        samples: list[Sample] = []
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(1.0)
            status = worker.status()
            sample = Sample(
                t=round(time.monotonic() - started, 1), worker_rss_mb=tree_rss_mb(worker.process.pid),
                hub_rss_mb=tree_rss_mb(hub.process.pid), store_bytes=dir_apparent_bytes(str(store)),
                entries=int(status["index"]["entries"]),
                kernel_dropped=sum(int(s.get("dropped") or 0) for s in status["capture"]["sources"]),
                shed_bytes=int(status["dissection"].get("shed_bytes") or 0),
                live_lost=int((status.get("stream") or {}).get("lost") or 0))
            samples.append(sample)
            if on_sample is not None:
                on_sample(sample)
        clients.join()
        # What a user sees once the traffic stops: the worker catches up on what it stores (a
        # worker that fell behind sheds what was evicted before it got there, and its index
        # holds only what is still stored), so the final status is taken once it has.
        deadline = time.monotonic() + CATCH_UP_S
        final = worker.status()
        while not final["dissection"].get("caught_up") and time.monotonic() < deadline:
            time.sleep(0.5)
            final = worker.status()
        limit = int(final["store"]["limit"])
        return SoakResult(samples, dict(clients.requests), dict(clients.errors), streamed[0], limit, final)
    finally:
        clients.join()
        for cache in caches:
            cache.close()
        try:
            r = redis.Redis(host="127.0.0.1", port=6379)
            keys = list(r.scan_iter(match="shark:soak:*"))
            if keys:
                r.delete(*keys)
            r.close()
        except redis.RedisError:
            pass
        hub.stop()
        worker.stop()
        dns.stop()
        dns.server.server_close()
        http.stop()
