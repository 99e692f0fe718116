"""TCP sequence arithmetic and the out-of-order buffer of one direction.

Pure functions over a Half's `pending` list: no sessions, no statistics. Pieces are kept
sorted by stream offset and never overlap; when a segment overlaps what is already buffered,
the first copy wins and only the new bytes are stored.
"""

from __future__ import annotations

from typing import Final
from bisect import bisect_right, insort
from operator import itemgetter

from worker.assembler.flows import Piece
from worker.packet import PacketRef

SEQ_MOD: Final = 1 << 32
SEQ_MASK: Final = SEQ_MOD - 1
HALF_SPACE: Final = 1 << 31

_offset_of: Final = itemgetter(0)


def seq_delta(seq: int, reference: int) -> int:
    """seq - reference in sequence space, as a signed number in [-2**31, 2**31)."""
    delta = (seq - reference) & SEQ_MASK
    return delta - SEQ_MOD if delta >= HALF_SPACE else delta


def insert(pending: list[Piece], offset: int, data: bytes, ref: PacketRef) -> int:
    """Buffer the parts of `data` (at stream `offset`) not already in `pending`; returns how
    many bytes were stored (the rest duplicated buffered bytes)."""
    end = offset + len(data)
    index = bisect_right(pending, offset, key=_offset_of)
    if index:
        index -= 1   # the piece starting at or before `offset` may overlap it
    cursor = offset
    pieces: list[Piece] = []
    for piece_offset, piece_data, _ in pending[index:]:
        if piece_offset >= end:
            break
        piece_end = piece_offset + len(piece_data)
        if piece_end <= cursor:
            continue
        if piece_offset > cursor:
            pieces.append((cursor, data[cursor - offset:piece_offset - offset], ref))
        cursor = piece_end
        if cursor >= end:
            break
    if cursor < end:
        # A full slice of bytes is the same object: an unsplit segment is not copied.
        pieces.append((cursor, data[cursor - offset:], ref))
    for piece in pieces:
        insort(pending, piece, key=_offset_of)
    return sum(len(piece[1]) for piece in pieces)


def take_run(pending: list[Piece], offset: int) -> tuple[bytes, PacketRef] | None:
    """Remove the pieces that continue the stream from `offset` without a hole; their bytes
    joined and the earliest ref among them, or None when `offset` is not buffered."""
    if not pending or pending[0][0] != offset:
        return None
    count = 0
    cursor = offset
    for piece_offset, piece_data, _ in pending:
        if piece_offset != cursor:
            break
        cursor += len(piece_data)
        count += 1
    run = pending[:count]
    del pending[:count]
    if count == 1:
        return run[0][1], run[0][2]
    return b"".join([piece[1] for piece in run]), min([piece[2] for piece in run])
