"""A strict little parser of Prometheus' text format, for the /metrics tests."""

from __future__ import annotations

import re

LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[a-zA-Z_]+="(?:[^"\\]|\\.)*"'
                  r'(,[a-zA-Z_]+="(?:[^"\\]|\\.)*")*)\})? (?P<value>-?[0-9.e+]+|NaN|[+-]Inf)$')


def parse_prometheus(text: str) -> dict[tuple[str, str], float]:
    """A strict little parser of the text format: every line is HELP, TYPE or a sample whose
    family was declared by TYPE before it."""
    assert text.endswith("\n")
    samples: dict[tuple[str, str], float] = {}
    types: dict[str, str] = {}
    helps: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram") and name in helps and name not in types, line
            types[name] = kind
        else:
            match = LINE.match(line)
            assert match, f"not a sample line: {line!r}"
            family = re.sub(r"_(bucket|sum|count)$", "", match["name"])
            assert match["name"] in types or types.get(family) == "histogram", line
            samples[(match["name"], match["labels"] or "")] = float(match["value"])
    return samples
