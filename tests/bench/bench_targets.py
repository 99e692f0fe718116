"""What a target list (PUT /targets) costs: compiling its capture filter, and applying it live.

    .venv/bin/python tests/bench/bench_targets.py [--sizes 50,200,500,1000,2000,5000]
        [--cpu-limit 120] [--live af_packet,pcap] [--json-out FILE]

compile: for N scattered pod addresses (a random sample of 10.244.0.0/16, sorted, as the hub
sends them), the CPU libpcap's pcap_compile spends on the filter PUT /targets used to build,
`(tcp port 8080) and (host A or host B ...)`, optimizer on and off (each in a child process with
an RLIMIT_CPU of --cpu-limit s: "> limit" when it ran out), with the program's instruction count
(the kernel takes at most 4096); then the same for today's filter (worker.sources.targets:
networks in the kernel, the exact check in user space).
live: a worker on lo (per --live source) is sent each list: the PUT's wall time and status,
the worker's CPU for it, and the slowest /status answered meanwhile (a thread polls it), as
CPU time is what the shared machine cannot inflate. Needs root for the live part.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, ROOT, Worker, machine, table, tree_cpu_seconds, write_json  # noqa: E402

sys.path.insert(0, str(ROOT))

BASE = "tcp port 8080"
LINKTYPE_ETHERNET = 1


def addresses(n: int) -> list[str]:
    picked = sorted(random.Random(n).sample(range(1 << 16), n))
    return [f"10.244.{i >> 8}.{i & 255}" for i in picked]


def host_chain(ips: list[str]) -> str:
    return f"({BASE}) and (" + " or ".join(f"host {ip}" for ip in ips) + ")"


def _compile_child(n: int, optimize: int) -> None:
    """In the child: compile the host chain with libpcap directly (compile_bpf always optimizes)."""
    class Program(ctypes.Structure):
        _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]
    lib = ctypes.CDLL(ctypes.util.find_library("pcap") or "libpcap.so.0.8")
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(Program), ctypes.c_char_p,
                                 ctypes.c_int, ctypes.c_uint32]
    handle = lib.pcap_open_dead(LINKTYPE_ETHERNET, 262144)
    program = Program()
    expression = host_chain(addresses(n)).encode()
    started = time.process_time()
    ok = lib.pcap_compile(handle, ctypes.byref(program), expression, optimize, 0xFFFFFFFF) == 0
    print(json.dumps({"cpu_s": time.process_time() - started, "insns": program.bf_len if ok else None}))


def host_chain_cost(n: int, optimize: int, cpu_limit: int) -> dict[str, Any]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit))
    done = subprocess.run([PYTHON, __file__, "--child", f"{n},{optimize}"], capture_output=True,
                          text=True, preexec_fn=limit)
    if done.returncode != 0:
        return {"cpu_s": None, "insns": None, "over_limit": True}
    return {**json.loads(done.stdout), "over_limit": False}


def planned_cost(n: int) -> dict[str, Any]:
    from worker.sources.bpf import compile_bpf
    from worker.sources.targets import target_filter
    ips = addresses(n)
    started = time.process_time()
    planned = target_filter(BASE, ips)
    program = compile_bpf(planned.bpf, LINKTYPE_ETHERNET, 262144)
    return {"cpu_s": time.process_time() - started, "insns": len(program) // 8,
            "exact_in_kernel": planned.exact_in_kernel}


def _request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def live(source: str, sizes: list[int], workdir: Path) -> list[dict[str, Any]]:
    worker = Worker(["--iface", "lo", "--source", source, "--bpf", BASE], workdir / f"store-{source}",
                    workdir, name=f"worker-{source}")
    rows = []
    try:
        for n in sizes:
            slowest = [0.0]
            not_running = [0]
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    status = worker.status()
                    slowest[0] = max(slowest[0], time.monotonic() - started)
                    not_running[0] += not status["capture"]["running"]
                    stop.wait(0.2)
            poller = threading.Thread(target=poll, daemon=True)
            cpu_before = tree_cpu_seconds(worker.pid)
            poller.start()
            started = time.monotonic()
            code, answer = _request("PUT", worker.url + "/targets", {"ips": addresses(n)})
            wall = time.monotonic() - started
            time.sleep(1.0)     # a stalled capture child shows up in /status after the PUT too
            stop.set()
            poller.join()
            rows.append({"source": source, "n": n, "status": code, "wall_s": wall,
                         "worker_cpu_s": tree_cpu_seconds(worker.pid) - cpu_before,
                         "slowest_status_s": slowest[0], "status_not_running": not_running[0],
                         "detail": "" if code == 200 else str(answer.get("detail", ""))[-80:]})
            _request("PUT", worker.url + "/targets", {"ips": []})
    finally:
        worker.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="50,200,500,1000,2000,5000")
    parser.add_argument("--cpu-limit", type=int, default=120)
    parser.add_argument("--live", default="af_packet,pcap")
    parser.add_argument("--live-only", action="store_true", help="skip the compile table (e.g. on a checkout before the change)")
    parser.add_argument("--json-out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n, optimize = (int(x) for x in args.child.split(","))
        _compile_child(n, optimize)
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    print(json.dumps(machine()), file=sys.stderr)
    compile_rows: list[dict[str, Any]] = []
    for n in [] if args.live_only else sizes:
        row: dict[str, Any] = {"n": n}
        for optimize in (1, 0):
            cost = host_chain_cost(n, optimize, args.cpu_limit)
            row[f"chain_opt{optimize}_cpu_s"] = f"> {args.cpu_limit}" if cost["over_limit"] else cost["cpu_s"]
            row[f"chain_opt{optimize}_insns"] = cost["insns"]
        planned = planned_cost(n)
        row["planned_cpu_s"], row["planned_insns"] = planned["cpu_s"], planned["insns"]
        compile_rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    if compile_rows:
        print(table(list(compile_rows[0]), [list(r.values()) for r in compile_rows]))
    live_rows = []
    if args.live:
        with tempfile.TemporaryDirectory() as workdir:
            for source in args.live.split(","):
                live_rows += live(source, sizes, Path(workdir))
        print(table(list(live_rows[0]), [list(r.values()) for r in live_rows]))
    write_json(args.json_out, {"machine": machine(), "compile": compile_rows, "live": live_rows})


if __name__ == "__main__":
    main()
