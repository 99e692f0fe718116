"""The store is readable by its owner only: the pcap segments hold every credential as sent
and the index what the dissectors saw (docs/OPERATIONS.md, Storage).

Files are created 0600 in 0700 directories by the code that makes them (and the worker runs
with umask 077, which covers SQLite's WAL and shared-memory files and the capture child's);
a store written by an older version, or a hostPath the kubelet made 0755, is tightened when
a worker opens it. A shared directory (world-writable or sticky, as /tmp and /dev/shm are) is
refused, never tightened: making it 0700 locks every other user of it out (PostgreSQL keeps its
shared memory in /dev/shm).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
UMASK = 0o077


def create_file(path: Path) -> None:
    """Make `path` (empty) with FILE_MODE if it does not exist; an existing one is left alone."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass


class SharedDirectoryError(OSError):
    """The store was pointed at a directory other users share."""


def refuse_shared(path: Path) -> None:
    """Raise SharedDirectoryError when `path` is a directory others may write to (o+w or the
    sticky bit): the store must be a directory of its own, which it then makes 0700."""
    try:
        info = os.stat(path)
    except OSError:         # missing, or under a file: making it says what is wrong
        return
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode) and mode & (stat.S_IWOTH | stat.S_ISVTX):
        raise SharedDirectoryError(
            f"{path} is a shared directory (mode {mode:o}): the store needs a directory of its "
            f"own, which it makes readable by its owner only; give one inside it, e.g. "
            f"{path / 'shark'}")


def make_dir(path: Path) -> None:
    refuse_shared(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, DIR_MODE, [])


def tighten_store(storage_dir: Path) -> list[str]:
    """The store directory and its pcap/ 0700, the regular files in them 0600. Symlinks and
    other directories (e.g. kernel headers merged for --tls, links into /usr/src) are not
    followed. What could not be tightened (a file of another owner) is returned as notes: the
    worker says so and goes on, as it could before."""
    refuse_shared(storage_dir)
    notes: list[str] = []
    for directory in (storage_dir, storage_dir / "pcap"):
        try:
            info = os.lstat(directory)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            continue
        _tighten(directory, DIR_MODE, notes)
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    _tighten(Path(entry.path), FILE_MODE, notes)
    return notes


def _tighten(path: Path, mode: int, notes: list[str]) -> None:
    current = stat.S_IMODE(os.lstat(path).st_mode)
    if current & ~mode:
        try:
            os.chmod(path, mode)
        except PermissionError as error:
            notes.append(f"{path} stays mode {current:o}, readable beyond its owner: cannot change it "
                         f"({error.strerror})")
