"""HPACK header block decoding (RFC 7541) for the HTTP/2 dissector: the `hpack` library's
Decoder.decode(data, raw=True), same fields and same errors, at a fraction of its cost.

hpack's Decoder builds a memoryview slice, a bytes copy of the rest of the block and a
HeaderTuple per field, logs at debug level on every step and Huffman-decodes every string
anew; the dissector decodes every header block of every stream (about 85 us per HTTP/2 entry,
most of it there). Here one pass reads indices into the block, and Huffman strings are looked
up in a bounded cache first: decoding one is a pure function of its bytes, and the same names
and values (content types, paths, server names) come back on every request.

Same behaviour, checked by tests/bench/diff_sessions.py http2 against the library: the fields
in order, the dynamic table after each block (insertions, evictions, size updates), and the
exception raised on a bad block, of hpack's own classes (the dissector's notes name them):
HPACKDecodingError (truncated integer or string, bad Huffman, size update after a field),
InvalidTableIndex, InvalidTableSizeError, OversizedHeaderListError.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from hpack.exceptions import (HPACKDecodingError, InvalidTableIndex, InvalidTableSizeError,
                              OversizedHeaderListError)
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

STATIC: Final[tuple[tuple[bytes, bytes], ...]] = tuple(HeaderTable.STATIC_TABLE)
STATIC_LEN: Final = len(STATIC)
DEFAULT_TABLE_SIZE: Final = 4096          # RFC 7541 4.2 (SETTINGS_HEADER_TABLE_SIZE's default)
VARINT_MAX_LENGTH: Final = 5              # hpack's limit on an integer's bytes after its prefix

# Huffman-coded strings already decoded, shared by every session: bounded by count and by the
# length of what is kept (~1.3 MB at most), emptied whole when full (a burst of unique values
# costs one decode each, as without it).
HUFFMAN_CACHE_MAX: Final = 4096
HUFFMAN_CACHE_LEN: Final = 128
_huffman: dict[bytes, bytes] = {}


def huffman(raw: bytes) -> bytes:
    """decode_huffman(raw), cached (a failure raises, as decode_huffman does, every time)."""
    out = _huffman.get(raw)
    if out is None:
        out = decode_huffman(raw)
        if len(raw) <= HUFFMAN_CACHE_LEN:
            if len(_huffman) >= HUFFMAN_CACHE_MAX:
                _huffman.clear()
            _huffman[raw] = out
    return out


def _integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """The integer at data[pos] with a prefix_bits prefix, and the position after it
    (hpack.hpack.decode_integer's rules, its error on running out of bytes or on too many)."""
    n = len(data)
    if pos >= n:
        raise HPACKDecodingError("Unable to decode HPACK integer representation")
    max_number = (1 << prefix_bits) - 1
    number = data[pos] & max_number
    if number != max_number:
        return number, pos + 1
    index = 1
    shift = 0
    while True:
        if pos + index >= n:
            raise HPACKDecodingError("Unable to decode HPACK integer representation")
        next_byte = data[pos + index]
        index += 1
        if next_byte >= 128:
            number += (next_byte - 128) << shift
        else:
            number += next_byte << shift
            break
        shift += 7
        if index > VARINT_MAX_LENGTH:
            raise HPACKDecodingError("Variable integer representation is too long")
    return number, pos + index


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """The string literal at data[pos] (length-prefixed, maybe Huffman-coded) and the
    position after it."""
    length, start = _integer(data, pos, 7)
    end = start + length
    if end > len(data):
        raise HPACKDecodingError("Truncated header block")
    raw = data[start:end]
    if data[pos] & 0x80:
        raw = huffman(raw)
    return raw, end


class HpackDecoder:
    """One direction's HPACK state: the dynamic table (newest entry first) and its size."""

    __slots__ = ("dynamic_entries", "table_size", "maxsize", "max_allowed_table_size",
                 "max_header_list_size")

    def __init__(self, max_allowed_table_size: int, max_header_list_size: int) -> None:
        self.dynamic_entries: deque[tuple[bytes, bytes]] = deque()
        self.table_size = 0                     # RFC 7541 4.1 sizes of the entries
        self.maxsize = DEFAULT_TABLE_SIZE
        self.max_allowed_table_size = max_allowed_table_size
        self.max_header_list_size = max_header_list_size

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 1 <= index <= STATIC_LEN:
            return STATIC[index - 1]
        dynamic = index - STATIC_LEN - 1
        if 0 <= dynamic < len(self.dynamic_entries):
            return self.dynamic_entries[dynamic]
        raise InvalidTableIndex(f"Invalid table index {index}")

    def _add(self, name: bytes, value: bytes) -> None:
        size = 32 + len(name) + len(value)
        if size > self.maxsize:
            self.dynamic_entries.clear()
            self.table_size = 0
        else:
            self.dynamic_entries.appendleft((name, value))
            self.table_size += size
            self._shrink()

    def _shrink(self) -> None:
        entries = self.dynamic_entries
        size = self.table_size
        while size > self.maxsize:
            name, value = entries.pop()
            size -= 32 + len(name) + len(value)
        self.table_size = size

    def _resize(self, new: int) -> None:
        old = self.maxsize
        self.maxsize = new
        if new <= 0:
            self.dynamic_entries.clear()
            self.table_size = 0
        elif old > new:
            self._shrink()

    def decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The fields of one header block, in order; the table updated as it goes (a block
        that raises may have changed it: the caller starts a new decoder then)."""
        headers: list[tuple[bytes, bytes]] = []
        n = len(data)
        pos = 0
        inflated = 0
        limit = self.max_header_list_size
        while pos < n:
            b = data[pos]
            if b & 0x80:
                index, pos = _integer(data, pos, 7)
                header = self._entry(index)
            elif b & 0x20 and not b & 0x40:
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                new_size, pos = _integer(data, pos, 5)
                if new_size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                self._resize(new_size)
                continue
            else:
                indexing = bool(b & 0x40)
                if b & (0x3F if indexing else 0x0F):
                    index, pos = _integer(data, pos, 6 if indexing else 4)
                    name = self._entry(index)[0]
                else:
                    name, pos = _string(data, pos + 1)
                value, pos = _string(data, pos)
                header = (name, value)
                if indexing:
                    self._add(name, value)
            headers.append(header)
            inflated += 32 + len(header[0]) + len(header[1])
            if inflated > limit:
                raise OversizedHeaderListError(
                    f"A header list larger than {limit} has been received")
        if self.maxsize > self.max_allowed_table_size:
            raise InvalidTableSizeError("Encoder did not shrink table size to within the max")
        return headers
