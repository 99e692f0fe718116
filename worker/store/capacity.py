"""How large the store may be allowed to grow: `--storage-limit` at start and `PUT /config`
are refused above the room on the store's filesystem or above the operator's maximum, so a
caller cannot make the worker fill the node's disk (the hostPath shares it with the node)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from shark.units import format_size
from worker.store.segments import list_segments


class LimitRefused(ValueError):
    """A storage limit the store cannot have; the message starts with the field or option."""


def room(storage_dir: Path) -> tuple[int, int]:
    """(free, stored): bytes free for this user on the store's filesystem, and bytes the
    segments hold now (evicting them gives their room back, so they count as room too)."""
    free = shutil.disk_usage(storage_dir).free
    stored = 0
    for segment in list_segments(storage_dir):
        try:
            stored += os.stat(segment.path).st_size
        except FileNotFoundError:      # evicted while we looked
            pass
    return free, stored


def human(size: int) -> str:
    """A size to read, not to parse back: 200MiB stays exact, 75519220KiB becomes 77.3GB."""
    exact = format_size(size)
    if len(exact.rstrip("BKMGiT")) <= 4:
        return exact
    for unit, factor in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if size >= factor:
            return f"{size / factor:.1f}{unit}".replace(".0", "")
    return f"{size}B"


def check_limit(limit: int, storage_dir: Path, maximum: int | None, name: str, given: str = "") -> None:
    """LimitRefused naming `name` (storage_limit, --storage-limit) when `limit` (`given` as the
    caller wrote it) is above the operator's `maximum` or above what the filesystem of
    `storage_dir` can hold."""
    shown = given or human(limit)
    if maximum is not None and limit > maximum:
        raise LimitRefused(f"{name}: {shown} is above the maximum of {human(maximum)} (--max-storage-limit)")
    try:
        free, stored = room(storage_dir)
    except OSError as error:
        raise LimitRefused(f"{name}: cannot measure the free space of {storage_dir}: "
                           f"{error.strerror or error}") from None
    if limit > free + stored:
        raise LimitRefused(f"{name}: {shown} is more than {storage_dir} can hold "
                           f"({human(free)} free on its filesystem + {human(stored)} stored)")
