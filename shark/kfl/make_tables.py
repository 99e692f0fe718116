"""Write shark/kfl/grammar_tables.py, the KFL parser made once (shark/kfl/grammar.py says why).

    .venv/bin/python -m shark.kfl.make_tables          # after changing the grammar or lark

Lark numbers the parser's states and symbols in an order that changes from one run to the next
(sets of objects hashed by address), so the tables are written in a canonical numbering: symbols
by name, states in the order a breadth-first walk from the start state meets them (symbols
taken by name). The same grammar and lark then always give the same file, which
tests/unit/test_kfl_tables.py compares with the committed one.
"""

from __future__ import annotations

import pprint
from collections import deque
from pathlib import Path
from typing import Any

from lark.grammar import Rule
from lark.lexer import TerminalDef

from shark.kfl.grammar import build, fingerprint

TABLES = Path(__file__).with_name("grammar_tables.py")
HEADER = '''"""The KFL parser's LALR tables and lexer, made from shark/kfl/grammar.py by
`python -m shark.kfl.make_tables`; do not edit (tests/unit/test_kfl_tables.py checks them)."""

# flake8: noqa
'''


def canonical(table: dict[str, Any]) -> dict[str, Any]:
    """Lark's serialized parse table ({tokens, states, start_states, end_states}) renumbered:
    symbols by name, states breadth first from the start states."""
    names = sorted(table["tokens"].values())
    symbol = {old: names.index(name) for old, name in table["tokens"].items()}
    states: dict[int, dict[int, tuple[int, Any]]] = table["states"]
    order: dict[int, int] = {}
    queue = deque(table["start_states"][start] for start in sorted(table["start_states"]))
    while queue:
        state = queue.popleft()
        if state in order:
            continue
        order[state] = len(order)
        actions = sorted(states[state].items(), key=lambda item: symbol[item[0]])
        queue.extend(argument for _, (action, argument) in actions if action == 0)   # 0: shift
    if len(order) != len(states):
        raise ValueError(f"{len(states) - len(order)} parser states cannot be reached from the start")
    renumbered = {
        order[state]: {symbol[token]: (action, order[argument] if action == 0 else argument)
                       for token, (action, argument) in sorted(states[state].items(),
                                                                key=lambda item: symbol[item[0]])}
        for state in sorted(states, key=order.__getitem__)}
    return {"tokens": dict(enumerate(names)), "states": renumbered,
            "start_states": {name: order[state] for name, state in sorted(table["start_states"].items())},
            "end_states": {name: order[state] for name, state in sorted(table["end_states"].items())}}


def tables_source() -> str:
    data, memo = build().memo_serialize([TerminalDef, Rule])
    data["parser"]["parser"] = canonical(data["parser"]["parser"])
    return (f"{HEADER}\nFINGERPRINT = {fingerprint()!r}\n\n"
            f"DATA = {pprint.pformat(data, width=1000, sort_dicts=False)}\n\n"
            f"MEMO = {pprint.pformat(memo, width=1000, sort_dicts=False)}\n")


def main() -> None:
    TABLES.write_text(tables_source())
    print(f"wrote {TABLES}")


if __name__ == "__main__":
    main()
