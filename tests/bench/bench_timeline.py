"""Where a worker's wall time goes while it replays a file: per process, per time window, the
time on a CPU, waiting for one (run queue) and asleep, from /proc/PID/task/TID/schedstat.

    .venv/bin/python tests/bench/bench_timeline.py FILE.pcap [--shards 2] [--tree DIR]
        [--window 0.1] [--sample 0.005] [--runs 1]

A sampler thread reads every thread's schedstat (nanoseconds on a CPU and in the run queue)
every --sample seconds, and /status is polled as fast as it answers from the moment the API
serves; the table shows, per window from the worker's start, each process's on-CPU and
run-queue milliseconds (asleep is the window less both, per thread) and the milestones
(capture finished, caught up, the final entry count). Sum of on-CPU over processes far below
(window x cores) while every process sleeps is an idle gap: a timer or a poll interval.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import PYTHON, ROOT, Child, tree_pids  # noqa: E402


def _schedstat(pid: int) -> dict[int, tuple[int, int]]:
    """Per thread of the process: (ns on a CPU, ns in the run queue)."""
    found = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            fields = (task / "schedstat").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found[int(task.name)] = (int(fields[0]), int(fields[1]))
    return found


class Sampler(threading.Thread):
    def __init__(self, root: int, every: float) -> None:
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.samples: list[tuple[float, dict[int, dict[int, tuple[int, int]]]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            now = time.monotonic()
            pids = tree_pids(self.root)
            self.samples.append((now, {pid: _schedstat(pid) for pid in pids}))
            self.done.wait(self.every)


def one_run(pcap: Path, shards: int, tree: Path, window: float, every: float, base: Path,
            rt: int = 0, poll: float = 0.02, split_api: bool = False) -> None:
    storage = Path(tempfile.mkdtemp(prefix="timeline-", dir=base))
    logs = base / "logs"
    logs.mkdir(exist_ok=True)
    started = time.monotonic()
    prefix = ["chrt", "-f", str(rt)] if rt else []
    child = Child([*prefix, PYTHON, "-m", "worker", "--pcap", str(pcap), "--storage-limit", "4GB",
                   "--dissect-shards", str(shards), "--storage-dir", str(storage),
                   "--listen", "127.0.0.1:0", "--node", "bench"], logs, "timeline", cwd=tree)
    sampler = Sampler(child.pid, every)
    sampler.start()
    events: list[tuple[float, str]] = []
    try:
        url = child.wait_stderr(r"serving on (http://\S+/api/v1)", 60).group(1)
        events.append((time.monotonic(), "serving"))
        seen: dict[str, object] = {}
        last, same = -1, 0
        roles: dict[int, str] = {}
        while same < 20:
            with urllib.request.urlopen(url + "/status", timeout=30) as response:
                status = json.load(response)
            now = time.monotonic()
            finished = all(s["finished"] for s in status["capture"]["sources"])
            caught = status["dissection"]["caught_up"]
            entries = status["index"]["entries"]
            for key, value in (("capture finished", finished), ("caught_up", caught)):
                if seen.get(key) != value:
                    seen[key] = value
                    events.append((now, f"{key}={value}"))
            if entries != last:
                events.append((now, f"entries={entries}"))
            for shard in status["dissection"].get("shards", []):
                roles[shard["pid"]] = f"shard{shard['shard']}"
            if finished and caught and entries == last:
                same += 1
            else:
                same = 0
            last = entries
            time.sleep(poll)
    finally:
        sampler.done.set()
        sampler.join()
        child.stop()
        shutil.rmtree(storage, ignore_errors=True)
    roles[child.pid] = "api"
    pids = sorted({pid for _, sample in sampler.samples for pid in sample})
    names = {pid: roles.get(pid, f"p{pid}") for pid in pids}
    # which other is capture vs fork server: capture starts first and is a direct child
    order = [pid for pid in pids if pid not in roles]
    print(f"{pcap.name}: {shards} shard(s); processes "
          + ", ".join(f"{names[p]}={p}" for p in pids) + f"; unnamed in start order {order}")
    header = ["t_end"] + [f"{names[p]} cpu/rq ms" for p in pids] + ["sum cpu", "max thread cpu+rq", "events"]
    print(" | ".join(header))
    first = sampler.samples[0][0]
    t = first + window
    prev: dict[int, dict[int, tuple[int, int]]] = {pid: {} for pid in pids}
    ev = list(events)
    totals = {pid: [0, 0] for pid in pids}
    for now, sample in sampler.samples:
        if now < t and now is not sampler.samples[-1][0]:
            continue
        cells, total, busiest = [], 0.0, 0.0
        apis: dict[int, tuple[float, float]] = {}
        for pid in pids:
            threads = {**prev[pid], **sample.get(pid, {})}
            d_on = d_q = 0.0
            for tid, (on, queued) in threads.items():
                was_on, was_q = prev[pid].get(tid, (0, 0))
                t_on, t_q = (on - was_on) / 1e6, (queued - was_q) / 1e6
                d_on += t_on
                d_q += t_q
                busiest = max(busiest, t_on + t_q)
                if pid == child.pid and split_api:
                    apis[tid] = (t_on, t_q)
            prev[pid] = threads
            totals[pid][0] += d_on
            totals[pid][1] += d_q
            total += d_on
            cells.append(f"{d_on:5.0f}/{d_q:4.0f}")
        marks = [text for when, text in ev if when <= now]
        ev = [(when, text) for when, text in ev if when > now]
        print(f"{now - started:6.2f} | " + " | ".join(cells) + f" | {total:5.0f} | {busiest:5.0f} | "
              + (" ".join(f"{tid % 1000}:{a:.0f}/{b:.0f}" for tid, (a, b) in sorted(apis.items()) if a + b >= 1)
                 + " | " if split_api else "") + ", ".join(marks))
        t = now + window
    print("totals ms on-cpu/run-queue: " + ", ".join(f"{names[p]} {totals[p][0]:.0f}/{totals[p][1]:.0f}"
                                                  for p in pids))
    print("events (s from start): " + ", ".join(f"{when - started:.3f} {text}" for when, text in events))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pcap", type=Path)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--window", type=float, default=0.1)
    parser.add_argument("--sample", type=float, default=0.005)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--api-threads", action="store_true", help="the API process's threads apart")
    parser.add_argument("--poll", type=float, default=0.02, help="/status every this many seconds")
    parser.add_argument("--rt", type=int, default=0,
                        help="run the worker under SCHED_FIFO at this priority (root; diagnosis "
                             "only: what it would do on idle cores while others load the machine)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "shark-timeline")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(args.runs):
        one_run(args.pcap, args.shards, args.tree, args.window, args.sample, args.work_dir,
                args.rt, args.poll, args.api_threads)


if __name__ == "__main__":
    main()
