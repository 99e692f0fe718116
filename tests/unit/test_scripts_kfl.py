"""kfl.match / kfl.validate inside scripts (hub/scripts/kfl.js) answer as shark.kfl does: the
documented queries on the same samples, the invalid ones at the same columns, and random
queries on random entries."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
import quickjs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.scripts.runtime import KFL_JS, _kfl_config
from shark import kfl
from unit.test_kfl import DOC, EXPECTED, SAMPLES, mutate


class JsKfl:
    """kfl.js in a quickjs context of its own, as every script has it."""

    def __init__(self) -> None:
        self.context = quickjs.Context()
        self.context.eval(KFL_JS)
        self.context.eval("(function (c) { c = JSON.parse(c); __kfl.configure(c.fields, c.protocols, c.helpers, c.aliases, c.protocol_aliases, c.functions, c.endpoint_fields, c.absent); })")(
            json.dumps(_kfl_config()))
        self._check = self.context.eval("(function (q) { return JSON.stringify(__kfl.check(q)); })")
        self._match = self.context.eval("(function (q, e) { return __kfl.compile(q)(JSON.parse(e)); })")

    def check(self, query: str) -> dict[str, Any]:
        return json.loads(self._check(query))

    def match(self, query: str, entry: dict[str, Any]) -> bool:
        return self._match(query, json.dumps(entry))


JS = JsKfl()


def doc_blocks(kind: str) -> list[str]:
    blocks = re.findall(rf"```{kind}\n(.*?)```", DOC, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def python_matches(query: str, entry: dict[str, Any]) -> bool:
    return kfl.compile(query)(entry)


@pytest.mark.parametrize("query", sorted(EXPECTED))
def test_documented_queries_match_the_same_samples(query: str) -> None:
    matched = {name for name, sample in SAMPLES.items() if JS.match(query, sample)}
    assert matched == EXPECTED[query]


@pytest.mark.parametrize("query", doc_blocks("kfl"))
def test_every_documented_query_is_valid_in_scripts_too(query: str) -> None:
    assert JS.check(query) == {"valid": True, "error": None, "column": None}
    for sample in SAMPLES.values():
        assert JS.match(query, sample) is python_matches(query, sample), (query, sample["id"])


@pytest.mark.parametrize("query", doc_blocks("kfl-invalid"))
def test_documented_invalid_queries_fail_at_the_same_column(query: str) -> None:
    error = kfl.validate(query)
    answer = JS.check(query)
    assert answer["valid"] is False and error is not None
    assert answer["column"] == error.column, (query, answer, str(error))
    assert answer["error"].startswith(f"column {error.column}: ")


ERRORS = [
    ("response.status ==", 19, "expected a value after '==', got end of query"),
    ("http and", 9, "expected an expression after 'and', got end of query"),
    ("http and or dns", 10, "expected an expression after 'and', got the keyword 'or'"),
    ("(http", 6, "expected a comparison (== != < <= > >= in), 'and', 'or' or ')' after 'http'"),
    ("status = 5", 8, "got '=' (compare with '==')"),
    ("status == 5 5", 13, "expected 'and', 'or' or end of query after '5', got '5'"),
    ("request.", 9, "expected a name after '.', got end of query"),
    ("request[status]", 9, "expected a string or a number after '['"),
    ("status in [1,", 14, "expected a value after ','"),
    ("@", 1, "expected an expression, got '@'"),
    ("http & dns", 6, "got '&' (write 'and' or '&&')"),
    # KFL2 is CEL, which has one; a query copied with it hears why it stops there
    ("http && status_code >= 500 ? true : false", 28, "got '?' (KFL has no ternary '? :'; write (c and a) or (not c and b))"),
    ('summary == "abc', 12, "unterminated string"),
    ('summary == "\\q"', 13, "unknown escape '\\q'"),
    ('summary < r"a"', 11, "a regex can only be compared with == or !="),
    ("summary.len(1)", 12, "len() takes no arguments, got 1"),
    ("summary.startsWith(1)", 20, "startsWith() takes a string or a regex"),
    ("summary.Contains('x')", 9, "unknown helper 'Contains' (did you mean 'contains'?)"),
    ("Status == 1", 1, "unknown field 'Status' (did you mean 'status'?)"),
    ("http.path", 1, "'http' is a protocol name"),
    ("status in 5", 11, "expected a list, a string or a field after 'in'"),
    ("request.x[1.5]", 11, "an index must be a whole number"),
    ("status == 1e999", 11, "number out of range"),
    ("status == in", 11, "expected a value, got the keyword 'in'"),
    ("not", 4, "expected an expression after 'not', got end of query"),
]


@pytest.mark.parametrize(("query", "column", "message"), ERRORS)
def test_errors_say_the_same_where_and_what(query: str, column: int, message: str) -> None:
    assert kfl.validate(query).column == column          # the reference itself
    answer = JS.check(query)
    assert answer["valid"] is False
    assert answer["column"] == column, answer
    assert message in answer["error"], answer


def test_limits_and_empty_queries() -> None:
    assert "longer than" in JS.check("http or " * 2000 + "dns")["error"]
    assert "nests deeper" in JS.check("(" * 100 + "http" + ")" * 100)["error"]
    assert "nests deeper" in JS.check("not " * 100 + "http")["error"]
    assert JS.check(" or ".join(["http"] * 1000))["valid"] is True
    assert JS.match("", {"protocol": "dns"}) is True and JS.match("   ", {}) is True


def test_regex_forms_from_python_syntax() -> None:
    entry = {"request": {"path": "/API/v2/users", "headers": {"authorization": "Bearer x"}}, "summary": "a\nb"}
    for query, expected in [
        ('request.path == r"(?i)/api/v[0-9]+/.*"', True),
        ('request.path.matches(r"(?P<version>v[0-9])")', True),
        ('request.path.startsWith(r"/API")', True),
        ('request.path.endsWith(r"(users|orders)")', True),
        ('request.path == r"\\A/API.*\\Z"', True),
        ('request.headers["authorization"].matches(r"(?i)^bearer ")', True),
        ('summary == r"(?s)a.b"', True),
        ('summary == r"a.b"', False),
    ]:
        assert JS.match(query, entry) is expected, query
        assert python_matches(query, entry) is expected, query


# -- random queries on random entries ------------------------------------------------------------
SEEDS = sorted(set(doc_blocks("kfl")) | set(doc_blocks("kfl-invalid")))
EXAMPLES = int(os.environ.get("SHARK_FUZZ_EXAMPLES", "300"))   # more on demand
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT | st.sampled_from(["GET", "/api/orders", "http", "test.fail", "json", "admin"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=10)
ENTRIES = st.fixed_dictionaries({}, optional={
    **{name: VALUES for name in ("status", "summary", "tags", "tls", "complete", "elapsed_ms", "notes")},
    "protocol": st.sampled_from(["http", "dns", "redis", "tls", "grpc"]) | VALUES,
    "request": st.dictionaries(st.sampled_from(["method", "path", "headers", "command", "x", "in", "query"]),
                               VALUES, max_size=4),
    "response": st.none() | st.dictionaries(st.sampled_from(["status", "error", "headers"]), VALUES, max_size=3),
    "src": st.dictionaries(st.sampled_from(["name", "namespace", "ip", "port"]), VALUES, max_size=3),
})


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_queries_agree(data: st.DataObject) -> None:
    query = mutate(data, data.draw(st.sampled_from(SEEDS)))
    error = kfl.validate(query)
    answer = JS.check(query)
    # regexes too: both sides run RE2 (hub/scripts/re2.js in scripts)
    assert answer["valid"] is (error is None), (query, answer, str(error))
    if error is not None:
        return
    for _ in range(3):
        entry = data.draw(ENTRIES)
        assert JS.match(query, entry) is python_matches(query, entry), (query, entry)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(sorted(EXPECTED)), ENTRIES)
def test_fuzz_documented_queries_agree_on_random_entries(query: str, entry: dict[str, Any]) -> None:
    assert JS.match(query, entry) is python_matches(query, entry), (query, entry)
