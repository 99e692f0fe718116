"""KFL, the filter language (docs/KFL.md): a query compiled once into a predicate over entries.

    query = kfl.compile('http and response.status >= 500')
    query(entry_dict)        # -> bool, never raises
    kfl.compile("x ==")      # -> KflError("expected a value after '==', ...", column=5)

Entries are the JSON-decoded shark.model.Entry (dicts), as the worker's index holds them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shark.kfl.errors import KflError

__all__ = ["FIELDS", "HELPERS", "PROTOCOLS", "KflError", "Query", "compile", "validate"]

# The parser (lark) and the compiler load at the first compile() or at the first use of these
# names, not with the package: `shark.kfl.errors` alone is what a worker's API needs to start
# (~25 ms of CPU less before it serves; docs/BENCHMARKS.md, "Worker start, third round").
_FROM_COMPILER = frozenset({"FIELDS", "HELPERS", "PROTOCOLS"})


def __getattr__(name: str) -> Any:
    if name in _FROM_COMPILER:
        from shark.kfl import compiler
        return getattr(compiler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Query:
    """A compiled query. Calling it on an entry dict answers whether the entry matches."""

    __slots__ = ("source", "test", "protocols", "matches_all")

    def __init__(self, source: str, test: Callable[[dict[str, Any]], bool],
                 protocols: frozenset[str] | None, matches_all: bool) -> None:
        self.source = source
        # The raw closure: may raise on inputs no JSON-decoded entry holds; tests call it to
        # find such cases, everything else calls the Query.
        self.test = test
        # The protocols a matching entry can have; None when the query does not narrow it.
        self.protocols = protocols
        self.matches_all = matches_all

    def __call__(self, entry: dict[str, Any]) -> bool:
        try:
            return self.test(entry) is True
        except Exception:  # noqa: BLE001 - a filter answers no, it never fails a request
            return False

    def __repr__(self) -> str:
        return f"kfl.compile({self.source!r})"


def compile(source: str) -> Query:  # noqa: A001 - the name users expect (re.compile)
    """Parse and compile a query; an empty or all-whitespace query matches every entry.
    Raises KflError (and nothing else) for an invalid query."""
    from shark.kfl.compiler import compile_tree
    from shark.kfl.parser import parse
    tree = parse(source)
    if tree is None:
        return Query(source, lambda entry: True, None, True)
    try:
        compiled = compile_tree(tree)
    except RecursionError:
        raise KflError("the query nests too deeply", 1) from None
    return Query(source, compiled.test, compiled.protocols, False)


def validate(source: str) -> KflError | None:
    """The error of an invalid query, None for a valid one."""
    try:
        compile(source)
    except KflError as error:
        return error
    return None
