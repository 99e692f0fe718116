"""What every dissector's per-direction reader does with a chunk before parsing it."""

from __future__ import annotations


def in_order(expected: int, data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(missing, data, offset) for a chunk at `offset` when `expected` is the next new byte:
    how many bytes were lost before it (report a gap of that length at `expected` first), and
    the chunk without what was already seen (a retransmitted overlap; empty if all of it)."""
    if offset > expected:
        return offset - expected, data, offset
    if offset < expected:
        return 0, data[expected - offset:], expected
    return 0, data, offset
