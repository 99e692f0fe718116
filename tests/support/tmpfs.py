"""A small real tmpfs (a full disk on demand), mounted in a temp dir and unmounted after."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def small_tmpfs(where: Path, size: str = "8m") -> Iterator[Path]:
    """Mount a tmpfs of `size` at `where` (created); yields it; unmounts at the end."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                   check=True, capture_output=True, text=True)
    try:
        yield where
    finally:
        # lazy: a process that still holds a file open must not leave the mount behind
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)
