"""Regexes from users (KFL `matches`/r"...", the pod-name regex of targets) in linear time.

Python's `re` backtracks: `(a|aa)+$` takes exponential time on a long run of a's and holds the
GIL meanwhile, so one query could freeze a worker's dissection or the hub's event loop. RE2
(google-re2) answers in time linear in the text, and refuses what it cannot do that way:
backreferences, lookahead and lookbehind, possessive quantifiers. Those get a RegexError with
the position of the construct and why.
"""

from __future__ import annotations

from typing import Protocol

import re2

# RE2's own limit on a compiled program; a pattern over it is refused ("too complex").
MAX_MEM = 8 << 20

_GROUPS = (   # openers RE2 refuses, longest first
    ("(?<=", "lookbehind (?<=...)"), ("(?<!", "negative lookbehind (?<!...)"),
    ("(?P=", "a named backreference (?P=name)"), ("(?=", "lookahead (?=...)"),
    ("(?!", "negative lookahead (?!...)"), ("(?>", "an atomic group (?>...)"),
)
_WHY = "RE2 runs in linear time and has no backreferences or lookaround"


class Match(Protocol):
    def start(self) -> int: ...


class Pattern(Protocol):
    pattern: str

    def search(self, text: str) -> Match | None: ...
    def match(self, text: str) -> Match | None: ...
    def fullmatch(self, text: str) -> Match | None: ...


class RegexError(ValueError):
    """A pattern refused: `message` says why, `position` is the index in the pattern (0-based)."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False      # else every refused pattern is logged to stderr by RE2
    options.max_mem = MAX_MEM
    # Callers only ask whether and where a pattern matches. With capturing groups, google-re2's
    # search reports every group's span, which forces RE2's slowest engine: a pattern of 3000
    # nested groups took 370 ms per matching text, 11 us with the groups non-capturing.
    options.never_capture = True
    return options


def compile_linear(source: str) -> Pattern:
    """A compiled pattern with re's search/match/fullmatch; RegexError when RE2 refuses it."""
    refused = unsupported(source)
    if refused is not None:
        raise RegexError(*refused)
    try:
        return re2.compile(_translate(source), _options())
    except re2.error as error:
        raise _refusal(source, error) from None
    except (ValueError, TypeError) as error:
        raise RegexError(f"not a regular expression: {error}", 0) from None


def unsupported(source: str) -> tuple[str, int] | None:
    """(why, position) of the first construct RE2 refuses for running in linear time, scanning
    left to right outside character sets; None when there is none. hub/scripts/re2.js has the
    same scan (and RE2's parser), so scripts refuse the same queries at the same columns."""
    index = 0
    in_set = False
    previous = ""          # the last character outside a set, for possessive quantifiers
    while index < len(source):
        char = source[index]
        if char == "\\":
            following = source[index + 1:index + 2]
            if not in_set and following in "123456789" and following:
                return f"a backreference \\{following} is not supported ({_WHY})", index
            previous = "\\"
            index += 2
            continue
        if in_set:
            in_set = char != "]"
            index += 1
            continue
        if char == "[":
            in_set = True
            index += 1 + (source[index + 1:index + 2] == "]") + (source[index + 1:index + 3] == "^]")
            previous = "]"
            continue
        if char == "(":
            for opener, what in _GROUPS:
                if source.startswith(opener, index):
                    return f"{what} is not supported ({_WHY})", index
        if char == "+" and previous in ("*", "+", "?", "}"):
            return f"a possessive quantifier {previous}+ is not supported ({_WHY})", index - 1
        # a quantifier after a quantifier (a+?, a*?) is lazy, not possessive: reset
        previous = "" if previous in ("*", "+", "?", "}") and char == "?" else char
        index += 1
    return None


def _translate(source: str) -> str:
    """Python's spellings RE2 lacks, same length (positions stay): \\Z (end of text) is \\z."""
    if "\\Z" not in source:
        return source
    out = []
    index = 0
    while index < len(source):
        if source[index] == "\\" and index + 1 < len(source):
            pair = source[index:index + 2]
            out.append("\\z" if pair == "\\Z" else pair)
            index += 2
        else:
            out.append(source[index])
            index += 1
    return "".join(out)


def _escaped(source: str, at: int) -> bool:
    backslashes = 0
    while at - backslashes - 1 >= 0 and source[at - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _unclosed(source: str, opener: str, closer: str) -> int:
    """Where the innermost group (or set) left open starts; 0 when none is found."""
    open_at: list[int] = []
    in_set = False
    index = 0
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 2
            continue
        if opener == "(" and in_set:
            in_set = char != "]"
        elif char == opener:
            open_at.append(index)
            if opener == "[":
                break          # a set holds no other set: the first one left open is it
        elif opener == "(" and char == "[":
            in_set = True
        elif char == closer and open_at:
            open_at.pop()
        index += 1
    return open_at[-1] if open_at else 0


def _refusal(source: str, error: Exception) -> RegexError:
    text = error.args[0] if error.args else str(error)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    reason, _, fragment = str(text).partition(": ")
    position = source.find(fragment) if fragment else -1
    if reason == "missing )":
        return RegexError("missing ), unterminated subpattern", _unclosed(source, "(", ")"))
    if reason == "missing ]":
        return RegexError("missing ], unterminated character set", _unclosed(source, "[", "]"))
    if reason == "pattern too large - compile failed":
        return RegexError("too complex (over RE2's memory budget)", 0)
    detail = f"{reason}: {fragment}" if fragment else reason
    return RegexError(detail, max(position, 0))
