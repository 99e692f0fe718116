"""How long `python -m worker --pcap FILE` takes to start: from exec until /status answers, and
until it says the file is read and dissection has caught up, with the CPU seconds of each of
the worker's processes at caught up (api, capture, forkserver, tracker, shard: the mean of the
shards).

    .venv/bin/python tests/bench/bench_startup.py FILE [FILE…] [--runs 7] [--shards 1,0]
        [--repo DIR …] [--json-out FILE]

--shards 0 means the default (--dissect-shards left out: the CPUs). --repo runs another
checkout's worker with this Python (e.g. an export of main, for a before/after); given more than
once, the checkouts take turns run by run, so a load that comes and goes hits them alike. Each
run gets a fresh storage directory; /status is polled every 50 ms; the medians are printed. Run on demand, never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (PYTHON, ROOT, cpu_seconds, is_shard_server, machine, table, tree_pids,  # noqa: E402
                     write_json)

# Every /status costs the API process some CPU (with one shard, GIL time taken from dissection).
POLL_S = 0.05
SETTLE_S = 0.5     # the entry count must hold this long after caught-up is first seen
ROLES = ("api", "capture", "forkserver", "tracker", "shard")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


def role_cpu(root: int) -> dict[str, float]:
    """CPU seconds per process of the worker's tree, by role: the API process (root), the
    capture child (a fork of it, same command line), the shards' fork server (is_shard_server),
    multiprocessing's resource tracker (by its command line) and the shards (the fork server's
    children; their mean)."""
    pids = tree_pids(root)
    stats = {pid: st for pid in pids if (st := _stat(pid)) is not None}
    lines = {pid: _cmdline(pid) for pid in stats}
    server = next((pid for pid, (parent, _) in stats.items()
                   if parent == root and is_shard_server(pid)), None)
    cpu: dict[str, float] = {role: 0.0 for role in ROLES}
    shards: list[float] = []
    for pid, (parent, seconds) in stats.items():
        if pid == root:
            cpu["api"] += seconds
        elif pid == server:
            cpu["forkserver"] += seconds
        elif b"resource_tracker" in lines[pid]:
            cpu["tracker"] += seconds
        elif server is not None and parent == server:
            shards.append(seconds)
        elif parent == root and lines[pid] == lines[root]:
            cpu["capture"] += seconds
    cpu["shard"] = sum(shards) / len(shards) if shards else 0.0
    return cpu


def one_run(pcap: Path, shards: int, repo: Path, base: Path) -> dict[str, float | int]:
    storage = Path(tempfile.mkdtemp(prefix="startup-", dir=base))
    argv = [PYTHON, "-m", "worker", "--pcap", str(pcap), "--storage-dir", str(storage),
            "--storage-limit", "4GB", "--listen", "127.0.0.1:0", "--node", "bench",
            *(["--dissect-shards", str(shards)] if shards else [])]
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True, env={**os.environ, "PYTHONPATH": str(repo)})
    url: list[str] = []
    found = threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if not url and (match := re.search(r"serving on (http://\S+/api/v1)", line)):
                url.append(match.group(1))
                found.set()
        found.set()
    threading.Thread(target=read_stderr, daemon=True).start()
    try:
        if not found.wait(60) or not url:
            raise RuntimeError(f"worker did not start (exit {process.poll()})")
        answered = None
        answered_cpu = api_cpu = 0.0
        # (time, read and caught up, entries, CPU s, CPU s by role)
        seen: list[tuple[float, bool, int, float, dict[str, float]]] = []
        while True:
            polled = time.monotonic()
            try:
                with urllib.request.urlopen(url[0] + "/status", timeout=10) as response:
                    status = json.load(response)
            except (urllib.error.URLError, ConnectionError):
                if polled - started > 60:
                    raise RuntimeError("/status never answered") from None
                time.sleep(POLL_S)
                continue
            cpu = cpu_seconds(tree_pids(process.pid))   # the worker, capture, fork server, shards
            if answered is None:
                answered, answered_cpu, api_cpu = polled, cpu, cpu_seconds([process.pid])
            done = (all(s["finished"] for s in status["capture"]["sources"])
                    and status["dissection"]["caught_up"])
            seen.append((polled, done, status["index"]["entries"], cpu, role_cpu(process.pid)))
            first_done = next((t for t, d, *_ in seen if d), None)
            if first_done is not None and polled - first_done >= SETTLE_S:
                break
            if polled - started > 300:
                raise RuntimeError(f"worker did not finish {pcap.name}")
            time.sleep(POLL_S)
        entries = seen[-1][2]
        caught_up, caught_up_cpu, roles = next((t, c, r) for t, d, n, c, r in seen if d and n == entries)
        return {"status": answered - started, "caught_up": caught_up - started, "entries": entries,
                "status_cpu": answered_cpu, "status_api_cpu": api_cpu, "caught_up_cpu": caught_up_cpu,
                **{f"cpu_{role}": seconds for role, seconds in roles.items()}}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(storage, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pcaps", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--shards", default="1,0", help="--dissect-shards per run; 0: the default")
    parser.add_argument("--repo", type=Path, action="append", help="a checkout whose worker runs "
                        "(repeat to compare; default: this one)")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    counts = [int(x) for x in args.shards.split(",")]
    repos = [repo.resolve() for repo in args.repo or [ROOT]]
    base = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    results: dict[str, list[dict[str, float | int]]] = {}
    try:
        for _ in range(args.runs):
            for pcap in args.pcaps:
                for shards in counts:
                    for repo in repos:
                        key = f"{repo.name}: {pcap.name} shards={shards or 'default'}"
                        results.setdefault(key, []).append(one_run(pcap.resolve(), shards, repo, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rows, role_rows = [], []
    for key, runs in results.items():
        rows.append([key, statistics.median(r["status"] for r in runs),
                     statistics.median(r["caught_up"] for r in runs),
                     min(r["caught_up"] for r in runs),
                     statistics.median(r["status_cpu"] for r in runs),
                     statistics.median(r["status_api_cpu"] for r in runs),
                     statistics.median(r["caught_up_cpu"] for r in runs),
                     "/".join(sorted({str(r["entries"]) for r in runs}))])
        role_rows.append([key, *(statistics.median(r[f"cpu_{role}"] for r in runs) for role in ROLES)])
    print(f"repos {', '.join(map(str, repos))}; machine {machine()}")
    print(table(["capture", "to /status s", "to caught-up s", "caught-up s (best)",
                 "CPU s to /status", "of which API process", "CPU s to caught-up", "entries"], rows))
    print("medians of", args.runs, "runs; CPU: user + system of the worker's process tree")
    print(table(["capture", *(f"CPU s {role}" for role in ROLES)], role_rows))
    print("CPU seconds per process at caught up (shard: the mean of the shards), medians")
    write_json(args.json_out, {"machine": machine(), "repos": [str(repo) for repo in repos], "runs": results})


if __name__ == "__main__":
    main()
