"""Users' regexes run in linear time (RE2, shark/regex.py): a pattern that makes Python's re
backtrack exponentially answers at once, and what RE2 cannot run that way is refused with its
column, in the workers' KFL, in the scripts' port of it, and in the hub's pod regex."""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.kube.targeter import SpecError, TargetSpec
from shark import kfl
from shark.kfl.errors import KflError
from test_scripts_kfl import JS
from test_scripts_runtime import entry, load

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


# -- the scripts' port (hub/scripts/re2.js) against RE2 itself ----------------------------------
# Patterns around each of RE2's rules: accepted forms, each error it gives (the fragment it
# names becomes the column), the flags, classes, escapes and assertions.
PATTERNS = [
    "a)", "(a", "[a", "a**", "*a", "a{1001}", "(a{100}){100}", "(a{10}){100}", "(a{10}){101}", "a{2,1}",
    r"\q", "a\\", "[z-a]", "(?<n>a)", "(?P<1>a)", "(?P<a-b>x)", "(?P<>x)", "(?P<n", "(?<n", "(?P>a)",
    "(?x)a", "(?a)a", "(?#c)", "(?", "(?)", "(?-)", "(?i-)", "(?--i)", "(?i-i)", "(?i", "(?iq)a",
    r"\pX", r"\p{Foo}", r"\p{Greek", r"\p", r"\p{IsGreek}", r"\p{Grek}", "[[:foo:]]", r"[\pX]",
    "[a-[:alpha:]]", r"[a-\d]", r"[\b]", r"[\Q]", r"\x4", r"\x{", r"\x{}", r"\x{41", r"\xZZ", r"\x{110000}",
    r"\e", r"\cA", r"\k<n>", r"\X", r"\N{DIGIT ONE}", r"\u0041", "a{2}{3}", "a{2}*", "a*{2}", "a+*", "a*?+",
    "x**?", "a{1000}{1000}", "(*)", "a|*", ")", "[^]", r"\Qab", "a{,3}", "x{3", "x{1}{1", "a{001}", "a{0,0}b",
    r"\0", r"\01", r"\08", r"\x41", r"\x{10FFFF}", r"\x{e9}", r"[\x41-\x5A]+", "[a-]", "[-a]", "[]a]", "[--/]",
    r"[\d-z]", r"\b+", "^*", "(?:)", "()", "|", "a|b|", ".{2}", "(?s:.)", "(?s).+", ".+", "(?-i)a", "(?i-s:a)",
    "(?U)a+", "(?U)a+?", "(?m)^a$", "(?m)^b$", "(?m)a$", "(?m)^", "$", "^$", "^a", "a$", r"\Aa", r"a\z", r"a\Z",
    r"\bfoo\b", r"\Bo\B", r"\ba", r"b\b", r"\Q*\E", r"\Qa\E*", r"\d\s\w\D\S\W", r"\W+", r"[^\D]", r"[\W\d]",
    r"\.\-\_", r"\v\f\a\t\n\r", "[[:alpha:]]", "[[:^alpha:]]+", "[[:word:]]", "[[=a=]]", r"\pL", r"\PL", r"\pN",
    r"\pZ", r"\p{Lu}", r"\P{Lu}", r"\p{Any}", r"\P{^L}", r"\p{^Greek}", r"\p{Greek}+", r"\p{Han}", r"[\p{Greek}]",
    r"\p{Cs}", r"\p{C}", r"\p{Zs}", "(?i)a", "(?i)k", "(?i)K", "(?i)[a-z]+", "(?i)[^a]", "(?i)É", "(?i)αΒ",
    "[^a]", r"[^\n]", "é+", "[é-ü]", "😀", "[😀]", ".😀", "(a|aa)+$", "(x+x+)+y", "(a*)*b", "(a|)+c",
    "(ab){2,3}c", "a{2}", "a{0,2}b", "(a|bc){1,3}$", "x{2,}y", "(a?){3}", "(?:a{1,2}){2}b", "(a{0})+b",
    "(" * 600 + "a" + ")" * 600, "(x" * 300 + "y" + ")" * 300, r"[\x00-\x{10FFFF}]", "(?i)(?m)^A", "a(?i)b", "(?i:a)b", "((a))|b",
    ".{1000}" * 20, ".{1000}" * 60, r"\pL{1000}", r"\pL{300}", "a{1000}" * 100,
    # RE2 matches bytes: \B holds between the UTF-8 bytes of one non-ASCII character
    r"\B", r"\B\B", r"a|\B", r"\Bx", r"(?m)^\B", r"\B$", r"(?:\B)+", r"\b",
]
TEXTS = ["", "a", "aa", "ab", "abc", "A", "Ab", "a\nb", "\n", "x y", "foo_bar", "é", "É", "αβγ", "中文", "😀",
         "a1b2", "{1}", "a{2", "a{001}", " ", "-", "]", "[", "K", "k", "\u212a", "aaaa!", "xxxxy", "/api/v1/users",
         "ababc", "Ba", "bA", "1é1-1", "aé"]
FORMS = ('summary.matches(r"{}")', 'summary == r"{}"', 'summary.startsWith(r"{}")', 'summary.endsWith(r"{}")')


def _same_in_scripts(pattern: str, texts: list[str]) -> None:
    for form in FORMS:
        query = form.format(pattern)
        error = kfl.validate(query)
        answer = JS.check(query)
        if error is not None:
            assert answer == {"valid": False, "error": str(error), "column": error.column}, query
            continue
        assert answer["valid"] is True, (query, answer)
        compiled = kfl.compile(query)
        for text in texts:
            assert JS.match(query, {"summary": text}) is compiled({"summary": text}), (query, text)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_scripts_refuse_and_match_as_re2_does(pattern: str) -> None:
    _same_in_scripts(pattern, TEXTS)


# random patterns from RE2's pieces, on texts from a small alphabet (ASCII, a newline and a few
# letters whose case JavaScript folds as Unicode does)
PIECES = st.sampled_from(["a", "b", "A", "é", "α", ".", "\\n", "x", "-", "(", ")", "(?:", "(?i)", "(?s)", "(?m)",
                          "(?i:", "|", "*", "+", "?", "*?", "{2}", "{1,3}", "{0,}", "{", "}", "[", "]", "[^", "a-z",
                          "^", "$", "\\b", "\\B", "\\A", "\\z", "\\d", "\\w", "\\s", "\\W", "\\pL", "\\p{Greek}",
                          "[:alpha:]", "\\Q", "\\E", "\\x41", "\\", "(?P<n>", "1", ","])
PATTERN = st.lists(PIECES, max_size=8).map("".join)
SAMPLE = st.text(st.sampled_from("abAB é\nα-x1_"), max_size=8)


@settings(max_examples=int(os.environ.get("SHARK_FUZZ_EXAMPLES", "300")), deadline=None)
@given(PATTERN, st.lists(SAMPLE, min_size=1, max_size=4))
def test_fuzz_random_patterns_agree(pattern: str, texts: list[str]) -> None:
    _same_in_scripts(pattern, texts)


def test_a_script_with_the_catastrophic_pattern_answers_within_its_time_limit():
    # JavaScript's RegExp took 118 ms at 28 characters and doubled every ~1.5 characters: on
    # this path the call would run into the 0.3 s limit and fail as a timeout
    runtime = load("function onItemCaptured(e) { console.log(kfl.match('request.path.matches(\"(a|aa)+$\")', e),"
                   " kfl.match('request.path == r\"(x+x+)+y\"', e)); }")
    for path, said in (("a" * 5000 + "!", "false false"), ("a" * 5000, "true false")):
        outcome = runtime.call("onItemCaptured", json.dumps([entry(path=path)]))
        assert outcome.failure is None, outcome.failure
        assert outcome.actions == [{"t": "log", "level": "info", "text": said}]


def test_a_pattern_with_more_states_than_the_cache_holds_still_answers_right():
    # "a" 13th from the end: 8192 states, eight times what re2.js caches, so its cache starts over
    pattern = "(a|b)*a(a|b){12}"
    texts = ["".join("ab"[(i * 7919 + j * 104729) % 3 % 2] for i in range(3000 + j)) for j in range(4)]
    _same_in_scripts(pattern, texts + [text + "a" + "b" * 12 for text in texts])


def test_a_pattern_of_thousands_of_groups_answers_at_once_on_every_entry():
    # google-re2's search reports every group's span: with 3000 groups RE2 has to run its
    # slowest engine and took 370 ms per matching entry (a live /stream subscriber ran it in
    # dissection for each entry). KFL and the pod regex only ask whether it matches: groups
    # are compiled as non-capturing (about 11 us).
    nested = "(" * 3000 + "a" + ")" * 3000
    query = kfl.compile(f'request.path.matches("{nested}")')
    spec = TargetSpec.of(nested, [])
    started = time.perf_counter()
    for _ in range(20):
        assert query({"request": {"path": "/aaaa"}}) is True
        assert spec.matches("default", "web-a") is True
    assert time.perf_counter() - started < 1.0
