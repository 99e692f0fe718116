"""Traffic and clients for bench_hub.py, each run as its own process (so that none of them
shares a GIL with what it measures), usually inside a network namespace:

  python tests/bench/_hub_load.py serve HOST PORT
      An HTTP/1.1 keep-alive server on asyncio's Protocol API: one write per response, so no
      Nagle/delayed-ACK stall (the stdlib test server writes headers and body separately and
      waits ~40 ms per request on a keep-alive connection). Prints "listening HOST:PORT".
  python tests/bench/_hub_load.py load --target http://H:P [--target ...] --prefix /p/
                                      (--rate R --seconds S | --count N) [--connections C]
      Open-loop paced GETs (request i is due at start + i/R, whatever the answers do), spread
      round-robin over the targets, on keep-alive connections. --rate 0: as fast as the
      connections go. Prints one JSON line: sent, answered, errors, achieved rate, how late
      the sends were against their schedule.
  python tests/bench/_hub_load.py sse URL --clients K --prefix /p/
      K SSE connections to URL (a hub's or a worker's /stream). For every `entry` event whose
      request.path starts with --prefix: latency = arrival time - (ts + elapsed_ms/1000), i.e.
      from the entry's last packet (the response end) to the client. Prints "ready" once every
      client has its response headers and --status-events `status` events, "progress N" (the
      entries seen by the slowest client) every 0.25 s, and on SIGINT/SIGTERM one JSON line.

All clocks are this machine's CLOCK_REALTIME, so times from different namespaces compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import msgspec

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
            b"Server: shark-bench\r\n\r\nhello\n")


# -- server -----------------------------------------------------------------------------------
class ServerProtocol(asyncio.Protocol):
    """Answers every request head with RESPONSE; request bodies (Content-Length) are skipped."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.skip = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = []
        while True:
            if self.skip:
                dropped = min(self.skip, len(self.buffer))
                del self.buffer[:dropped]
                self.skip -= dropped
                if self.skip:
                    break
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(self.buffer[:end]).lower()
            del self.buffer[:end + 4]
            marker = head.find(b"\r\ncontent-length:")
            if marker >= 0:
                value = head[marker + 17:].split(b"\r\n", 1)[0]
                self.skip = int(value.strip() or b"0")
            out.append(RESPONSE)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(ServerProtocol, host, port, backlog=1024)
    bound = server.sockets[0].getsockname()
    print(f"listening {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


# -- paced client -----------------------------------------------------------------------------
class ClientProtocol(asyncio.Protocol):
    """One keep-alive connection; `request()` sends a GET and waits for the whole response."""

    def __init__(self, host: str) -> None:
        self.host = host.encode()
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        marker = head.find(b"\r\ncontent-length:")
        length = int(head[marker + 17:].split(b"\r\n", 1)[0]) if marker >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        del self.buffer[:end + 4 + length]
        if not self.waiter.done():
            self.waiter.set_result(status)

    async def request(self, path: str) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(b"GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: shark-bench\r\n\r\n"
                             % (path.encode(), self.host))
        return await self.waiter


@dataclass
class LoadResult:
    sent: int = 0
    answered: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    late_ms: list[float] = field(default_factory=list)


async def load(targets: list[str], prefix: str, rate: float, count: int, connections: int) -> dict[str, object]:
    """Send `count` GETs at `rate` per second (open loop; 0 = as fast as possible)."""
    loop = asyncio.get_running_loop()
    parts = [urlsplit(t) for t in targets]
    idle: list[asyncio.Queue[ClientProtocol]] = []
    for part in parts:
        queue: asyncio.Queue[ClientProtocol] = asyncio.Queue()
        for _ in range(connections):
            _, proto = await loop.create_connection(lambda p=part: ClientProtocol(p.netloc),
                                                    part.hostname, part.port)
            queue.put_nowait(proto)
        idle.append(queue)
    result = LoadResult()
    pending: set[asyncio.Task[None]] = set()

    async def one(index: int, target: int) -> None:
        proto = await idle[target].get()   # waits when every connection is busy
        try:
            status = await proto.request(f"{prefix}{index}")
            result.answered += 1
            result.statuses[status] = result.statuses.get(status, 0) + 1
        except ConnectionError:
            result.errors += 1
        finally:
            if not proto.closed:
                idle[target].put_nowait(proto)

    start = time.perf_counter()
    for index in range(count):
        if rate > 0:
            due = start + index / rate
            now = time.perf_counter()
            if due - now > 0.0005:
                await asyncio.sleep(due - now)
                now = time.perf_counter()
            result.late_ms.append(max(0.0, now - due) * 1000)
        elif len(pending) >= connections * len(targets):
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(one(index, index % len(targets)))
        pending.add(task)
        task.add_done_callback(pending.discard)
        result.sent += 1
    sending_s = time.perf_counter() - start
    if pending:
        await asyncio.wait(pending, timeout=30)
    total_s = time.perf_counter() - start
    late = sorted(result.late_ms)
    return {"sent": result.sent, "answered": result.answered, "errors": result.errors,
            "statuses": result.statuses, "sending_s": round(sending_s, 3), "total_s": round(total_s, 3),
            "achieved_rps": round(result.sent / sending_s, 1) if sending_s else None,
            "answered_rps": round(result.answered / total_s, 1) if total_s else None,
            "late_p50_ms": round(late[len(late) // 2], 3) if late else None,
            "late_p99_ms": round(late[int(len(late) * 0.99)], 3) if late else None,
            "start": time.time() - total_s}


# -- SSE readers ------------------------------------------------------------------------------
class _Request(msgspec.Struct):
    path: str | None = None


class _Entry(msgspec.Struct):
    """The three fields a latency needs; msgspec skips the rest of the entry unparsed."""
    ts: float
    elapsed_ms: float | None = None
    request: _Request | None = None


_decode_entry = msgspec.json.Decoder(_Entry).decode


@dataclass
class SseStats:
    status_events: int = 0
    entries: int = 0          # entry events with the prefix
    other_entries: int = 0    # entry events without it (other traffic)
    lost: int = 0             # sum of `event: lost` counts
    paths: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    headers_at: float | None = None
    error: str | None = None


async def read_sse(url: str, prefix: str, stats: SseStats) -> None:
    """One SSE client on a raw asyncio stream; parses only what it measures."""
    part = urlsplit(url)
    target = part.path + (f"?{part.query}" if part.query else "")
    try:
        reader, writer = await asyncio.open_connection(part.hostname, part.port, limit=1 << 22)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {part.netloc}\r\nAccept: text/event-stream\r\n"
                     f"{auth_header(os.environ.get('SHARK_TOKEN'))}Cache-Control: no-cache\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            stats.error = head.split(b"\r\n", 1)[0].decode("latin-1")
            return
        stats.headers_at = time.time()
        chunked = b"transfer-encoding: chunked" in head.lower()
        pending = b""
        event = b""
        prefix_bytes = prefix.encode()
        while True:
            if chunked:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    return
                data = await reader.readexactly(size + 2)
                data = data[:-2]
            else:
                data = await reader.read(1 << 16)
                if not data:
                    return
            arrived = time.time()
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            for raw in lines:
                line = raw.rstrip(b"\r")
                if line.startswith(b"event:"):
                    event = line[6:].strip()
                elif line.startswith(b"data:"):
                    payload = line[5:]
                    if event == b"entry":
                        if prefix_bytes not in payload:
                            stats.other_entries += 1
                            continue
                        entry = _decode_entry(payload)
                        path = entry.request.path if entry.request else None
                        if path is None or not path.startswith(prefix):
                            stats.other_entries += 1
                            continue
                        stats.entries += 1
                        stats.paths.add(path)
                        last_packet = entry.ts + (entry.elapsed_ms or 0.0) / 1000
                        stats.latencies.append((arrived - last_packet) * 1000)
                    elif event == b"status":
                        stats.status_events += 1
                    elif event == b"lost":
                        stats.lost += int(json.loads(payload).get("lost", 0))
                elif not line:
                    event = b""
    except (OSError, asyncio.IncompleteReadError, ValueError, msgspec.DecodeError) as error:
        stats.error = f"{type(error).__name__}: {error}"


def percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def sse_clients(url: str, clients: int, prefix: str, status_events: int) -> dict[str, object]:
    stats = [SseStats() for _ in range(clients)]
    tasks = [asyncio.create_task(read_sse(url, prefix, s)) for s in stats]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        if all(s.headers_at and s.status_events >= status_events for s in stats):
            break
        if all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.02)
    print("ready" if all(s.headers_at for s in stats) else "failed " + "; ".join(
        {s.error or "no answer" for s in stats if not s.headers_at}), flush=True)
    while not stop.is_set():
        print(f"progress {min(s.entries for s in stats)}", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except TimeoutError:
            pass
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pooled = sorted(x for s in stats for x in s.latencies)
    unique = [len(s.paths) for s in stats]
    return {"clients": clients, "connected": sum(1 for s in stats if s.headers_at),
            "errors": sorted({s.error for s in stats if s.error}),
            "entries_min": min(s.entries for s in stats), "entries_max": max(s.entries for s in stats),
            "unique_min": min(unique), "unique_max": max(unique),
            "lost_events": sum(s.lost for s in stats), "other_entries": sum(s.other_entries for s in stats),
            "p50_ms": percentile(pooled, 0.50), "p90_ms": percentile(pooled, 0.90),
            "p99_ms": percentile(pooled, 0.99), "max_ms": pooled[-1] if pooled else None,
            "min_ms": pooled[0] if pooled else None, "samples": len(pooled)}


# -- slow clients (used in-process by bench_hub.py) ----------------------------------------------
def auth_header(token: str | None) -> str:
    """The request header line that carries the token (hub and workers ask for it), or none."""
    return f"Authorization: Bearer {token}\r\n" if token else ""


def open_slow_client(url: str, token: str | None = None) -> socket.socket:
    """An SSE request whose reader never reads; a 4 KB receive buffer (set before connect, so it
    sets the window) makes the sender's side back up early."""
    part = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((part.hostname, part.port))
    sock.sendall((f"GET {part.path} HTTP/1.1\r\nHost: {part.netloc}\r\n{auth_header(token)}"
                  "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").encode())
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("serve")
    s.add_argument("host")
    s.add_argument("port", type=int)
    ld = commands.add_parser("load")
    ld.add_argument("--target", action="append", required=True, help="http://HOST:PORT")
    ld.add_argument("--prefix", default="/load/")
    ld.add_argument("--rate", type=float, default=0.0, help="requests/s over all targets; 0 = flat out")
    group = ld.add_mutually_exclusive_group(required=True)
    group.add_argument("--seconds", type=float)
    group.add_argument("--count", type=int)
    ld.add_argument("--connections", type=int, default=8, help="per target")
    se = commands.add_parser("sse")
    se.add_argument("url")
    se.add_argument("--clients", type=int, default=1)
    se.add_argument("--prefix", default="/")
    se.add_argument("--status-events", type=int, default=0,
                    help="wait for this many `status` events per client before `ready`")
    args = parser.parse_args()
    if args.command == "serve":
        asyncio.run(serve(args.host, args.port))
    elif args.command == "load":
        if args.count is None and args.rate <= 0:
            parser.error("load: --seconds needs a --rate above 0")
        count = args.count if args.count is not None else int(args.rate * args.seconds)
        print(json.dumps(asyncio.run(load(args.target, args.prefix, args.rate, count, args.connections))),
              flush=True)
    else:
        print(json.dumps(asyncio.run(sse_clients(args.url, args.clients, args.prefix, args.status_events))),
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
