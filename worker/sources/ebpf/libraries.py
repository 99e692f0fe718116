"""Which files the processes of the node run TLS code from: the libssl files they map
(/proc/PID/maps) and their executables (/proc/PID/exe), which may be Go programs or link
OpenSSL statically (executables.py tells).

A uprobe is set on a file (its inode), not on a process: one attach per distinct file covers
every process that runs it, including processes started later. So the scan looks for files
not seen yet (a container brings its own), and counts the processes that map a hooked one.
Paths are opened through /proc/PID/root, which is the process's own mount namespace: the
files of a container are reached from the host.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

# libssl.so, libssl.so.3, libssl.so.1.1 (not NSS's libssl3.so, a different library).
_LIBSSL = re.compile(r"(?:^|/)libssl\.so(?:\.[0-9]+)*$")

# Re-read the maps of every known process this often; new processes are read at every scan.
FULL_RESCAN_EVERY_S = 30.0


LIBSSL = "libssl"
EXECUTABLE = "executable"


class LibraryFile(NamedTuple):
    device: int
    inode: int


class Found(NamedTuple):
    path: str           # reaches the file from here
    kind: str           # LIBSSL or EXECUTABLE


def libssl_paths(maps: str) -> set[str]:
    """The libssl paths in the text of one /proc/PID/maps (deleted files left out)."""
    paths = set()
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6:
            continue
        path = fields[5]
        if path.endswith(" (deleted)"):
            continue
        if _LIBSSL.search(path):
            paths.add(path)
    return paths


class LibraryScanner:
    """Tracks processes, the libssl files they map and the executables they run, across
    scans."""

    def __init__(self, proc: str = "/proc", exclude: set[int] | None = None) -> None:
        self._proc = proc
        self._exclude = exclude or set()
        self._by_pid: dict[int, set[LibraryFile]] = {}
        self.known: dict[LibraryFile, Found] = {}   # every file seen (hooked or not)
        self._last_full = float("-inf")

    def scan(self, now: float) -> dict[LibraryFile, Found]:
        """Read the maps and executables of new processes (and of all of them every
        FULL_RESCAN_EVERY_S); returns the files not seen before, each with a path that
        reaches it."""
        full = now - self._last_full >= FULL_RESCAN_EVERY_S
        if full:
            self._last_full = now
        try:
            pids = {int(name) for name in os.listdir(self._proc) if name.isdigit()}
        except OSError:
            return {}
        for gone in set(self._by_pid) - pids:
            del self._by_pid[gone]
        found: dict[LibraryFile, Found] = {}
        for pid in pids:
            if pid in self._exclude or (not full and pid in self._by_pid):
                continue
            self._by_pid[pid] = self._scan_process(pid, found)
        return found

    def processes_mapping(self, files: set[LibraryFile]) -> int:
        return sum(1 for mapped in self._by_pid.values() if mapped & files)

    def _scan_process(self, pid: int, found: dict[LibraryFile, Found]) -> set[LibraryFile]:
        try:
            with open(f"{self._proc}/{pid}/maps", encoding="utf-8", errors="replace") as file:
                paths = [(path, LIBSSL) for path in libssl_paths(file.read())]
        except OSError:    # gone
            return set()
        try:
            paths.append((os.readlink(f"{self._proc}/{pid}/exe"), EXECUTABLE))
        except OSError:    # a kernel thread, or gone
            pass
        mapped = set()
        for path, kind in paths:
            if path.endswith(" (deleted)"):
                continue
            reachable = self._reachable(pid, path)
            if reachable is None:
                continue
            where, library = reachable
            mapped.add(library)
            if library not in self.known:
                self.known[library] = found[library] = Found(where, kind)
        return mapped

    def _reachable(self, pid: int, path: str) -> tuple[str, LibraryFile] | None:
        """A path from here to the file the process maps, and its identity. The plain path
        when it is the same file (the process shares our mount namespace)."""
        through_root = f"{self._proc}/{pid}/root{path}"
        try:
            status = os.stat(through_root)
        except OSError:
            return None
        library = LibraryFile(status.st_dev, status.st_ino)
        try:
            plain = os.stat(path)
            if (plain.st_dev, plain.st_ino) == library:
                return path, library
        except OSError:
            pass
        return through_root, library
