"""Users' regexes run in linear time (RE2, shark/regex.py): a pattern that makes Python's re
backtrack exponentially answers at once, and what RE2 cannot run that way is refused with its
column, in the workers' KFL, in the scripts' port of it, and in the hub's pod regex."""

from __future__ import annotations

import pytest

from hub.kube.targeter import SpecError, TargetSpec
from shark import kfl
from shark.kfl.errors import KflError
from test_scripts_kfl import JS

# Python's re: 41 ms at 28 characters, x1.6 per character more; 2000 would never end.
EVIL = 'request.path.matches("(a|aa)+$")'


def test_a_catastrophic_pattern_answers_on_a_long_path():
    query = kfl.compile(EVIL)
    assert query({"request": {"path": "a" * 2000 + "!"}}) is False
    assert query({"request": {"path": "a" * 2000}}) is True
    assert kfl.compile('request.path == r"(x+x+)+y"')({"request": {"path": "x" * 5000}}) is False


@pytest.mark.parametrize(("query", "column", "what"), [
    (r'request.path.matches(r"(a)\1")', 27, r"a backreference \1"),
    ('request.path.matches("x(?=y)")', 24, "lookahead (?=...)"),
    ('request.path.matches("(?<!y)x")', 23, "negative lookbehind (?<!...)"),
    ('request.path == r"a++"', 20, "a possessive quantifier ++"),
    ('summary.matches(r"(?P<v>a)(?P=v)")', 27, "a named backreference (?P=name)"),
])
def test_what_re2_cannot_run_is_refused_with_its_column_here_and_in_scripts(query, column, what):
    with pytest.raises(KflError) as caught:
        kfl.compile(query)
    assert caught.value.column == column
    assert str(caught.value) == (f"column {column}: invalid regex: {what} is not supported (RE2 runs "
                                 "in linear time and has no backreferences or lookaround)")
    assert JS.check(query) == {"valid": False, "error": str(caught.value), "column": column}


def test_sets_and_escapes_are_not_taken_for_what_re2_refuses():
    for pattern in (r"[(?=]+", r"\(?=x", r"a+?", r"[a++]", r"\\+"):
        query = f'summary.matches(r"{pattern}")'
        kfl.compile(query)
        assert JS.check(query)["valid"] is True, pattern


def test_the_hubs_pod_regex_is_linear_and_refuses_lookaround():
    spec = TargetSpec.of("(a|aa)+$", [])
    assert spec.matches("default", "a" * 5000 + "!") is False
    with pytest.raises(SpecError, match=r"regex: 'web-\(\?!canary\)' is not a valid regular expression: "
                                        r"negative lookahead .* at position 4"):
        TargetSpec.of("web-(?!canary)", [])
