"""Helpers shared by the benchmarks: the machine, child processes, CPU and memory of a process
tree, the worker's /status, and printing tables. Run on demand, never part of the test suite."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from support.procstat import tree_pids  # noqa: E402  (re-exported for the benchmarks)
PYTHON = sys.executable
T = TypeVar("T")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "load": [round(x, 2) for x in os.getloadavg()]}


def wait_for_quiet(max_load: float, patience_s: float) -> list[float]:
    """Wait (up to patience_s) until the 1-minute load is below max_load; return the load seen."""
    deadline = time.monotonic() + patience_s
    while True:
        load = [round(x, 2) for x in os.getloadavg()]
        if load[0] <= max_load or time.monotonic() >= deadline:
            return load
        print(f"load {load[0]} > {max_load}: waiting", file=sys.stderr, flush=True)
        time.sleep(15)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


# -- process trees ------------------------------------------------------------------------------
def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the tree's live processes (threads included)."""
    return cpu_seconds(tree_pids(pid))


def is_shard_server(pid: int) -> bool:
    """The dissection shards' fork server: forked from the worker and named so (its command line
    is the worker's: worker.shard_server), or multiprocessing's own (a new interpreter)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_bytes().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return comm == b"shark-forksrv" or b"multiprocessing.forkserver" in cmdline


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes (threads included)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])   # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / _CLK_TCK


def tree_peak_rss_mb(pid: int) -> float:
    """Sum over the tree's live processes of their peak RSS (VmHWM)."""
    total_kb = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


GNU_TIME = "/usr/bin/time"


def pinned_cpus(count: int) -> str:
    """taskset's list of the first `count` CPUs this process may use."""
    allowed = sorted(os.sched_getaffinity(0))
    if not 1 <= count <= len(allowed):
        raise ValueError(f"{count} CPUs asked for; this process may use {len(allowed)}")
    return ",".join(map(str, allowed[:count]))


class Child:
    """A child in its own process group, stdout/stderr to files; reaped with wait4 for rusage.

    With measure=True it runs under GNU time, whose report gives the peak RSS and CPU time of
    the program alone: wait4's ru_maxrss would also count the pages of this (large) benchmark
    process that the child held between fork and exec.
    """

    def __init__(self, argv: Sequence[str], log_dir: Path, name: str,
                 env: dict[str, str] | None = None, stdout: Path | None = None,
                 measure: bool = False, cwd: Path = ROOT, cpus: int | None = None) -> None:
        self.argv = list(argv)
        self.name = name
        self.stdout_path = stdout or log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        self.time_path: Path | None = None
        if measure and os.path.exists(GNU_TIME):
            self.time_path = log_dir / f"{name}.time"
            self.argv = [GNU_TIME, "-f", "%M %U %S", "-o", str(self.time_path), *self.argv]
        if cpus is not None:   # the program and every process it starts may use only these
            self.argv = ["taskset", "-c", pinned_cpus(cpus), *self.argv]
        self.started = time.monotonic()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=err, cwd=cwd,
                                            env={**os.environ, **(env or {})},
                                            start_new_session=True)
        self.pid = self.process.pid
        self.returncode: int | None = None
        self.rusage: Any = None
        self.ended: float | None = None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def wait_stderr(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        regex = re.compile(pattern)

        def look() -> re.Match[str] | None:
            if match := regex.search(self.stderr()):
                return match
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}: {self.stderr()[-2000:]}")
            return None
        return wait_for(look, timeout, f"{pattern!r} from {self.name}")

    def wait(self, timeout: float | None = None) -> int:
        """Reap the child (wait4) and keep its exit code and rusage."""
        if self.returncode is not None:
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.ended = time.monotonic()
                self.returncode = os.waitstatus_to_exitcode(status)
                self.rusage = rusage
                self.process.returncode = self.returncode   # keep Popen from waiting again
                return self.returncode
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.argv, timeout or 0)
            time.sleep(0.01)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the whole process group, wait; SIGKILL the group if it does not exit."""
        if self.returncode is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                return self.wait(10)
        return self.returncode

    def _gnu_time(self) -> list[float] | None:
        if self.time_path is None or not self.time_path.exists():
            return None
        lines = self.time_path.read_text().strip().splitlines()
        try:
            return [float(x) for x in lines[-1].split()]
        except (IndexError, ValueError):
            return None

    @property
    def maxrss_mb(self) -> float:
        """Peak RSS of the program (GNU time), else of the largest process of the reaped tree
        (wait4's ru_maxrss); both are in KiB."""
        if (measured := self._gnu_time()) is not None:
            return measured[0] / 1024
        return self.rusage.ru_maxrss / 1024 if self.rusage else 0.0

    @property
    def cpu_seconds(self) -> float:
        if (measured := self._gnu_time()) is not None:
            return measured[1] + measured[2]
        return (self.rusage.ru_utime + self.rusage.ru_stime) if self.rusage else 0.0


# -- the worker ---------------------------------------------------------------------------------
class Worker(Child):
    def __init__(self, args: Sequence[str], storage_dir: Path, log_dir: Path, name: str = "worker",
                 tree: Path = ROOT, cpus: int | None = None) -> None:
        """`python -m worker` of the checkout `tree` (another one's for before/after runs),
        on the first `cpus` CPUs this process may use when given (all of them otherwise)."""
        super().__init__([PYTHON, "-m", "worker", *args, "--storage-dir", str(storage_dir),
                          "--listen", "127.0.0.1:0", "--node", "bench"], log_dir, name, cwd=tree,
                         cpus=cpus)
        self.url = self.wait_stderr(r"serving on (http://\S+/api/v1)").group(1)
        self.ready = time.monotonic()

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/status", timeout=30) as response:
            return json.load(response)


def index_rows_digest(index: Any) -> tuple[Any, int]:
    """sha256 over every row an EntryIndex holds (msgpack), oldest first, and how many rows:
    two trees that index the same rows give the same digest."""
    import msgspec
    digest = hashlib.sha256()
    rows = index.newer_than(0)
    for row in rows:
        digest.update(msgspec.msgpack.encode(row))
    return digest, len(rows)


# -- output -------------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) if _numeric(c) else c.ljust(w)
                              for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join([line, rule, *body])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,]*\.?\d+x?", text))


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
