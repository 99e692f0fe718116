"""The KFL grammar (lark, LALR(1) with the contextual lexer); docs/KFL.md has it as EBNF.

Precedence, loosest first: or, and, not, comparison / in, + and -, postfix (`.name`, `[key]`,
`.helper(...)`, `function(...)`). `and`/`or` take a flat list of operands (no deep trees for long chains);
comparisons do not chain (`a < b < c` is an error).

Lark's LALR analysis of the grammar takes ~0.1 s of CPU, in every process that parses KFL (the
worker's API, the hub, the CLI). So the parser is made once and committed as data:
shark/kfl/grammar_tables.py, written by `python -m shark.kfl.make_tables` and loaded here when
its fingerprint (this grammar, these options, this lark version) is ours; otherwise the parser
is built from the grammar as before (correct, only slower). tests/unit/test_kfl_tables.py
fails when the committed tables are not what the grammar makes.
"""

from __future__ import annotations

import hashlib

import lark

GRAMMAR = r"""
?start: or_expr

?or_expr: and_expr
        | and_expr (_OR and_expr)+           -> or_
?and_expr: not_expr
         | not_expr (_AND not_expr)+         -> and_
?not_expr: (NOT | BANG) not_expr             -> not_
         | comparison
?comparison: sum
           | sum CMP sum                     -> compare
           | sum IN sum                      -> in_

?sum: operand
    | sum ADDOP operand                      -> arith

?operand: postfix
        | literal
        | list
        | LPAR or_expr RPAR                  -> group

?postfix: NAME                               -> field
        | NAME LPAR [args] RPAR              -> func
        | postfix DOT NAME                   -> attr
        | postfix DOT NAME LPAR [args] RPAR  -> call
        | postfix LSQB (STRING | NUMBER) RSQB -> index

args: operand (COMMA operand)*
list: LSQB [operand (COMMA operand)*] RSQB

?literal: STRING                             -> string
        | REGEX                              -> regex
        | NUMBER                             -> number
        | TRUE                               -> true
        | FALSE                              -> false
        | NULL                               -> null

_OR: "or" | "||"
_AND: "and" | "&&"
NOT: "not"
BANG: "!"
IN: "in"
TRUE: "true"
FALSE: "false"
NULL: "null"
CMP: "==" | "!=" | "<=" | ">=" | "<" | ">"
ADDOP: "+" | "-"
LPAR: "("
RPAR: ")"
LSQB: "["
RSQB: "]"
DOT: "."
COMMA: ","
NAME: /[A-Za-z_][A-Za-z0-9_]*/
REGEX.3: /r"(?:[^"\\]|\\.)*"/ | /r'(?:[^'\\]|\\.)*'/
STRING.2: /"(?:[^"\\]|\\.)*"/ | /'(?:[^'\\]|\\.)*'/
NUMBER.2: /-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?/

%import common.WS
%ignore WS
"""

OPTIONS: dict[str, object] = {"parser": "lalr", "lexer": "contextual", "maybe_placeholders": True,
                               "keep_all_tokens": False}


def build() -> lark.Lark:
    """The parser made from the grammar (lark's LALR analysis)."""
    return lark.Lark(GRAMMAR, **OPTIONS)  # type: ignore[arg-type]


def fingerprint() -> str:
    """What the committed tables must have been made from to stand for build()."""
    made_from = repr((lark.__version__, GRAMMAR, sorted(OPTIONS.items())))
    return hashlib.sha256(made_from.encode()).hexdigest()


def load() -> lark.Lark:
    """The parser from the committed tables when they were made from this grammar with this
    lark, else build()."""
    try:
        import shark.kfl.grammar_tables as tables   # data only: ~1 ms against build()'s ~100
    except ModuleNotFoundError as error:   # not made yet (make_tables imports this module)
        if error.name != f"{__package__}.grammar_tables":
            raise
        return build()
    if tables.FINGERPRINT != fingerprint():
        return build()
    # What lark's standalone parsers load themselves with (lark.tools.standalone), with the
    # very lark version that wrote the tables (the fingerprint says so).
    return lark.Lark._load_from_dict(tables.DATA, tables.MEMO)


PARSER = load()
