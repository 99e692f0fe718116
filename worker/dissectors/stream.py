"""What every dissector's per-direction reader does with a chunk before parsing it."""

from __future__ import annotations

from worker.packet import PacketRef


def in_order(expected: int, data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(missing, data, offset) for a chunk at `offset` when `expected` is the next new byte:
    how many bytes were lost before it (report a gap of that length at `expected` first), and
    the chunk without what was already seen (a retransmitted overlap; empty if all of it)."""
    if offset > expected:
        return offset - expected, data, offset
    if offset < expected:
        return 0, data[expected - offset:], expected
    return 0, data, offset


# (stream offset where a chunk began, its ts, its ref): readers keep one per buffered chunk so
# a message found in the buffer can say which packet its first or last byte came in.
Mark = tuple[int, int, PacketRef]


def chunk_at(marks: list[Mark], offset: int) -> Mark:
    """The mark of the chunk holding stream byte `offset` (the first one if none is before)."""
    for mark in reversed(marks):
        if mark[0] <= offset:
            return mark
    return marks[0]
