"""Protocol Buffers decoded without a schema (what `protoc --decode_raw` shows), for the detail
view of gRPC messages.

A message is a list of fields {"field": n, "type": ..., "value": ...}. Wire types give
"varint" (int), "fixed64" / "fixed32" (unsigned int, with the same bits as a float under
"double" / "float"), and length-delimited bytes, which are guessed in this order: "string"
when they are printable UTF-8, "message" when they parse wholly as fields (value: a list of
fields), else "bytes" (hex, cut at BYTES_LIMIT). Groups (wire types 3 and 4) are not decoded:
the bytes holding them are not taken for a message.
"""

from __future__ import annotations

import struct
from typing import Any

MAX_DEPTH = 8
MAX_FIELDS = 2000          # per message and nested messages together
BYTES_LIMIT = 256          # bytes shown as hex per field
STRING_LIMIT = 4096        # characters shown per string field

_CONTROL = frozenset(range(0x20)) - {0x09, 0x0A, 0x0D}


class _Invalid(Exception):
    pass


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Invalid
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _printable(raw: bytes) -> str | None:
    if not raw:
        return ""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(b in _CONTROL for b in raw) or "\x7f" in text:
        return None
    return text


class _Budget:
    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields = MAX_FIELDS


def _fields(data: bytes, pos: int, end: int, depth: int, budget: _Budget) -> list[dict[str, Any]]:
    """The fields of data[pos:end]; raises _Invalid when it is not a message."""
    out: list[dict[str, Any]] = []
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise _Invalid
        budget.fields -= 1
        if budget.fields < 0:
            raise _Invalid
        if wire == 0:
            value, pos = _varint(data, pos, end)
            out.append({"field": number, "type": "varint", "value": value})
        elif wire == 1:
            if pos + 8 > end:
                raise _Invalid
            (u,) = struct.unpack_from("<Q", data, pos)
            (d,) = struct.unpack_from("<d", data, pos)
            pos += 8
            out.append({"field": number, "type": "fixed64", "value": u,
                        "double": d if d == d and abs(d) != float("inf") else None})
        elif wire == 5:
            if pos + 4 > end:
                raise _Invalid
            (u,) = struct.unpack_from("<I", data, pos)
            (f,) = struct.unpack_from("<f", data, pos)
            pos += 4
            out.append({"field": number, "type": "fixed32", "value": u,
                        "float": f if f == f and abs(f) != float("inf") else None})
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise _Invalid
            out.append(_delimited(number, data, pos, pos + length, depth, budget))
            pos += length
        else:
            raise _Invalid
    return out


def _delimited(number: int, data: bytes, start: int, end: int, depth: int,
               budget: _Budget) -> dict[str, Any]:
    raw = data[start:end]
    text = _printable(raw)
    if text is not None:
        field: dict[str, Any] = {"field": number, "type": "string", "value": text[:STRING_LIMIT]}
        if len(text) > STRING_LIMIT:
            field["truncated"] = True
        return field
    if depth < MAX_DEPTH and raw:
        saved = budget.fields
        try:
            return {"field": number, "type": "message",
                    "value": _fields(data, start, end, depth + 1, budget)}
        except _Invalid:
            budget.fields = saved
    field = {"field": number, "type": "bytes", "value": raw[:BYTES_LIMIT].hex()}
    if len(raw) > BYTES_LIMIT:
        field["truncated"] = True
    return field


def decode_message(data: bytes) -> list[dict[str, Any]] | None:
    """The fields of one message, or None when the bytes are not a protobuf message."""
    try:
        return _fields(data, 0, len(data), 0, _Budget())
    except (_Invalid, RecursionError):
        return None
