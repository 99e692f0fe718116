"""The number in an entry id (NODE:SEQ) or an event id (STORE:SEQ), as clients send it.

`str.isdigit()` is not enough: it takes '²' and other digits `int()` refuses, and a number past
SQLite's INTEGER made the index raise OverflowError; both were a 500 instead of a 400.
"""

from __future__ import annotations

MAX_SEQ = (1 << 63) - 1     # SQLite's INTEGER, the index's row numbers


def parse_seq(text: str) -> int | None:
    """ASCII digits up to MAX_SEQ -> their value; None for anything else."""
    if not text or len(text) > 19 or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_SEQ else None
