"""How long `python -m worker --pcap FILE` takes to start: from exec until /status answers, and
until it says the file is read and dissection has caught up.

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
from _common import PYTHON, ROOT, cpu_seconds, machine, table, tree_pids, write_json  # noqa: E402

# Every /status costs the API process some CPU (with one shard, GIL time taken from dissection).
POLL_S = 0.05
SETTLE_S = 0.5     # the entry count must hold this long after caught-up is first seen


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
        seen: list[tuple[float, bool, int, float]] = []   # (time, read and caught up, entries, CPU s)
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
            seen.append((polled, done, status["index"]["entries"], cpu))
            first_done = next((t for t, d, _, _ in seen if d), None)
            if first_done is not None and polled - first_done >= SETTLE_S:
                break
            if polled - started > 300:
                raise RuntimeError(f"worker did not finish {pcap.name}")
            time.sleep(POLL_S)
        entries = seen[-1][2]
        caught_up, caught_up_cpu = next((t, c) for t, d, n, c in seen if d and n == entries)
        return {"status": answered - started, "caught_up": caught_up - started, "entries": entries,
                "status_cpu": answered_cpu, "status_api_cpu": api_cpu, "caught_up_cpu": caught_up_cpu}
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
    rows = []
    for key, runs in results.items():
        rows.append([key, statistics.median(r["status"] for r in runs),
                     statistics.median(r["caught_up"] for r in runs),
                     min(r["caught_up"] for r in runs),
                     statistics.median(r["status_cpu"] for r in runs),
                     statistics.median(r["status_api_cpu"] for r in runs),
                     statistics.median(r["caught_up_cpu"] for r in runs),
                     "/".join(sorted({str(r["entries"]) for r in runs}))])
    print(f"repos {', '.join(map(str, repos))}; machine {machine()}")
    print(table(["capture", "to /status s", "to caught-up s", "caught-up s (best)",
                 "CPU s to /status", "of which API process", "CPU s to caught-up", "entries"], rows))
    print("medians of", args.runs, "runs; CPU: user + system of the worker's process tree")
    write_json(args.json_out, {"machine": machine(), "repos": [str(repo) for repo in repos], "runs": results})


if __name__ == "__main__":
    main()
