"""The KFL grammar (lark, LALR(1) with the contextual lexer); docs/KFL.md has it as EBNF.

Precedence, loosest first: or, and, not, comparison / in, + and -, postfix (`.name`, `[key]`,
`.helper(...)`, `function(...)`). `and`/`or` take a flat list of operands (no deep trees for long chains);
comparisons do not chain (`a < b < c` is an error).
"""

from __future__ import annotations

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

PARSER = lark.Lark(GRAMMAR, parser="lalr", lexer="contextual", maybe_placeholders=True,
                   keep_all_tokens=False)
