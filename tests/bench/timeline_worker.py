"""Where a worker's cores go over time: every process's and thread's CPU, sampled.

    .venv/bin/python tests/bench/timeline_worker.py PCAP [--cpus 2] [--every-ms 10]
        [--bucket-ms 50] [--tree DIR] [--json-out FILE] [-- EXTRA WORKER ARGS]

Runs `python -m worker --pcap PCAP --storage-limit 4GB` (of checkout --tree, pinned with
taskset to the first --cpus CPUs) as bench_protocols.py does, polls /status every 0.1 s until
the file is read, dissection caught up and the entry count held for two polls, and meanwhile
reads /proc/PID/task/TID/schedstat of every process of the worker's tree every --every-ms:
nanoseconds on a CPU and waiting on a run queue, per thread. Prints per --bucket-ms the CPU
each thread used (ms), the cores left idle (pinned CPUs x bucket - used - waiting behind
other programs: what the worker could have run and did not) and the run-queue wait, then the
phases: start (until the API serves), until both shards are busy, the tail after the last
shard's last busy bucket.

Threads are named by /proc's comm; Python threads of 3.11 carry their process's, so the
API process's threads are told apart by the order they appear: api-main, then api-t1... (with
2 shards: the index writer, the merge, then the checkpoint thread and uvicorn's, in the order
they first ran while sampled: check with `py-spy dump` when it matters).

--rt is for a machine shared with other programs' load: without it the worker's threads wait
behind them (the runq column) and the cores look busy when the worker would have left them
idle. With it the worker runs SCHED_RR (priority 2; its shards, once named, 1: the nice 10 they
take under SCHED_OTHER becomes strict), and the sampler above it at 3; the kernel still keeps
5% of each core for everything else (sched_rt_runtime_us). Its CPU seconds still vary run to
run on a shared machine (caches, the other vCPU), so compare idle seconds and phases, not CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import PYTHON, ROOT, pinned_cpus  # noqa: E402


def children(pid: int) -> list[int]:
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                found += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return found


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def sample(pids: list[int]) -> dict[tuple[int, int], tuple[str, int, int]]:
    """(pid, tid) -> (process comm, ns on CPU, ns runnable and waiting)."""
    got = {}
    for pid in pids:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                run, wait, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            except (OSError, ValueError):
                continue
            got[(pid, int(tid))] = (comm, int(run), int(wait))
    return got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pcap", type=Path)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--every-ms", type=float, default=10.0)
    parser.add_argument("--bucket-ms", type=float, default=50.0)
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--quiet", action="store_true", help="phases only, no per-bucket lines")
    parser.add_argument("--rt", action="store_true",
                        help="run the worker SCHED_RR (priority 2, its shards 1: the nice 10 they "
                             "have under SCHED_OTHER becomes strict), so that other programs on a "
                             "shared machine do not take its cores; the kernel keeps 5%% for them")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()

    storage = Path(tempfile.mkdtemp(prefix="timeline-"))
    err_path = storage.with_suffix(".err")
    argv = (["chrt", "-r", "2"] if args.rt else []) + ["taskset", "-c", pinned_cpus(args.cpus), PYTHON, "-m", "worker", "--pcap", str(args.pcap),
            "--storage-limit", "4GB", "--storage-dir", str(storage / "s"), "--listen", "127.0.0.1:0",
            "--node", "bench", *args.extra]
    samples: list[tuple[float, dict]] = []
    stop = threading.Event()
    started = time.monotonic()
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=args.tree,
                                start_new_session=True)

    demoted: set[int] = set()

    def sampler() -> None:
        every = args.every_ms / 1000
        if args.rt:   # above the worker's threads, or it samples only when they sleep
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(3))
        while not stop.is_set():
            now = time.monotonic()
            snap = sample(tree(proc.pid))
            samples.append((now, snap))
            if args.rt:
                for (pid, tid), (comm, _, _) in snap.items():
                    if comm.startswith("shark-shard") and tid not in demoted:
                        demoted.add(tid)
                        try:
                            os.sched_setscheduler(tid, os.SCHED_RR, os.sched_param(1))
                        except OSError:
                            pass
            stop.wait(max(0.0, every - (time.monotonic() - now)))

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    if args.rt:   # the /status polls too
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(3))
    try:
        url = None
        while url is None:
            m = re.search(r"serving on (http://\S+/api/v1)", err_path.read_text(errors="replace"))
            if m:
                url = m.group(1)
            elif proc.poll() is not None:
                raise RuntimeError(err_path.read_text())
            else:
                time.sleep(0.005)
        serving = time.monotonic()
        last, same, done = -1, 0, 0.0
        while same < 2:
            polled = time.monotonic()
            with urllib.request.urlopen(url + "/status", timeout=30) as r:
                status = json.load(r)
            finished = all(s["finished"] for s in status["capture"]["sources"])
            entries = status["index"]["entries"]
            if finished and status["dissection"]["caught_up"] and entries == last:
                same += 1
            else:
                last, same, done = entries, 0, polled
            time.sleep(0.1)
        stop.set()
        thread.join()
        shard_pids = {s["pid"] for s in status["dissection"].get("shards", [])}
        index_status = status["index"]
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(storage, ignore_errors=True)
    report(args, samples, started, serving, done, last, proc.pid, shard_pids, index_status)


def label(pid: int, tid: int, comm: str, api: int, shards: set[int], order: dict) -> str:
    if pid == api:
        return "api-main" if tid == api else f"api-t{order[(pid, tid)]}"
    if pid in shards:
        return f"{comm}" if tid == pid else f"{comm}-t{order[(pid, tid)]}"
    return comm if tid == pid else f"{comm}-t{order[(pid, tid)]}"


def report(args: Any, samples: list, started: float, serving: float, done: float, entries: int,
           api: int, shards: set[int], index_status: dict) -> None:
    order: dict[tuple[int, int], int] = {}
    per_pid: dict[int, int] = {}
    for _, snap in samples:
        for key in snap:
            if key not in order:
                per_pid[key[0]] = per_pid.get(key[0], 0) + 1
                order[key] = per_pid[key[0]] - 1
    names = {}
    for _, snap in samples:
        for key, (comm, _, _) in snap.items():
            names[key] = label(key[0], key[1], comm, api, shards, order)
    bucket = args.bucket_ms / 1000
    end = done - started
    nb = int(end / bucket) + 2
    used = {n: [0.0] * nb for n in set(names.values())}
    waited = [0.0] * nb
    prev: dict[tuple[int, int], tuple[int, int]] = {}
    for t, snap in samples:
        b = int((t - started) / bucket)
        if b >= nb:
            break
        for key, (comm, run, wait) in snap.items():
            r0, w0 = prev.get(key, (0, 0))
            used[names[key]][b] += (run - r0) / 1e9
            waited[b] += (wait - w0) / 1e9
            prev[key] = (run, wait)
    totals = {n: sum(v) for n, v in used.items()}
    cols = [n for n, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v > 0.005]
    if not args.quiet:
        print("t_ms " + " ".join(f"{c[:14]:>14}" for c in cols) + "   used   idle  runq")
        for b in range(nb):
            u = sum(used[c][b] for c in used)
            idle = max(0.0, args.cpus * bucket - u - waited[b])
            print(f"{b * bucket * 1000:5.0f} " + " ".join(f"{used[c][b] * 1000:14.0f}" for c in cols)
                  + f" {u * 1000:6.0f} {idle * 1000:6.0f} {waited[b] * 1000:5.0f}")
    total = sum(totals.values())
    shard_cols = [c for c in cols if c.startswith("shark-shard") and "-t" not in c]
    busy = [[b for b in range(nb) if used[c][b] > bucket * 0.5] for c in shard_cols]
    # (no shards with 1 CPU: dissection is a thread of the API process)
    both = min((max(b[0] for b in busy)) if busy and all(busy) else 0, nb) * bucket
    last_shard = max((b[-1] for b in busy if b), default=0) * bucket + bucket
    idle_total = sum(max(0.0, args.cpus * bucket - sum(used[c][b] for c in used) - waited[b])
                     for b in range(int(end / bucket) + 1))
    out = {"wall": end, "serving": serving - started, "both_shards_busy": both,
           "last_shard_busy_end": last_shard, "tail": end - last_shard, "cpu": total,
           "idle_core_s": idle_total, "runq_s": sum(waited), "entries": entries,
           "index": index_status,
           "by_thread": {c: round(totals[c], 3) for c in cols}}
    print(json.dumps(out, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps({**out, "buckets": {c: used[c] for c in cols},
                                             "runq": waited, "bucket": bucket}))


if __name__ == "__main__":
    main()
