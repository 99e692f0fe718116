"""What `tap` tells its workers about the dissection memory budget (the worker's
--dissect-memory; worker/dissection.py keeps to it)."""

from __future__ import annotations

from shark.units import format_size, parse_size

# Below it one HTTP/2 header block at its cap (256 KiB) would pass the budget by itself.
MIN_DISSECT_MEMORY = 256 * 1024


def check_dissect_memory(text: str) -> int:
    """The budget in bytes; ValueError naming the option for a bad size or one too small."""
    size = parse_size(text, "--dissect-memory")
    if size < MIN_DISSECT_MEMORY:
        raise ValueError(f"--dissect-memory: {text} is below the minimum of "
                         f"{format_size(MIN_DISSECT_MEMORY)}")
    return size


def worker_args(text: str | None) -> list[str]:
    """The worker's arguments for a budget given to tap (none: the worker's default)."""
    return [] if text is None else ["--dissect-memory", text]
