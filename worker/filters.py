"""The worker's entry filter for /entries, /stream and /pcap: a KFL query (docs/KFL.md)
evaluated on the JSON-decoded entries of the index.

A query that can only match some protocols (`redis and ...`, `protocol in [...]`) skips the
rows of other protocols without decoding them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from shark.kfl.errors import KflError
from worker.store.index import IndexRow

if TYPE_CHECKING:
    from shark.kfl import Query

__all__ = ["KflError", "compile_query", "row_predicate"]

RowPredicate = Callable[[IndexRow], bool]

_decode = msgspec.json.Decoder().decode


def compile_query(text: str | None) -> Query:
    """The query of a `q` parameter; missing or empty matches everything. Raises KflError."""
    # Imported at the first query, not with the API: lark and the KFL compiler are ~25 ms of
    # CPU that would delay the worker's start (docs/BENCHMARKS.md, "Worker start, third round").
    from shark import kfl
    return kfl.compile(text or "")


def row_predicate(query: Query | None) -> RowPredicate:
    if query is None or query.matches_all:
        return lambda row: True
    protocols = query.protocols

    def predicate(row: IndexRow) -> bool:
        if protocols is not None and row.protocol not in protocols:
            return False
        try:
            entry = _decode(row.entry_json)
        except msgspec.DecodeError:
            return False
        return type(entry) is dict and query(entry)
    return predicate
