"""Text -> lark parse tree, with errors that say where and what was expected.

Every failure becomes a KflError; lark's own exceptions never leave this module.
"""

from __future__ import annotations

import lark
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from shark.kfl.errors import KflError
from shark.kfl.grammar import PARSER

MAX_QUERY_LENGTH = 10_000
MAX_DEPTH = 64   # nesting of parentheses, `not`, paths and helpers: far beyond real queries

# Words the grammar reserves; the contextual lexer reads them as names where a keyword cannot
# stand (after a '.'), so `request.in` is a field, and the compiler refuses them as roots.
KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})

_VALUE_TERMINALS = {"NAME", "STRING", "REGEX", "NUMBER", "TRUE", "FALSE", "NULL", "LSQB", "LPAR"}
_OPERATOR_WORDS = {"_AND": "'and'", "_OR": "'or'"}
_PUNCTUATION = {"RPAR": "')'", "RSQB": "']'", "COMMA": "','", "LPAR": "'('", "DOT": "'.'",
                "LSQB": "'['"}
_HINTS = {"=": " (compare with '==')", "&": " (write 'and' or '&&')",
          "|": " (write 'or' or '||')", "?": " (KFL has no ternary '? :'; write (c and a) or (not c and b))"}


def parse(text: str) -> lark.Tree | None:
    """The parse tree of a query, or None for an empty (all-whitespace) query."""
    if not isinstance(text, str):
        raise KflError("the query must be text", 1)
    if len(text) > MAX_QUERY_LENGTH:
        raise KflError(f"the query is longer than {MAX_QUERY_LENGTH} characters", MAX_QUERY_LENGTH + 1)
    if not text.strip():
        return None
    tokens: list[lark.Token] = []
    try:
        interactive = PARSER.parse_interactive(text)
        for token in interactive.iter_parse():
            tokens.append(token)
        tree = interactive.feed_eof(tokens[-1] if tokens else None)
    except UnexpectedToken as error:
        fed = [t for t in tokens if t is not error.token]
        raise _token_error(text, error, tokens, _accepts(fed, error.expected)) from None
    except UnexpectedCharacters as error:
        raise _character_error(text, error, tokens, _accepts(tokens, error.allowed)) from None
    except UnexpectedInput as error:
        raise KflError(f"unexpected input: {error.__class__.__name__}", _column_of(error, text)) from None
    except LarkError as error:  # no other lark error is known to come from parsing
        raise KflError(f"cannot parse the query ({error.__class__.__name__})", 1) from None
    _check_depth(tree)
    return tree


def _accepts(fed: list[lark.Token], fallback: object) -> set[str]:
    """What the parser could take after the tokens it accepted. Replayed on a fresh parser:
    the failed one has already reduced for the bad token, and lark's `expected` omits what
    default reductions would allow."""
    try:
        interactive = PARSER.parse_interactive("")
        for token in fed:
            if token.type != "$END":
                interactive.feed_token(token)
        return set(interactive.accepts())
    except Exception:  # noqa: BLE001 - only a better message is lost
        return set(fallback or ())  # type: ignore[call-overload]


def _column_of(error: UnexpectedInput, text: str) -> int:
    position = getattr(error, "pos_in_stream", None)
    return (position + 1) if isinstance(position, int) else len(text) + 1


def _token_error(text: str, error: UnexpectedToken, tokens: list[lark.Token],
                 expected: set[str]) -> KflError:
    token = error.token
    # Last consumed token(s); the failing token itself is the last one iter_parse yielded.
    before = [t for t in tokens if t is not token and t.type != "$END"]
    if token.type == "$END":
        before = tokens[:]
    # A keyword where a value stands ("x == not", "a and or b") was read as a field name;
    # blame the keyword, not the token after it.
    if len(before) >= 1 and before[-1].type == "NAME" and before[-1].value in KEYWORDS and (
            len(before) < 2 or before[-2].type != "DOT"):
        keyword = before[-1]
        previous = before[-2] if len(before) >= 2 else None
        after = f" after '{previous.value}'" if previous is not None else ""
        what = "an expression" if previous is None or previous.type in ("_AND", "_OR", "NOT", "BANG", "LPAR") else "a value"
        return KflError(f"expected {what}{after}, got the keyword '{keyword.value}'", keyword.start_pos + 1)
    if token.type == "$END":
        column = (before[-1].end_pos + 1) if before else len(text) + 1
        got = "end of query"
    else:
        column = token.start_pos + 1
        got = _describe_token(token)
    previous = before[-1] if before else None
    after = f" after '{previous.value}'" if previous is not None else ""
    return KflError(f"expected {describe_expected(expected)}{after}, got {got}", column)


def _character_error(text: str, error: UnexpectedCharacters, tokens: list[lark.Token],
                     expected_terminals: set[str]) -> KflError:
    position = error.pos_in_stream
    char = text[position] if 0 <= position < len(text) else ""
    column = position + 1
    if char in "\"'":
        previous = tokens[-1] if tokens else None
        if previous is not None and previous.value == "r" and previous.end_pos == position:
            column -= 1   # r"... read as the name r, then an unterminated string
        return KflError("unterminated string: no closing quote", column)
    previous = tokens[-1] if tokens else None
    after = f" after '{previous.value}'" if previous is not None else ""
    expected = describe_expected(expected_terminals)
    return KflError(f"expected {expected}{after}, got '{char}'{_HINTS.get(char, '')}", column)


def _describe_token(token: lark.Token) -> str:
    value = str(token.value)
    if len(value) > 40:
        value = value[:37] + "..."
    return f"'{value}'"


def describe_expected(expected: set[str]) -> str:
    """Lark terminal names -> words: "a value", "'and', 'or', a comparison or end of query"."""
    expected = {name for name in expected if name != "WS"}
    parts: list[str] = []
    values = expected & _VALUE_TERMINALS
    if {"NAME", "STRING", "NUMBER"} <= values:
        parts.append("an expression" if expected & {"NOT", "BANG"} else "a value")
        rest = expected - _VALUE_TERMINALS - {"NOT", "BANG"}
    elif expected == {"NAME"}:
        return "a name"
    elif {"STRING", "NUMBER"} <= expected and "NAME" not in expected:
        parts.append("a string or a number")
        rest = expected - {"STRING", "NUMBER"}
    else:
        rest = set(expected)
    if {"CMP", "IN"} & rest:
        parts.append("a comparison (== != < <= > >= in)")
    for name in ("_AND", "_OR"):
        if name in rest:
            parts.append(_OPERATOR_WORDS[name])
    operators_given = bool({"CMP", "IN", "_AND", "_OR"} & rest)
    for name in ("COMMA", "RPAR", "RSQB", "LPAR", "DOT", "LSQB"):
        if name in rest and not (operators_given and name in ("DOT", "LSQB", "LPAR")):
            parts.append(_PUNCTUATION[name])
    if "$END" in rest:
        parts.append("end of query")
    if not parts:
        return "something else"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _check_depth(tree: lark.Tree) -> None:
    """Refuse trees deeper than MAX_DEPTH, iteratively, before anything recurses over them."""
    stack: list[tuple[lark.Tree, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            column = 1
            for child in node.children:
                if isinstance(child, lark.Token):
                    column = child.start_pos + 1
                    break
            raise KflError(f"the query nests deeper than {MAX_DEPTH} levels", column)
        for child in node.children:
            if isinstance(child, lark.Tree):
                stack.append((child, depth + 1))
