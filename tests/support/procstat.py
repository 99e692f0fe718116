"""A process and its descendants, read from /proc: which they are and how much memory they hold
now (the soak test and the benchmarks sample them)."""

from __future__ import annotations

import os
import threading


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


def dir_apparent_bytes(path: str) -> int:
    """What `du -sb` counts (what --storage-limit bounds): the apparent sizes of the directory,
    its files and subdirectories, links not followed, walked with os.scandir; a file evicted
    or a journal removed while walked counts as gone."""
    total = 0
    pending = [path]
    while pending:
        current = pending.pop()
        try:
            total += os.lstat(current).st_size
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total


class DirSampler(threading.Thread):
    """The largest dir_apparent_bytes() of a directory, sampled every `every` seconds until
    stop(); `above` counts the samples above `limit`."""

    def __init__(self, path: str, limit: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.path, self.limit, self.every = path, limit, every
        self.largest = self.samples = self.above = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every):
            size = dir_apparent_bytes(self.path)
            self.largest = max(self.largest, size)
            self.samples += 1
            self.above += size > self.limit

    def stop(self) -> None:
        self._done.set()
        self.join()


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
