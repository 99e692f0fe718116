"""The committed KFL parser tables (shark/kfl/grammar_tables.py): what the grammar makes, what
every process loads, and a parser that answers exactly as the one built from the grammar."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lark
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_kfl import ALPHABET, SEEDS, mutate

from shark.kfl import grammar, parser
from shark.kfl.errors import KflError
from shark.kfl.make_tables import TABLES, tables_source

ROOT = Path(__file__).resolve().parents[2]
BUILT = grammar.build()


def test_the_committed_tables_are_what_the_grammar_makes() -> None:
    assert TABLES.read_text() == tables_source(), (
        "shark/kfl/grammar_tables.py is stale (the grammar, its options or lark changed): "
        "run .venv/bin/python -m shark.kfl.make_tables and commit the file")


def test_the_tables_come_out_the_same_whatever_the_hash_seed() -> None:
    code = "from shark.kfl.make_tables import tables_source; import sys; sys.stdout.write(tables_source())"
    for seed in ("1", "2"):
        made = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}, timeout=60, check=True)
        assert made.stdout == tables_source()


def test_the_parser_is_loaded_from_the_tables_not_built() -> None:
    assert grammar.PARSER.source_path == "<deserialized>"
    assert parser.PARSER is grammar.PARSER


def test_tables_made_from_another_grammar_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grammar, "GRAMMAR", grammar.GRAMMAR.replace('"||"', '"|||"'))
    built = grammar.load()
    assert built.source_path != "<deserialized>"
    assert built.parse("a ||| b").data == "or_"


def outcome(text: str) -> object:
    try:
        return parser.parse(text)
    except KflError as error:
        return (error.message, error.column)


def same_with_both_parsers(text: str) -> None:
    loaded = outcome(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parser, "PARSER", BUILT)
        built = outcome(text)
    assert loaded == built, text
    assert isinstance(loaded, (lark.Tree, tuple)) or loaded is None


def test_documented_queries_parse_the_same_as_with_the_built_parser() -> None:
    for text in SEEDS:
        same_with_both_parsers(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_queries_parse_and_fail_the_same_as_with_the_built_parser(data: st.DataObject) -> None:
    same_with_both_parsers(mutate(data, data.draw(st.sampled_from(SEEDS))))


@settings(max_examples=200, deadline=None)
@given(st.text(ALPHABET, max_size=60))
def test_random_text_parses_and_fails_the_same_as_with_the_built_parser(text: str) -> None:
    same_with_both_parsers(text)
