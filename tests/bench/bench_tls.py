"""What eBPF TLS capture costs a TLS client: its request rate with and without the probes.

    .venv/bin/python tests/bench/bench_tls.py --seconds 5 --rounds 3 [--json-out FILE]

Workloads (each a client process that loops for --seconds on one connection and counts):
  - https: Python's http.client, keep-alive GETs of a small JSON document from a Python
    https server (support.http_server's handler): both ends are libssl users, both hooked.
  - echo: Python's ssl against `openssl s_server -rev` (it answers each line reversed; its
    own reads and writes go through an SSL BIO, so only the client is hooked): one
    SSL_write and one SSL_read per round trip, the densest use of the probed functions.
  - go-h1: Go's net/http client (tests/support/tlsprograms/gohttps.go), one goroutine,
    keep-alive requests to the Go server of the same program: both ends Go, both hooked.
  - go-h2: the same over HTTP/2, 8 goroutines multiplexed on one connection.
  - static: the C client linked with libssl.a (openssl_static_client.c) making keep-alive
    GETs of the Go server: its own SSL_write/SSL_read hooked in its executable.
Modes, interleaved round by round so that the machine's load hits all of them alike:
  - none: no worker;
  - noop: no worker, but no-op probes on the same functions (uprobes and uretprobes on
    libssl's and the static client's; on Go's, uprobes at the calls and at each RET of Read), loaded
    by this script through bcc: what the kernel's uprobe mechanism alone costs;
  - capture: the worker on lo without --tls (the cost of capturing the encrypted packets);
  - tls: the worker on lo with --tls (probes, synthesized packets, their dissection).
The worker's BPF filter keeps only the server ports. Reported: the median rate per mode,
the worker's CPU during the run, and the eBPF counters (chunks, lost events). Needs root and
a machine where `./dev` set eBPF up (the worker says what is missing otherwise).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common import (PYTHON, ROOT, Child, Worker, machine, table, tree_cpu_seconds,  # noqa: E402
                     wait_for, wait_for_quiet, write_json)

HTTPS_SERVER = """
import ssl, sys
from http.server import ThreadingHTTPServer
from support.http_server import Handler

class NoDelay(Handler):
    disable_nagle_algorithm = True   # else headers and body wait out the peer's delayed ACK

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), NoDelay)
server.daemon_threads = True
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
"""

HTTPS_CLIENT = """
import http.client, ssl, sys, time
context = ssl._create_unverified_context()
connection = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=context)
deadline = time.monotonic() + float(sys.argv[2])
count = 0
while time.monotonic() < deadline:
    connection.request("GET", "/json")
    response = connection.getresponse()
    response.read()
    count += 1
print(count)
"""

ECHO_CLIENT = """
import socket, ssl, sys, time
context = ssl._create_unverified_context()
tls = context.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
deadline = time.monotonic() + float(sys.argv[2])
count = 0
line = b"x" * 100 + b"\\n"
while time.monotonic() < deadline:
    tls.sendall(line)
    got = b""
    while not got.endswith(b"\\n"):
        got += tls.recv(4096)
    count += 1
print(count)
"""

MODES = ("none", "noop", "capture", "tls")
SSL_FUNCTIONS = ("SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex")


def noop_probes(go_binary: Path, static_client: Path):  # type: ignore[no-untyped-def]
    """Empty probes where --tls puts its own: uprobes and uretprobes on every libssl the
    node maps and on the static client's SSL functions, uprobes at the call and RETs of the
    Go program's crypto/tls; returns the BPF object."""
    import os
    from worker.sources.ebpf.diagnosis import diagnose, host_facts
    from worker.sources.ebpf.executables import inspect_executable
    from worker.sources.ebpf.libraries import LIBSSL, LibraryScanner
    from worker.sources.ebpf.loader import import_bcc
    bcc = import_bcc()
    facts = host_facts(None)
    if (problem := diagnose(facts)) is not None:
        raise SystemExit(problem)
    os.environ["BCC_KERNEL_SOURCE"] = facts.kernel_source or ""
    bpf = bcc.BPF(text="int noop(struct pt_regs *ctx) { return 0; }")
    libraries = [path for path, kind in LibraryScanner().scan(0.0).values() if kind == LIBSSL]
    for path in [*libraries, str(static_client)]:
        for symbol in SSL_FUNCTIONS:
            bpf.attach_uprobe(name=path, sym=symbol, fn_name="noop")
            bpf.attach_uretprobe(name=path, sym=symbol, fn_name="noop")
    code = inspect_executable(str(go_binary))
    assert code is not None and code.go is not None
    for address in (code.go.write.call, code.go.read.call, *code.go.read.returns):
        bpf.attach_uprobe(name=str(go_binary), addr=address, fn_name="noop")
    return bpf


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_rate(script: str, port: int, seconds: float) -> float:
    done = subprocess.run([PYTHON, "-c", script, str(port), str(seconds)], capture_output=True,
                          text=True, timeout=seconds + 60, check=True)
    return int(done.stdout.strip()) / seconds


def go_rate(binary: Path, port: int, seconds: float, proto: str, workers: int) -> float:
    done = subprocess.run([str(binary), "-mode", "client", "-url", f"https://127.0.0.1:{port}",
                           "-proto", proto, "-workers", str(workers), "-requests", "1",
                           "-seconds", str(seconds)], capture_output=True, text=True,
                          timeout=seconds + 60, check=True)
    lines = done.stdout.split()
    assert lines[-3:] == ["done", "0", "failures"], done.stdout + done.stderr
    return int(lines[1]) / seconds


def static_rate(binary: Path, port: int, seconds: float) -> float:
    """The static client's rate: it reads its paths from stdin, so it gets a number of them
    sized to take about `seconds` at the bare rate measured here (~8,000/s)."""
    count = int(seconds * 8000)
    started = time.monotonic()
    done = subprocess.run([str(binary), str(port)], input="/bench?status=200\n" * count,
                          capture_output=True, text=True, timeout=seconds * 20 + 60, check=True)
    elapsed = time.monotonic() - started
    assert done.stdout.count("200 OK") == count, done.stderr
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--json-out")
    args = parser.parse_args()

    load = wait_for_quiet(args.max_load, 300)
    work = Path(tempfile.mkdtemp(prefix="shark-bench-tls-"))
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    sys.path.insert(0, str(ROOT / "tests"))
    from support.programs import go_program, static_openssl_client
    go_binary, static_client = go_program("gohttps"), static_openssl_client()
    https_port, echo_port, go_port = free_port(), free_port(), free_port()
    servers = [
        Child([PYTHON, "-c", HTTPS_SERVER, str(https_port), str(cert), str(key)], work, "https",
              env={"PYTHONPATH": str(ROOT / "tests")}),
        Child([str(go_binary), "-mode", "server", "-addr", f"127.0.0.1:{go_port}",
               "-cert", str(cert), "-key", str(key)], work, "go"),
        Child(["openssl", "s_server", "-accept", f"127.0.0.1:{echo_port}", "-cert", str(cert),
               "-key", str(key), "-rev", "-quiet"], work, "echo"),
    ]
    wait_for(lambda: "listening" in servers[0].stdout(), 30, "the https server")
    wait_for(lambda: "listening" in servers[1].stdout(), 30, "the Go server")
    time.sleep(1.0)   # s_server prints nothing when ready; give it a moment
    seconds = args.seconds
    workloads: dict[str, Callable[[], float]] = {
        "https": lambda: client_rate(HTTPS_CLIENT, https_port, seconds),
        "echo": lambda: client_rate(ECHO_CLIENT, echo_port, seconds),
        "go-h1": lambda: go_rate(go_binary, go_port, seconds, "h1", 1),
        "go-h2": lambda: go_rate(go_binary, go_port, seconds, "h2", 8),
        "static": lambda: static_rate(static_client, go_port, seconds),
    }
    bpf = f"tcp port {https_port} or tcp port {echo_port} or tcp port {go_port}"
    rates: dict[tuple[str, str], list[float]] = {}
    worker_cpu: dict[str, list[float]] = {}
    ebpf_seen: dict = {}
    try:
        for round_number in range(args.rounds):
            for mode in MODES:
                worker = probes = None
                if mode == "noop":
                    probes = noop_probes(go_binary, static_client)
                elif mode != "none":
                    flags = ["--iface", "lo", "--bpf", bpf] + (["--tls"] if mode == "tls" else [])
                    store = work / f"store-{mode}-{round_number}"
                    worker = Worker(flags, store, work, name=f"worker-{mode}-{round_number}")
                    if mode == "tls" and "tls: eBPF probes loaded" not in worker.stderr():
                        raise SystemExit("eBPF did not load: " + worker.stderr()[-600:])
                try:
                    cpu_before = tree_cpu_seconds(worker.pid) if worker else 0.0
                    started = time.monotonic()
                    for name, measure in workloads.items():
                        rate = measure()
                        rates.setdefault((name, mode), []).append(rate)
                        print(f"round {round_number} {mode:8} {name:6} {rate:9.0f}/s",
                              file=sys.stderr, flush=True)
                    if worker:
                        elapsed = time.monotonic() - started
                        worker_cpu.setdefault(mode, []).append(
                            (tree_cpu_seconds(worker.pid) - cpu_before) / elapsed)
                        if mode == "tls":
                            ebpf_seen = worker.status()["ebpf"]
                finally:
                    if worker:
                        worker.stop()
                        shutil.rmtree(store, ignore_errors=True)
                    if probes is not None:
                        probes.cleanup()
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for name in workloads:
        base = statistics.median(rates[(name, "none")])
        for mode in MODES:
            median = statistics.median(rates[(name, mode)])
            rows.append([name, mode, median, min(rates[(name, mode)]), max(rates[(name, mode)]),
                         f"{(median / base - 1) * 100:+.1f}%",
                         statistics.median(worker_cpu[mode]) if mode in worker_cpu else None])
    print(table(["workload", "mode", "median/s", "min/s", "max/s", "vs none", "worker CPU (cores)"],
                rows))
    counters = {k: ebpf_seen.get(k) for k in ("probes_attached", "processes_hooked", "calls",
                                              "go_calls", "go_syscall_fds", "chunks",
                                              "lost_events", "duplicate_chunks",
                                              "unresolved_chunks", "packets", "bytes")}
    print("ebpf (last tls round):", counters)
    write_json(args.json_out, {
        "machine": machine(), "load_before": load, "seconds": args.seconds, "rounds": args.rounds,
        "rates": {f"{name}/{mode}": values for (name, mode), values in rates.items()},
        "worker_cpu": worker_cpu, "ebpf": counters, "table": rows,
    })


if __name__ == "__main__":
    main()
