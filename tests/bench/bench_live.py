"""How many entries per second a worker's live /stream carries to one client, and what it loses.

    .venv/bin/python tests/bench/bench_live.py --pcap FILE [--clients 1] [--hub] [--json-out FILE]
    .venv/bin/python tests/bench/bench_live.py --live REQUESTS [--clients 1] [--hub] [--json-out FILE]

The worker replays FILE (`--pcap`) as fast as it dissects; each client (curl) subscribes to
/stream as soon as the worker serves, without Last-Event-ID, so everything indexed after its
`hello` comes live. Per client: entries received, the `lost` the worker reported, and the
entries the index holds after the hello's head (what a lossless stream delivers). The rate is
the dissection's: what the stream had to carry. With --hub the clients read a hub's /stream
(`python -m hub --worker ...`) instead: the hub's hello does not name the worker's head, so a
client is counted from its first entry on (its event ids carry the worker's seq). Captures of busy servers: bench_protocols.py
makes them (e.g. its redis capture: 200k commands).

--live REQUESTS captures instead: the worker on lo (`tcp port 6379`) while redis-benchmark
sends REQUESTS SETs and as many GETs (64 bytes; --connections, 4 by default), as fast as it
goes or at --rate entries/s (a burst every 0.1 s) to the machine's Redis, as fast
as it goes. One more client, a raw socket in its own process, stamps each read with the clock
and takes the `ts` (the request's first packet) of the last entry in it: the packet-to-client
latency, p50/p99 over the reads. Then the CPU each stage used from the first request until the
worker caught up (and 2 s more), in all and per entry: the worker's event loop (/stream), its
other threads (mostly the shard merge: index writes, publishing), its dissection shards and
capture child, the hub's event loop, and the load itself (redis-benchmark, redis-server). On a
shared machine latency mostly says how long the stages waited for a core; the CPU per entry
says what each costs, so what a rate needs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, Child, Worker, is_shard_server, machine, table, tree_pids, write_json  # noqa: E402


class Reader:
    """One /stream client: curl writing the raw stream to a file (a client in C, so the
    worker is what is measured; a Python reader per thread falls behind first), read after."""

    def __init__(self, url: str, out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(["curl", "-sN", "-o", str(out), url + "/stream"])

    def stop(self) -> dict[str, int | None]:
        self.process.terminate()
        self.process.wait(10)
        head, entries, lost, seqs = None, 0, 0, []
        for event in self.out.read_bytes().replace(b"\r\n", b"\n").split(b"\n\n"):
            if b"event: entry\n" in event:
                entries += 1
                if event.startswith(b"id: "):     # the worker's SEQ, or the hub's NODE@STORE:SEQ
                    seqs.append(int(event[4:event.index(b"\n")].rpartition(b":")[2]))
            elif b"event: hello\n" in event:
                head = json.loads(event.split(b"data: ", 1)[1])["head"]
            elif b"event: lost\n" in event:
                lost += json.loads(event.split(b"data: ", 1)[1])["lost"]
        if head is None and seqs:
            head = min(seqs) - 1
        return {"head": head, "entries": entries, "lost": lost}


def latency_reader(url: str, out: Path) -> None:
    """The --live latency client (run as its own process): reads the raw stream until SIGTERM,
    then writes {entries, lost, latencies} to `out`; meanwhile `out`.count holds the entries
    received and reported lost so far. Only whole events count: a read can end anywhere in one."""
    import signal
    import socket
    from urllib.parse import urlsplit
    parts = urlsplit(url + "/stream")
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode())
    entries, lost, latencies, pending = 0, 0, [], b""
    progress, said = out.with_suffix(".count"), time.monotonic()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    sock.settimeout(0.5)
    while not stopping:
        if time.monotonic() - said > 0.2:
            said = time.monotonic()
            progress.write_text(f"{entries} {lost}")
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except InterruptedError:
            break
        if not data:
            break
        now = time.time()
        buffer = pending + data
        cut = buffer.rfind(b"\r\n\r\n")     # the end of the last whole event (events end with a blank line)
        if cut < 0:
            pending = buffer
            continue
        whole, pending = buffer[:cut + 4], buffer[cut + 4:]
        entries += whole.count(b"event: entry\r\n")
        for found in whole.split(b'"lost":')[1:]:
            number = found.split(b",")[0].split(b"}")[0].strip()
            lost += int(number) if number.isdigit() else 0
        at = whole.rfind(b'"ts":')
        if at >= 0:
            end = whole.find(b",", at)
            if end > 0:
                latencies.append(now - float(whole[at + 5:end]))
    out.write_text(json.dumps({"entries": entries, "lost": lost, "latencies": latencies}))


def accounted(timing: Path) -> int:
    """What the latency client has received or been told it lost so far."""
    try:
        return sum(int(n) for n in timing.with_suffix(".count").read_text().split())
    except (OSError, ValueError):
        return 0


def front(args: argparse.Namespace, worker: Worker, work: Path) -> tuple[Child | None, str]:
    """With --hub, a hub in front of `worker` and its URL; else no hub and the worker's."""
    return start_hub(worker, work) if args.hub else (None, worker.url)


def start_hub(worker: Worker, work: Path) -> tuple[Child, str]:
    """A hub in front of `worker`, and the API URL its clients read."""
    hub = Child([PYTHON, "-m", "hub", "--worker", worker.url.removesuffix("/api/v1"), "--listen", "127.0.0.1:0"],
                work, "hub")
    return hub, hub.wait_stderr(r"hub serving on (http://[^\s]+)").group(1) + "/api/v1"


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid` now."""
    seconds: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return seconds
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return seconds


def cpu_by_role(worker: int, hub: int | None) -> dict[str, float]:
    """CPU seconds so far of each stage of the live path: the worker's event loop (the API and
    /stream) apart from its other threads (the shard merge, which writes the index and
    publishes; the API's worker threads), its capture child, its dissection shards (the
    forkserver's children) and the hub's event loop and other threads."""
    roles: dict[str, float] = {}

    def add(role: str, seconds: float) -> None:
        roles[role] = roles.get(role, 0.0) + seconds

    for tid, seconds in _thread_cpu(worker).items():
        add("worker event loop (/stream)" if tid == worker else "worker merge + other threads", seconds)
    for pid in tree_pids(worker)[1:]:
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent != worker:
            add("worker dissection shards", sum(_thread_cpu(pid).values()))
        elif not is_shard_server(pid):
            add("worker capture child", sum(_thread_cpu(pid).values()))
    if hub is not None:
        for tid, seconds in _thread_cpu(hub).items():
            add("hub event loop (/stream)" if tid == hub else "hub other threads", seconds)
    return roles


def load_cpu() -> dict[str, float]:
    """CPU seconds so far of the load: the redis-benchmark runs this process waited for, and
    the Redis server (the machine's: other users of it count too)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    roles = {"redis-benchmark (the load)": children.ru_utime + children.ru_stime}
    for pid in subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True).stdout.split():
        roles["redis-server"] = roles.get("redis-server", 0.0) + sum(_thread_cpu(int(pid)).values())
    return roles


def cpu_rows(before: dict[str, float], after: dict[str, float], wall_s: float, entries: int) -> list[list[Any]]:
    """Per stage: CPU seconds, share of one core over the run, and microseconds per entry."""
    rows = []
    for role, seconds in after.items():
        used = seconds - before.get(role, 0.0)
        rows.append([role, f"{used:.2f}", f"{100 * used / wall_s:.0f}%",
                     f"{1e6 * used / entries:.0f}" if entries else "-"])
    return rows


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def live(args: argparse.Namespace, work: Path) -> None:
    worker = Worker(["--iface", "lo", "--bpf", "tcp port 6379", "--storage-limit", "2GB"], work / "store", work,
                    "worker")
    hub: Child | None = None
    try:
        hub, url = front(args, worker, work)
        timing = work / "latency.json"
        reader = subprocess.Popen([PYTHON, __file__, "--latency-reader", url, str(timing)])
        readers = [Reader(url, work / f"client-{n}.sse") for n in range(args.clients - 1)]
        time.sleep(2.0)                        # the streams open (the hub's upstream with them)
        before = worker.status()["index"]["entries"]
        hub_pid = hub.pid if hub is not None else None
        cpu_before = cpu_by_role(worker.pid, hub_pid) | load_cpu()
        started = time.monotonic()
        sent = 0
        while sent < args.live:   # per tick of 0.1 s, a burst of --rate/10 entries (half SET, half GET)
            burst = min(args.live - sent, max(1, args.rate // 20)) if args.rate else args.live
            subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-n", str(burst), "-c", str(args.connections),
                            "-t", "set,get", "-d", "64", "-q"], check=True, stdout=subprocess.DEVNULL)
            sent += burst
            if args.rate:
                time.sleep(max(0.0, started + sent * 2 / args.rate - time.monotonic()))
        sent_s = time.monotonic() - started
        load_after = load_cpu()
        deadline = time.monotonic() + 120
        while not worker.status()["dissection"]["caught_up"] and time.monotonic() < deadline:
            time.sleep(0.2)
        status = worker.status()
        made = status["index"]["entries"] - before
        deadline = time.monotonic() + 60      # the latency client gets all, unless something is lost
        while accounted(timing) < made and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        status = worker.status()
        made = status["index"]["entries"] - before
        cpu = cpu_rows(cpu_before, cpu_by_role(worker.pid, hub_pid) | load_after, time.monotonic() - started, made)
        reader.terminate()
        reader.wait(10)
        timed = json.loads(timing.read_text())
        rows = [["latency client", timed["entries"], made, timed["lost"], made - timed["entries"]]]
        for n, client in enumerate(readers, 1):
            got = client.stop()
            rows.append([n, got["entries"], made, got["lost"], made - got["entries"]])
        lat = timed["latencies"]
        print(f"{made:,} entries from {args.live:,} requests in {sent_s:.1f} s: {made / sent_s:,.0f} entries/s; "
              f"packet-to-client latency over {len(lat):,} reads: p50 {percentile(lat, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(lat, 0.99) * 1000:.0f} ms, max {max(lat, default=0) * 1000:.0f} ms; "
              f"kernel drops {sum(s['dropped'] for s in status['capture']['sources'])}")
        print(table(["client", "received", "indexed", "lost (reported)", "missing"], rows))
        print(table(["stage", "CPU s", "of one core", "µs/entry"], cpu))
        write_json(args.json_out, {"machine": machine(), "live_requests": args.live, "entries": made,
                                   "entries_per_s": made / sent_s, "p50_s": percentile(lat, 0.5),
                                   "p99_s": percentile(lat, 0.99), "rows": rows, "cpu": cpu})
    finally:
        if hub is not None:
            hub.stop()
        worker.stop()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--latency-reader":
        latency_reader(sys.argv[2], Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pcap", type=Path)
    source.add_argument("--live", type=int, metavar="REQUESTS", help="capture redis-benchmark on lo instead")
    parser.add_argument("--rate", type=int, default=0,
                        help="--live: entries per second to aim at, in bursts every 0.1 s (default: as fast as it goes)")
    parser.add_argument("--connections", type=int, default=4,
                        help="--live: redis-benchmark's connections (its rate: 1 makes ~20k commands/s here)")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--hub", action="store_true", help="read a hub's /stream in front of the worker")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if args.pcap is not None and not args.pcap.is_file():
        parser.error(f"--pcap: {args.pcap} is not a file")
    if args.clients < 1:
        parser.error("--clients: at least 1")
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    if args.live is not None:
        try:
            live(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    worker = Worker(["--pcap", str(args.pcap), "--storage-limit", "4GB"], work / "store", work, "worker")
    hub: Child | None = None
    try:
        hub, url = front(args, worker, work)
        readers = [Reader(url, work / f"client-{n}.sse") for n in range(args.clients)]
        started = time.monotonic()
        last, same, done_at = -1, 0, started
        while same < 3:                       # caught up, and the count held for 3 polls
            time.sleep(0.5)
            status = worker.status()
            done = all(s["finished"] for s in status["capture"]["sources"]) and status["dissection"]["caught_up"]
            entries = status["index"]["entries"]
            if done and entries == last:
                same += 1
            else:
                same, done_at = 0, time.monotonic()
            last = entries
        time.sleep(1.0)                       # the last batch on its way
        rate = last / (done_at - started)
        rows, results = [], []
        for n, reader in enumerate(readers):
            got = reader.stop()
            expected = last - (got["head"] or 0)
            missing = expected - got["entries"]
            results.append({"client": n, **got, "expected": expected, "missing": missing})
            rows.append([n, got["entries"], expected, got["lost"], missing])
        print(f"{last:,} entries indexed at {rate:,.0f}/s (the rate the stream had to carry)")
        print(table(["client", "received", "expected", "lost (reported)", "missing"], rows))
        write_json(args.json_out, {"machine": machine(), "pcap": str(args.pcap), "entries_per_s": rate,
                                   "results": results})
    finally:
        if hub is not None:
            hub.stop()
        worker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
