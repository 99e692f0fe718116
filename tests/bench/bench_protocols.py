"""Per protocol: how fast the worker indexes a capture of a busy server, against tshark.

    .venv/bin/python tests/bench/bench_protocols.py [--only redis,dns] [--scale 1.0]
        [--shards 1,2 | --cpus 1,2] [--clients 4,16] [--pgbench-seconds 8] [--tree DIR] [--no-tshark]
        [--work-dir DIR] [--regenerate] [--profile] [--json-out FILE]

Captures (kept in --work-dir, made again with --regenerate) come from the machine's real
servers driven as hard as their usual load tools drive them, recorded by tcpdump on lo:
  redis     redis-benchmark -n 100000 -c 4 -t set,get -d 64 against 127.0.0.1:6379 (-n times
            --scale; -c from --clients)
  postgres  pgbench -S -T 4 -c 2 -j 2 against the `test` database (pgbench -i makes its tables
            once; -T from --pgbench-seconds or 4 times --scale; -c from --clients, -j at most 2)
  mysql     mysqlslap against MariaDB (auto-generated primary-key reads, 4 clients)
  amqp      pika publishing to a queue and consuming it (RabbitMQ)
  mqtt      paho publishing QoS 0 and 1 to Mosquitto, subscribed to its own topic
  http1     the test HTTP server, 4 keep-alive httpx clients
  h2c       hypercorn (tests/golden/capture_http2.py's server), httpx over h2 prior knowledge
  dns       dnslib on a free port, one UDP socket per query (as stub resolvers do)
  websocket the `websockets` library's echo server, 4 connections (2 plain, 2 permessage-deflate)
            sending JSON text and binary messages, each waiting for its echo
  kafka     kafka-python producers (4, acks=1, each record waiting for its answer) against
            tests/golden/capture_kafka.py's FakeBroker (no Kafka broker runs on this machine)
Then per capture, in the same run: `python -m worker --pcap FILE` from start until /status says
the file is read and dissection caught up (its entries counted), once per `--shards` count
(`--dissect-shards`; default 1 and the CPUs this process may use), and `tshark -r FILE -Y PROTO`
(frames only, no pairing: the cheaper peer). The ratio is tshark's time over ours (with the
most shards): above 1.0 means the worker is faster; "N/1" is the speed-up of N shards over one. --profile adds cProfile's top functions of the in-process path
(source -> decode -> assembler -> dissectors) per protocol.

--clients 4,16 makes the redis and postgres captures once per number of client connections
(redis-c4.pcap, postgres-c16.pcap, ...; without it: redis -c 4 and postgres -c 2, as
redis.pcap and postgres.pcap). The issue's own captures (issue 17) are
`--only redis --clients 4` and `--only postgres --clients 2 --pgbench-seconds 8`.
--cpus 1,2 times the worker pinned (taskset) to the first N CPUs instead, each run with its
default shards (as many as the CPUs it may use: 1 runs dissection in the API process), and
tshark pinned to one CPU: "tshark/worker, 1 CPU" is the issue's per-core figure and "2/1" what
a second core adds.
--tree DIR runs `python -m worker` of another checkout (before/after runs on the same files;
e.g. `git worktree add --detach /tmp/base main`).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import PYTHON, ROOT, Child, Worker, machine, table, tree_pids, write_json  # noqa: E402

TSHARK_FILTER = {"redis": "resp", "postgres": "pgsql", "mysql": "mysql", "amqp": "amqp", "mqtt": "mqtt",
                 "http1": "http", "h2c": "http2", "dns": "dns",
                 "websocket": "websocket", "kafka": "kafka"}


# -- making the captures ------------------------------------------------------------------------
def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record(path: Path, bpf: str, action: Callable[[], None]) -> None:
    """tcpdump on lo around `action`, ended once the file stops growing."""
    tcpdump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-s", "0", "-B", "65536", "-w", str(path), bpf],
                               stderr=subprocess.PIPE, text=True)
    assert tcpdump.stderr is not None
    if "listening" not in tcpdump.stderr.readline():
        tcpdump.kill()
        raise RuntimeError("tcpdump did not start")
    try:
        action()
        sizes = [-1]
        while sizes[-1] != path.stat().st_size:
            sizes.append(path.stat().st_size)
            time.sleep(0.3)
    finally:
        tcpdump.send_signal(signal.SIGINT)
        _, err = tcpdump.communicate(timeout=30)
    if "dropped by kernel" in err and " 0 packets dropped by kernel" not in err:
        print(f"  tcpdump: {err.strip().splitlines()[-1]}", file=sys.stderr)


def decode_as(pcap: Path, rule: str) -> None:
    """tshark's -d for a capture on a port it does not know the protocol of (kept beside it)."""
    pcap.with_suffix(".decode-as").write_text(rule)


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# Set from the command line: client connections (None: each maker's default) and pgbench -T.
CLIENTS: dict[str, int | None] = {"n": None}
PGBENCH_SECONDS: dict[str, int | None] = {"n": None}


def make_redis(path: Path, scale: float) -> None:
    clients = CLIENTS["n"] or 4
    record(path, "tcp port 6379", lambda: run("redis-benchmark", "-h", "127.0.0.1", "-n", str(int(100_000 * scale)),
                                              "-c", str(clients), "-t", "set,get", "-d", "64", "-q"))


def make_postgres(path: Path, scale: float) -> None:
    clients = CLIENTS["n"] or 2
    seconds = PGBENCH_SECONDS["n"] or max(1, round(4 * scale))
    run("pgbench", "-h", "127.0.0.1", "-U", "postgres", "-i", "-s", "1", "-q", "test")
    record(path, "tcp port 5432", lambda: run("pgbench", "-h", "127.0.0.1", "-U", "postgres", "-S",
                                              "-c", str(clients), "-j", str(min(clients, 2)),
                                              "-T", str(seconds), "test"))


def make_mysql(path: Path, scale: float) -> None:
    record(path, "tcp port 3306", lambda: run(
        # Primary-key reads of a table of 1000 rows: "mixed" scans a table its own inserts grow,
        # so each SELECT returned more than the last (40k queries made a 19.7 GB capture).
        "mysqlslap", "-h", "127.0.0.1", "-u", "root", "--auto-generate-sql", "--auto-generate-sql-load-type=key",
        "--auto-generate-sql-add-autoincrement", "--auto-generate-sql-write-number=1000",
        "--concurrency=4", f"--number-of-queries={int(40_000 * scale)}", "--create-schema=shark_bench"))


def make_amqp(path: Path, scale: float) -> None:
    import pika

    def traffic() -> None:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
        channel = connection.channel()
        queue = f"shark-bench-{uuid.uuid4().hex[:8]}"
        channel.queue_declare(queue, auto_delete=True)
        count = int(20_000 * scale)
        for n in range(count):
            channel.basic_publish("", queue, b'{"order": %d}' % n,
                                  pika.BasicProperties(content_type="application/json"))
        got = 0
        for method, _, _ in channel.consume(queue, inactivity_timeout=5):
            if method is None:
                break
            channel.basic_ack(method.delivery_tag)
            got += 1
            if got == count:
                break
        channel.cancel()
        connection.close()
    record(path, "tcp port 5672", traffic)


def make_mqtt(path: Path, scale: float) -> None:
    import paho.mqtt.client as mqtt

    def traffic() -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}")
        received = threading.Event()
        count, got = int(20_000 * scale), [0]
        topic = f"shark/bench/{uuid.uuid4().hex[:8]}"

        def on_message(*_: object) -> None:
            got[0] += 1
            if got[0] == count:
                received.set()
        client.on_message = on_message
        client.connect("127.0.0.1", 1883)
        client.loop_start()
        client.subscribe(topic, qos=1)
        time.sleep(0.3)
        for n in range(count):
            info = client.publish(topic, b"reading %d" % n, qos=n % 2)
            if n % 500 == 0:
                info.wait_for_publish(10)
        received.wait(30)
        client.disconnect()
        client.loop_stop()
    record(path, "tcp port 1883", traffic)


def _threads(clients: int, target: Callable[[], None]) -> None:
    threads = [threading.Thread(target=target) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _record_clients(path: Path, port: int, tshark_name: str, client: Callable[[], None],
                    stop: Callable[[], object]) -> None:
    """Record 4 threads of `client` against the TCP server on `port`, then `stop` it."""
    try:
        record(path, f"tcp port {port}", lambda: _threads(4, client))
        decode_as(path, f"tcp.port=={port},{tshark_name}")
    finally:
        stop()


def _record_against(path: Path, server_argv: list[str], port: int, tshark_name: str, client: Callable[[], None],
                    env: dict[str, str] | None = None) -> None:
    """Start a server child (it prints "listening"), record 4 threads of `client` against it."""
    server = subprocess.Popen(server_argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)

    def stop() -> None:
        server.terminate()
        server.wait(10)
    if server.stdout is None or "listening" not in server.stdout.readline():
        stop()
        raise RuntimeError(f"{server_argv[1]} did not start")
    time.sleep(0.5)
    _record_clients(path, port, tshark_name, client, stop)


def make_http1(path: Path, scale: float) -> None:
    import httpx
    port = free_port()
    paths = ["/json", "/echo", "/status/500", "/gzip", "/bytes/200"]

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            for n in range(int(5_000 * scale)):
                c.post("/echo", json={"n": n}) if n % 5 == 1 else c.get(paths[n % 5])
    # --nodelay: with Nagle on, each keep-alive response waits 40 ms for the delayed ACK
    _record_against(path, [PYTHON, "-m", "support.http_server", str(port), "--nodelay"], port, "http", client,
                    env={"PYTHONPATH": str(ROOT / "tests")})


def make_h2c(path: Path, scale: float) -> None:
    import httpx
    port = free_port()

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", http1=False, http2=True) as c:
            for n in range(int(3_000 * scale)):
                c.post("/echo", content=b"ping %d" % n) if n % 3 == 1 else c.get("/json" if n % 3 else "/missing")
    _record_against(path, [PYTHON, str(ROOT / "tests" / "golden" / "capture_http2.py"), "serve-h2", str(port)],
                    port, "http2", client)


def make_dns(path: Path, scale: float) -> None:
    from dnslib import QTYPE, RR, DNSRecord
    from dnslib.server import BaseResolver, DNSLogger, DNSServer

    class Fixed(BaseResolver):
        def resolve(self, request, handler):  # noqa: ANN001, ANN201 (dnslib's interface)
            reply = request.reply()
            if request.q.qtype == QTYPE.A:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=__import__("dnslib").A("192.0.2.10"), ttl=60))
            return reply
    port = free_port(socket.SOCK_DGRAM)
    server = DNSServer(Fixed(), port=port, address="127.0.0.1", logger=DNSLogger("-recv,-send,-request,-reply,"
                                                                                    "-truncated,-error,-data"))
    server.start_thread()

    def client() -> None:
        for n in range(int(5_000 * scale)):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:   # a new flow per query
                s.settimeout(2)
                s.sendto(DNSRecord.question(f"host{n}.bench.test", "A" if n % 2 else "AAAA").pack(),
                         ("127.0.0.1", port))
                try:
                    s.recv(4096)
                except TimeoutError:
                    pass
    try:
        record(path, f"udp port {port}", lambda: _threads(4, client))
        decode_as(path, f"udp.port=={port},dns")
    finally:
        server.stop()
        server.server.server_close()


def make_websocket(path: Path, scale: float) -> None:
    from websockets.sync.client import connect
    from websockets.sync.server import serve

    def echo(ws) -> None:  # noqa: ANN001 (websockets' connection)
        for message in ws:
            ws.send(message)
    port = free_port()
    server = serve(echo, "127.0.0.1", port, ping_interval=None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    turn = iter(range(4))

    def client() -> None:
        # Half the connections plain, half with permessage-deflate (the library's default, as
        # browsers negotiate it): both kinds of frames are dissected.
        plain = next(turn) % 2 == 0
        with connect(f"ws://127.0.0.1:{port}/feed", compression=None if plain else "deflate",
                     ping_interval=None) as ws:
            for n in range(int(5_000 * scale)):
                ws.send('{"event": "tick", "n": %d, "price": %d.%02d}' % (n, n % 977, n % 100)
                        if n % 4 else bytes(range(n % 256)) * 2)
                ws.recv()
    _record_clients(path, port, "websocket", client, server.shutdown)


def make_kafka(path: Path, scale: float) -> None:
    # No Kafka broker runs on this machine (tests/golden/capture_kafka.py says why): its
    # FakeBroker answers kafka-python's real clients, with the flexible (newest) versions.
    from kafka import KafkaProducer
    from golden.capture_kafka import PROFILES, FakeBroker
    port = free_port()
    broker = FakeBroker(port, PROFILES["flexible"])

    def client() -> None:
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", acks=1, linger_ms=0,
                                 enable_idempotence=False, client_id=f"bench-{uuid.uuid4().hex[:6]}")
        for n in range(int(2_500 * scale)):     # one Produce per record: each waits for its answer
            producer.send("orders" if n % 3 else "payments", key=b"k%d" % n,
                          value=b'{"order": %d, "total": %d}' % (n, n * 7)).get(timeout=10)
        producer.close()
    _record_clients(path, port, "kafka", client, broker.stop)


MAKERS: dict[str, Callable[[Path, float], None]] = {
    "redis": make_redis, "postgres": make_postgres, "mysql": make_mysql, "amqp": make_amqp,
    "mqtt": make_mqtt, "http1": make_http1, "h2c": make_h2c, "dns": make_dns,
    "websocket": make_websocket, "kafka": make_kafka}


# -- measuring ----------------------------------------------------------------------------------
def run_worker(pcap: Path, logs: Path, base: Path, extra: list[str], tree: Path = ROOT,
               cpus: int | None = None) -> dict:
    """`python -m worker --pcap` (of checkout `tree`, on the first `cpus` CPUs when given) from
    start until the file is read, dissection has caught up and the entry count holds for two
    more polls."""
    storage = Path(tempfile.mkdtemp(prefix="worker-", dir=base))
    started = time.monotonic()
    worker = Worker(["--pcap", str(pcap), "--storage-limit", "4GB", *extra], storage, logs, "worker-" + pcap.stem,
                    tree=tree, cpus=cpus)
    try:
        # `done` is the first poll that saw the final count; `before` the poll ahead of it:
        # the count was reached between the two (polls every 0.1 s cost the API ~0.8 ms each)
        last, same, done, before, previous = -1, 0, 0.0, 0.0, started
        while same < 2:
            polled = time.monotonic()
            status = worker.status()
            finished = all(s["finished"] for s in status["capture"]["sources"])
            entries = status["index"]["entries"]
            if finished and status["dissection"]["caught_up"] and entries == last:
                same += 1
            else:
                last, same, done, before = entries, 0, polled, previous
            previous = polled
            if polled - started > 900:
                raise RuntimeError(f"worker did not finish {pcap.name}: {status}")
            time.sleep(0.1)
        shards = {s["pid"] for s in status["dissection"].get("shards", [])}
        split = [s["entries"] for s in status["dissection"].get("shards", [])]
        cpu = process_cpu(tree_pids(worker.pid))
        roles = {"api": cpu.pop(worker.pid, 0.0),
                 "shards": [round(used, 2) for pid, used in cpu.items() if pid in shards],
                 "capture": sum(used for pid, used in cpu.items() if pid not in shards)}   # + fork server
        return {"wall": done - started, "wall_low": before - started, "entries": last, "packets": status["dissection"]["packets"],
                "cpu": roles["api"] + roles["capture"] + sum(roles["shards"]),
                "cpu_max": max([roles["api"], *roles["shards"]]), "cpu_by_process": roles,
                "entries_by_shard": split}
    finally:
        worker.stop()
        shutil.rmtree(storage, ignore_errors=True)


def process_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) each process has used so far: the worker, its capture child,
    its dissection shards and the fork server they come from. On a loaded machine wall times mislead; these do less."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / tick
    return used


def run_tshark(pcap: Path, proto: str, logs: Path, cpus: int | None = None) -> dict:
    rule = pcap.with_suffix(".decode-as")
    decode = ["-d", rule.read_text().strip()] if rule.exists() else []
    child = Child(["tshark", "-r", str(pcap), *decode, "-Y", TSHARK_FILTER[proto]], logs, f"tshark-{proto}",
                  cpus=cpus)
    if child.wait(900) != 0:
        raise RuntimeError(f"tshark failed: {child.stderr()[-1000:]}")
    frames = sum(1 for line in open(child.stdout_path, errors="replace") if line.strip())
    return {"wall": (child.ended or 0) - child.started, "frames": frames}


def profile(pcap: Path, top: int = 14) -> str:
    """cProfile of the dissection path over the whole file (decode, assembler, selection,
    dissectors, entries as JSON: what the worker's dissection process does before sqlite), the
    functions with most own time."""
    from worker.dissection import Dissection
    from worker.sources import open_file_source
    source, dissection, number = open_file_source(str(pcap)), Dissection("bench"), 0
    profiler = cProfile.Profile()
    profiler.enable()
    while not source.finished:
        stored = []
        for ts_ns, data, wirelen in source.read_batch(4096):
            stored.append(((0, number), source.linktype, ts_ns, data, wirelen))
            number += 1
        dissection.feed(stored)
        dissection.take_rows()
    dissection.close_all()
    dissection.take_rows()
    profiler.disable()
    source.close()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(MAKERS), help="comma-separated: " + ", ".join(MAKERS))
    parser.add_argument("--scale", type=float, default=1.0, help="traffic volume factor (default 1.0)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "shark-bench-protocols")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--worker-arg", action="append", default=[], help="passed to every worker run")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--shards", default=f"1,{len(os.sched_getaffinity(0))}",
                        help="comma-separated --dissect-shards counts to time (default: 1 and the CPUs)")
    parser.add_argument("--cpus", default="",
                        help="comma-separated CPU counts to pin the worker to, each with its default shards, "
                             "instead of --shards (tshark then runs on one CPU)")
    parser.add_argument("--clients", default="",
                        help="comma-separated client connections for redis and postgres (a capture each)")
    parser.add_argument("--pgbench-seconds", type=int, help="pgbench -T (default: 4 times --scale)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose worker runs (default: this one)")
    parser.add_argument("--no-tshark", action="store_true", help="time the worker only")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in MAKERS]
    if unknown:
        parser.error(f"--only: unknown {unknown[0]!r}; expected some of {', '.join(MAKERS)}")
    option, listed = ("--cpus", args.cpus) if args.cpus else ("--shards", args.shards)
    try:
        counts = sorted({int(n) for n in listed.split(",") if n.strip()})
    except ValueError:
        parser.error(f"{option}: {listed!r} is not a list of numbers, e.g. 1,2")
    if not counts or counts[0] < 1:
        parser.error(f"{option}: {listed!r}: expected numbers of 1 or more")
    pinning = bool(args.cpus)
    if pinning and counts[-1] > len(os.sched_getaffinity(0)):
        parser.error(f"--cpus: {counts[-1]} asked for; this process may use {len(os.sched_getaffinity(0))}")
    unit = "CPU" if pinning else "shard"
    try:
        clients = [int(n) for n in args.clients.split(",") if n.strip()] or [None]
    except ValueError:
        parser.error(f"--clients: {args.clients!r} is not a list of numbers, e.g. 4,16")
    if any(n is not None and n < 1 for n in clients):
        parser.error(f"--clients: {args.clients!r}: expected numbers of 1 or more")
    PGBENCH_SECONDS["n"] = args.pgbench_seconds
    args.work_dir.mkdir(parents=True, exist_ok=True)
    logs = args.work_dir / "logs"
    logs.mkdir(exist_ok=True)
    headers = ["capture", "MB", "packets", "entries",
               *(f"worker s, {n} {unit}{'s' if n > 1 else ''}" for n in counts),
               *(f"{n}/{counts[0]}" for n in counts[1:]),
               *(f"cpu s (busiest dissecting process), {n}" for n in counts),
               "entries/s", "tshark -Y s" + (", 1 CPU" if pinning else ""), "tshark/worker",
               *([f"tshark/worker, {counts[0]} CPU"] if pinning and len(counts) > 1 else [])]
    rows, results = [], {}
    captures = [(name, n) for name in names for n in (clients if name in ("redis", "postgres") else [None])]
    for maker, client_count in captures:
        name = maker if client_count is None else f"{maker}-c{client_count}"
        pcap = args.work_dir / f"{name}.pcap"
        if args.regenerate or not pcap.exists():
            print(f"making {pcap} ...", file=sys.stderr)
            CLIENTS["n"] = client_count
            MAKERS[maker](pcap, args.scale)
        runs = {n: (run_worker(pcap, logs, args.work_dir, args.worker_arg, args.tree, cpus=n) if pinning else
                    run_worker(pcap, logs, args.work_dir, [*args.worker_arg, "--dissect-shards", str(n)], args.tree))
                for n in counts}
        if len({run["entries"] for run in runs.values()}) != 1:
            print(f"{name}: the {unit} counts indexed different numbers of entries: "
                  f"{ {n: run['entries'] for n, run in runs.items()} }", file=sys.stderr)
        ours = runs[counts[-1]]
        peer = ({"wall": 0.0, "frames": 0} if args.no_tshark
                else run_tshark(pcap, maker, logs, cpus=1 if pinning else None))
        ratio = peer["wall"] / ours["wall"] if ours["wall"] else 0.0
        fewest = peer["wall"] / runs[counts[0]]["wall"] if runs[counts[0]]["wall"] else 0.0
        size_mb = pcap.stat().st_size / 1e6
        results[name] = {"pcap_mb": size_mb, "worker": ours, "tshark": peer, "ratio": ratio,
                         ("cpus" if pinning else "shards"): {str(n): run for n, run in runs.items()}}
        first = runs[counts[0]]["wall"]
        rows.append([name, f"{size_mb:.1f}", ours["packets"], ours["entries"],
                     *(f"{runs[n]['wall']:.2f}" for n in counts),
                     *(f"{first / runs[n]['wall']:.2f}x" for n in counts[1:]),
                     *(f"{runs[n]['cpu']:.1f} ({runs[n]['cpu_max']:.1f})" for n in counts),
                     f"{ours['entries'] / ours['wall']:,.0f}", f"{peer['wall']:.2f}", f"{ratio:.2f}x",
                     *([f"{fewest:.2f}x"] if pinning and len(counts) > 1 else [])])
        print(table(headers, rows[-1:]), file=sys.stderr)
        if args.profile:
            print(profile(pcap), file=sys.stderr)
        print(f"{name}: entries by shard " + "; ".join(f"{n}: {runs[n]['entries_by_shard']}" for n in counts[1:])
              + "; cpu s by process " + "; ".join(f"{n}: {runs[n]['cpu_by_process']}" for n in counts),
              file=sys.stderr)
    print(table(headers, rows))
    write_json(args.json_out, {"machine": machine(), "results": results})


if __name__ == "__main__":
    main()
