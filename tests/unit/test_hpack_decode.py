"""worker.dissectors.hpack_decode against the `hpack` library's Decoder (raw=True), which it
replaces: on encoded header blocks, mutated (bit flips, truncations, insertions, prefixes
that overflow an integer or point past the table), the same fields or the same exception
class, and the same dynamic table after every block."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from hpack import Decoder, Encoder

from worker.dissectors import hpack_decode
from worker.dissectors.hpack_decode import HpackDecoder

NAMES = (b"content-type", b"x-a", b"date", b":path", b":method", b"user-agent", b"cookie")
VALUES = (b"1", b"GET", b"/x", b"text/html", b"a" * 300)
PREFIXES = (b"\x3f\xe1\x1f", b"\xff\xff\xff\xff\xff\xff\x01", b"\x80", b"\x00", b"\x40",
            b"\x7f\x80\x80\x80\x80\x80\x01", b"\x20", b"\xbf\xff\x7f")


def _outcome(decode: Callable[[], Iterable[Any]]) -> tuple[str, object]:
    try:
        return "ok", [tuple(field) for field in decode()]
    except Exception as exc:   # the class is what must agree
        return "error", type(exc).__name__


def _mutated(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.4 and out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif op < 0.6 and out:
            del out[rng.randrange(len(out)):]
        elif op < 0.8:
            at = rng.randrange(len(out) + 1)
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        else:
            out[:0] = rng.choice(PREFIXES)
    return bytes(out)


def test_same_fields_errors_and_table_as_hpack() -> None:
    rng = random.Random(3)
    outcomes: set[str] = set()
    for _ in range(3000):
        encoder = Encoder()
        if rng.random() < 0.3:
            encoder.header_table_size = rng.choice((0, 100, 256, 4096, 70_000))
        limit = rng.choice((1 << 20, 300))
        theirs = Decoder()
        theirs.max_allowed_table_size, theirs.max_header_list_size = 65_536, limit
        ours = HpackDecoder(65_536, limit)
        for _ in range(rng.randint(1, 8)):
            fields = [(rng.choice(NAMES),
                       bytes(rng.randrange(256) for _ in range(rng.choice((0, 5, 40))))
                       if rng.random() < 0.3 else rng.choice(VALUES))
                      for _ in range(rng.randint(0, 6))]
            block = encoder.encode(fields, huffman=rng.random() < 0.7)
            if rng.random() < 0.4:
                block = _mutated(block, rng)
            expected = _outcome(lambda: theirs.decode(block, raw=True))
            assert _outcome(lambda: ours.decode(block)) == expected, block.hex()
            table = theirs.header_table
            assert (list(ours.dynamic_entries), ours.table_size, ours.maxsize) == \
                (list(table.dynamic_entries), table._current_size, table.maxsize), block.hex()
            outcomes.add(expected[0] if expected[0] == "ok" else str(expected[1]))
            if expected[0] == "error":
                break
    # Every way a block can fail was met, or the comparison above proved less than it says.
    assert outcomes == {"ok", "HPACKDecodingError", "InvalidTableIndex", "InvalidTableSizeError",
                        "OversizedHeaderListError"}


def test_huffman_cache_is_bounded_and_keeps_no_long_string_nor_failure() -> None:
    hpack_decode._huffman.clear()
    for n in range(hpack_decode.HUFFMAN_CACHE_MAX + 10):
        encoded = Encoder().encode([(b"x", str(n).encode())], huffman=True)
        assert HpackDecoder(4096, 1 << 20).decode(encoded) == [(b"x", str(n).encode())]
        assert len(hpack_decode._huffman) <= hpack_decode.HUFFMAN_CACHE_MAX
    long = b"v" * (hpack_decode.HUFFMAN_CACHE_LEN * 2)
    encoded = Encoder().encode([(b"x", long)], huffman=True)
    assert HpackDecoder(4096, 1 << 20).decode(encoded) == [(b"x", long)]
    assert all(len(raw) <= hpack_decode.HUFFMAN_CACHE_LEN for raw in hpack_decode._huffman)
    before = dict(hpack_decode._huffman)
    bad = b"\x00\x01x\x81\xff"      # a literal whose value is one byte of Huffman padding: EOS
    assert _outcome(lambda: HpackDecoder(4096, 1 << 20).decode(bad)) == \
        ("error", "HPACKDecodingError")
    assert hpack_decode._huffman == before
