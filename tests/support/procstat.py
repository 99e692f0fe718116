"""A process and its descendants, read from /proc: which they are and how much memory they hold
now (the soak test and the benchmarks sample them)."""

from __future__ import annotations

import os


def tree_pids(pid: int) -> list[int]:
    """pid and all its descendants alive now."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for tid in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{tid}/children") as children:
                    todo.extend(int(p) for p in children.read().split())
        except OSError:
            continue
    return pids


def tree_rss_mb(pid: int) -> float:
    """Sum of the resident memory (VmRSS) of the tree's live processes now."""
    total_kb = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
                        break
        except OSError:
            continue
    return total_kb / 1024


def dir_bytes(path: str) -> int:
    """Bytes the files under `path` take on disk (allocated blocks, as `du -s -B1` counts them)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue   # evicted while walked
    return total
