"""Parse tree -> a predicate over an entry dict (the JSON-decoded Entry), built once from
closures so evaluating an entry walks no tree.

Semantics (docs/KFL.md): a missing field is null; `== null` / `!= null` test presence; any
other comparison with a null operand is false, and so is any comparison between different
types (string vs number, bool vs number, ...), `!=` included. Nothing raises at evaluation:
the closures check types, and Query.__call__ turns anything unforeseen into False.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timezone
from collections.abc import Callable
from dataclasses import dataclass
import typing
from typing import Any

import lark

from shark.kfl.aliases import ALIASES, FUNCTIONS, PROTOCOL_ALIASES, absent, map_get
from shark.kfl.errors import KflError
from shark.kfl.parser import KEYWORDS
from shark.regex import RegexError, compile_linear
from shark.model import Endpoint, Entry, Protocol

Getter = Callable[[dict[str, Any]], Any]
Test = Callable[[dict[str, Any]], bool]

PROTOCOLS: tuple[str, ...] = typing.get_args(Protocol)
# The Entry's top-level fields, the only roots a path may start from.
FIELDS: tuple[str, ...] = Entry.__struct_fields__
HELPERS = {  # name: number of arguments
    "startsWith": 1, "endsWith": 1, "contains": 1, "matches": 1, "lower": 0, "upper": 0,
    "len": 0,
}

_NUM = frozenset({int, float})
_MISSING = object()
KNOWN_ALIASES: tuple[str, ...] = tuple(ALIASES) + tuple(PROTOCOL_ALIASES)
_KUBE_PREFIXES = frozenset(name.rsplit(".", 1)[0] for name in ALIASES if name.count(".") == 2)
# What an endpoint (src, dst) has: a name below it that is none of these nor a KFL2 alias
# (Kubeshark's src.dns, say) is an unknown field, not a null that silently matches nothing.
ENDPOINT_FIELDS: tuple[str, ...] = Endpoint.__struct_fields__


def canonical_protocol(value: Any) -> Any:
    """KFL2 spells protocols in capitals (`protocol == "HTTP"`), ours are lower case: a string
    naming one of ours in any case, or by its KFL2 name ("WS", "PostgreSQL"), compares as ours."""
    if type(value) is not str:
        return value
    name = PROTOCOL_ALIASES.get(value.lower(), value.lower())
    return name if name in PROTOCOLS else value


class Regex:
    """A regex literal r"...": == is a full match, matches()/contains() search anywhere,
    startsWith() matches at the start, endsWith() at the end."""

    __slots__ = ("source", "search", "fullmatch", "match", "_end")

    def __init__(self, source: str) -> None:
        # RE2 (shark/regex.py): linear time whatever the pattern and the text; a query runs
        # on every entry, in the dissection thread for live subscribers.
        flags = re.match(r"\(\?[imsU]+\)", source)
        head = flags.group(0) if flags else ""
        compiled = compile_linear(source)
        end = compile_linear(f"{head}(?:{source[len(head):]})\\z")
        self.source = source
        self.search = compiled.search
        self.fullmatch = compiled.fullmatch
        self.match = compiled.match
        self._end = end.search

    def at_end(self, text: str) -> bool:
        return self._end(text) is not None

    def __repr__(self) -> str:
        return f"r{self.source!r}"


# -- run-time operations: total functions over JSON values (and Regex) ------------------------
def _kind(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return "str"
    if kind in _NUM:
        return "num"
    if kind is bool:
        return "bool"
    if kind is list:
        return "list"
    if kind is dict:
        return "dict"
    if kind is Regex:
        return "regex"
    return "other" if value is not None else "null"


def op_eq(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    ka, kb = _kind(a), _kind(b)
    if ka == "regex":
        return kb == "str" and a.fullmatch(b) is not None
    if kb == "regex":
        return ka == "str" and b.fullmatch(a) is not None
    return ka == kb and ka != "other" and a == b


def op_ne(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    ka, kb = _kind(a), _kind(b)
    if ka == "regex":
        return kb == "str" and a.fullmatch(b) is None
    if kb == "regex":
        return ka == "str" and b.fullmatch(a) is None
    return ka == kb and ka != "other" and a != b


def _ordered(a: Any, b: Any) -> bool:
    ka = _kind(a)
    return ka in ("num", "str") and ka == _kind(b)


def op_lt(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a < b


def op_le(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a <= b


def op_gt(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a > b


def op_ge(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a >= b


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": op_eq, "!=": op_ne, "<": op_lt, "<=": op_le, ">": op_gt, ">=": op_ge}
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def op_in(item: Any, container: Any) -> bool:
    """`x in [..]` any element equals x; `s in "text"` substring (a regex searches);
    `"key" in {...}` the object has that key."""
    kind = type(container)
    if kind is list:
        return any(op_eq(item, element) for element in container)
    if kind is str:
        if type(item) is str:
            return item in container
        return type(item) is Regex and item.search(container) is not None
    if kind is dict:
        return type(item) is str and item in container
    return False


def h_starts(value: Any, arg: Any) -> bool:
    if type(value) is not str:
        return False
    if type(arg) is str:
        return value.startswith(arg)
    return type(arg) is Regex and arg.match(value) is not None


def h_ends(value: Any, arg: Any) -> bool:
    if type(value) is not str:
        return False
    if type(arg) is str:
        return value.endswith(arg)
    return type(arg) is Regex and arg.at_end(value)


def h_contains(value: Any, arg: Any) -> bool:
    kind = type(value)
    if kind is str:
        if type(arg) is str:
            return arg in value
        return type(arg) is Regex and arg.search(value) is not None
    if kind is list:
        return any(op_eq(element, arg) for element in value)
    if kind is dict:
        return type(arg) is str and arg in value
    return False


def h_matches(value: Any, arg: Any) -> bool:
    return type(value) is str and type(arg) is Regex and arg.search(value) is not None


def h_lower(value: Any) -> Any:
    return value.lower() if type(value) is str else None


def h_upper(value: Any) -> Any:
    return value.upper() if type(value) is str else None


def h_len(value: Any) -> Any:
    return len(value) if type(value) in (str, list, dict) else None


_HELPER_FUNCS: dict[str, Callable[..., Any]] = {
    "startsWith": h_starts, "endsWith": h_ends, "contains": h_contains, "matches": h_matches,
    "lower": h_lower, "upper": h_upper, "len": h_len}


# -- compile-time values -----------------------------------------------------------------------
@dataclass
class Value:
    """An operand: a constant (`const` set) or a getter over the entry."""

    get: Getter
    column: int
    const: Any = _MISSING
    null_literal: bool = False
    path: tuple[str | int, ...] | None = None   # a plain field path, for protocol analysis

    @property
    def is_const(self) -> bool:
        return self.const is not _MISSING


def _const(value: Any, column: int, null_literal: bool = False) -> Value:
    return Value(lambda entry: value, column, value, null_literal)


@dataclass
class Compiled:
    test: Test
    # Protocols an entry must have to match, or None when any protocol may match (lets the
    # worker skip decoding rows of other protocols).
    protocols: frozenset[str] | None = None


def compile_tree(tree: lark.Tree) -> Compiled:
    return _Compiler().boolean(tree)


def _col(token: lark.Token) -> int:
    return (token.start_pos or 0) + 1


def _first_column(node: lark.Tree | lark.Token) -> int:
    while isinstance(node, lark.Tree):
        if not node.children:
            return 1
        node = next((c for c in node.children if c is not None), node.children[0])
    return _col(node) if isinstance(node, lark.Token) else 1


def _truthy(get: Getter) -> Test:
    return lambda entry: bool(get(entry))


class _Compiler:
    # -- boolean context --------------------------------------------------------------------
    def boolean(self, node: lark.Tree) -> Compiled:
        kind = node.data
        if kind == "or_":
            parts = [self.boolean(child) for child in node.children]
            return Compiled(_any_of([p.test for p in parts]), _union(p.protocols for p in parts))
        if kind == "and_":
            parts = [self.boolean(child) for child in node.children]
            return Compiled(_all_of([p.test for p in parts]), _intersection(p.protocols for p in parts))
        if kind == "not_":
            inner = self.boolean(node.children[1]).test
            return Compiled(lambda entry: not inner(entry))
        if kind == "group":
            return self.boolean(node.children[1])
        if kind == "compare":
            return self.compare(node)
        if kind == "in_":
            return self.in_(node)
        if kind == "field":
            return self.bare_name(node.children[0])
        value = self.value(node)
        if value.is_const:
            if isinstance(value.const, Regex):
                raise KflError("a regex literal alone tests nothing; compare a field with it: "
                               'field == r"..." or field.matches(r"...")', value.column)
            constant = bool(value.const)
            return Compiled(lambda entry: constant)
        return Compiled(_truthy(value.get))

    def bare_name(self, token: lark.Token) -> Compiled:
        name = str(token.value)
        if name == "tls":  # both the TLS protocol's entries and cleartext from eBPF TLS probes
            return Compiled(lambda entry: entry.get("protocol") == "tls" or entry.get("tls") is True)
        name = PROTOCOL_ALIASES.get(name, name)
        if name in PROTOCOLS:
            return Compiled(lambda entry: entry.get("protocol") == name, frozenset({name}))
        if name in ALIASES and name not in FIELDS:
            get = ALIASES[name][1]
            return Compiled(lambda entry: bool(get(entry)))
        self.check_root(token)
        return Compiled(lambda entry: bool(entry.get(name)))

    def compare(self, node: lark.Tree) -> Compiled:
        left_node, op_token, right_node = node.children
        op = str(op_token.value)
        left, right = self.value(left_node), self.value(right_node)
        if left.path == ("protocol",) and right.is_const:
            right = _const(canonical_protocol(right.const), right.column)
        if right.path == ("protocol",) and left.is_const:
            left = _const(canonical_protocol(left.const), left.column)
        for side in (left, right):
            if isinstance(side.const, Regex) and op not in ("==", "!="):
                raise KflError(f"a regex can only be compared with == or !=, not {op}", side.column)
        protocols = _protocols_of(left, op, right)
        if left.is_const and not right.is_const:
            left, right, op = right, left, _FLIPPED[op]
        return Compiled(_comparison(left, op, right), protocols)

    def in_(self, node: lark.Tree) -> Compiled:
        left_node, in_token, right_node = node.children
        item, container = self.value(left_node), self.value(right_node)
        if container.is_const and not isinstance(container.const, (list, str)):
            raise KflError("expected a list, a string or a field after 'in'", container.column)
        if item.path == ("protocol",) and container.is_const and isinstance(container.const, list):
            container = _const([canonical_protocol(v) for v in container.const], container.column)
        protocols = None
        if container.is_const and isinstance(container.const, list) and item.path == ("protocol",):
            protocols = frozenset(v for v in container.const if isinstance(v, str))
        if container.is_const and isinstance(container.const, list) and all(
                type(v) is str for v in container.const):
            strings = frozenset(container.const)
            get = item.get
            return Compiled(lambda entry: type(v := get(entry)) is str and v in strings, protocols)
        get_item, get_container = item.get, container.get
        return Compiled(lambda entry: op_in(get_item(entry), get_container(entry)), protocols)

    # -- values ------------------------------------------------------------------------------
    def value(self, node: lark.Tree) -> Value:
        kind = node.data
        if kind == "string":
            token = node.children[0]
            return _const(unescape(str(token.value), _col(token)), _col(token))
        if kind == "regex":
            token = node.children[0]
            return _const(_regex(token), _col(token))
        if kind == "number":
            token = node.children[0]
            return _const(_number(token), _col(token))
        if kind in ("true", "false"):
            return _const(kind == "true", _col(node.children[0]))
        if kind == "null":
            return _const(None, _col(node.children[0]), null_literal=True)
        if kind == "list":
            return self.list_(node)
        if kind == "group":
            test = self.boolean(node.children[1]).test
            return Value(test, _col(node.children[0]))
        if kind in ("field", "attr", "index"):
            return self.path(node)
        if kind == "call":
            return self.call(node)
        if kind == "func":
            return self.function(node)
        if kind == "arith":
            return self.arith(node)
        # A boolean sub-expression used as an operand, e.g. (a == b) == true.
        test = self.boolean(node).test
        return Value(test, _first_column(node))

    def list_(self, node: lark.Tree) -> Value:
        items = [self.value(child) for child in node.children
                 if isinstance(child, lark.Tree)]
        column = _col(node.children[0])
        if all(item.is_const for item in items):
            return _const([item.const for item in items], column)
        getters = [item.get for item in items]
        return Value(lambda entry: [get(entry) for get in getters], column)

    def path(self, node: lark.Tree) -> Value:
        steps: list[str | int] = []
        current = node
        while current.data in ("attr", "index"):
            if current.data == "attr":
                steps.append(str(current.children[2].value))
            else:
                key = current.children[2]
                steps.append(_index_key(key))
            current = current.children[0]
        if current.data != "field":  # a helper's result, indexed further: x.lower().foo
            base = self.value(current)
            steps.reverse()
            return Value(_walk(base.get, tuple(steps)), base.column)
        root = current.children[0]
        if not steps and PROTOCOL_ALIASES.get(root.value, root.value) in PROTOCOLS and root.value not in FIELDS:
            return Value(self.bare_name(root).test, _col(root))   # `http == true`
        alias = self.alias(root, steps)
        if alias is not None:
            return Value(alias, _col(root))
        self.check_root(root)
        steps.append(str(root.value))
        steps.reverse()
        path = tuple(steps)
        return Value(_getter(path), _col(root), path=path)

    def check_root(self, token: lark.Token) -> None:
        name = str(token.value)
        if name in KEYWORDS:
            raise KflError(f"expected a value, got the keyword '{name}'", _col(token))
        if name in FIELDS:
            return
        if name in PROTOCOLS:
            raise KflError(f"'{name}' is a protocol name: it stands alone ({name} and ...); "
                           "its fields are under request. and response.", _col(token))
        reason = absent(name)
        if reason is not None:
            raise KflError(f"unknown field '{name}': a Kubeshark (KFL2) name with no counterpart here; {reason} "
                           "(docs/KFL.md)", _col(token))
        hint = _did_you_mean(name, FIELDS + PROTOCOLS + KNOWN_ALIASES)
        raise KflError(f"unknown field '{name}'{hint}; expected a protocol name, one of "
                       f"{', '.join(FIELDS)} or a Kubeshark (KFL2) name (docs/KFL.md)", _col(token))

    def alias(self, token: lark.Token, steps: list[str | int]) -> Getter | None:
        """A KFL2 name (docs/KFL.md, Kubeshark's names): the longest dotted prefix of the path
        that is an alias, walked further by the steps after it. `steps` is reversed (last
        first), as path() collects them. Our own fields win over a one-word alias."""
        root = str(token.value)
        names = [root]
        for step in reversed(steps):
            if type(step) is not str:
                break
            names.append(f"{names[-1]}.{step}")
        for used in range(len(names), 0, -1):
            name = names[used - 1]
            if name in ALIASES and (used > 1 or root not in FIELDS):
                rest = tuple(reversed(steps))[used - 1:]
                get = ALIASES[name][1]
                return _walk(get, rest) if rest else get
        if len(names) > 1 and names[1] in _KUBE_PREFIXES:
            # our endpoints have no pod/service objects: only the KFL2 names below them exist
            shown = names[2] if len(names) > 2 else names[1]
            hint = _did_you_mean(shown, KNOWN_ALIASES)
            raise KflError(f"unknown field '{shown}'{hint}; under {names[1]} only "
                           f"{', '.join(a for a in ALIASES if a.startswith(names[1] + '.'))}", _col(token))
        if root in ("src", "dst") and len(names) > 1 and names[1].split(".", 1)[1] not in ENDPOINT_FIELDS:
            known = tuple(f"{root}.{name}" for name in ENDPOINT_FIELDS) + tuple(
                a for a in ALIASES if a.startswith(root + "."))
            raise KflError(f"unknown field '{names[1]}'{_did_you_mean(names[1], known)}; under {root} only "
                           f"{', '.join(known)}", _col(token))
        return None

    def function(self, node: lark.Tree) -> Value:
        """KFL2's (CEL's) functions called by name: now(), duration("5m"), timestamp("..."),
        size(x), map_get(map, key, default). Times are epoch seconds, durations seconds."""
        name_token, lpar, args_node, _rpar = node.children
        name = str(name_token.value)
        if name not in FUNCTIONS:
            hint = _did_you_mean(name, tuple(FUNCTIONS))
            raise KflError(f"unknown function '{name}'{hint}; expected one of {', '.join(FUNCTIONS)} "
                           "(helpers are called on a value: x.startsWith(...))", _col(name_token))
        args = [self.value(child) for child in (args_node.children if args_node else [])
                if isinstance(child, lark.Tree)]
        column = _col(name_token)
        if len(args) != FUNCTIONS[name]:
            raise KflError(f"{name}() takes {FUNCTIONS[name]} argument{'s' if FUNCTIONS[name] != 1 else ''}, "
                           f"got {len(args)}", _col(lpar))
        if name == "now":
            return _const(time.time(), column)   # once, when the query is compiled (as KFL2)
        if name in ("duration", "timestamp"):
            arg = args[0]
            if not arg.is_const or type(arg.const) is not str:
                raise KflError(f"{name}() takes a string literal", arg.column)
            return _const(_duration(arg) if name == "duration" else _timestamp(arg), column)
        if name == "size":
            get = args[0].get
            return Value(lambda entry: h_len(get(entry)), column)
        container, key, default = (arg.get for arg in args)
        return Value(lambda entry: map_get(container(entry), key(entry), default(entry)), column)

    def arith(self, node: lark.Tree) -> Value:
        """`a + b`, `a - b` on numbers (times and durations are seconds); null otherwise."""
        left_node, op_token, right_node = node.children
        left, right = self.value(left_node), self.value(right_node)
        sign = 1 if op_token.value == "+" else -1
        for side in (left, right):
            if side.is_const and type(side.const) not in _NUM:
                raise KflError(f"'{op_token.value}' takes numbers (times and durations are seconds)", side.column)

        def compute(a: Any, b: Any) -> Any:
            return a + sign * b if type(a) in _NUM and type(b) in _NUM else None
        if left.is_const and right.is_const:
            return _const(compute(left.const, right.const), left.column)
        get_left, get_right = left.get, right.get
        return Value(lambda entry: compute(get_left(entry), get_right(entry)), left.column)

    def call(self, node: lark.Tree) -> Value:
        receiver_node, _dot, name_token, lpar, args_node, _rpar = node.children
        name = str(name_token.value)
        if name not in HELPERS:
            hint = _did_you_mean(name, tuple(HELPERS))
            raise KflError(f"unknown helper '{name}'{hint}; expected one of "
                           f"{', '.join(HELPERS)}", _col(name_token))
        receiver = self.value(receiver_node)
        args = [self.value(child) for child in (args_node.children if args_node else [])
                if isinstance(child, lark.Tree)]
        wanted = HELPERS[name]
        if len(args) != wanted:
            count = "no arguments" if wanted == 0 else "one argument"
            raise KflError(f"{name}() takes {count}, got {len(args)}", _col(lpar))
        function = _HELPER_FUNCS[name]
        get = receiver.get
        if wanted == 0:
            return Value(lambda entry: function(get(entry)), receiver.column)
        arg = args[0]
        if name == "matches":
            if not arg.is_const or not isinstance(arg.const, (str, Regex)):
                raise KflError("matches() takes a string or regex literal", arg.column)
            if isinstance(arg.const, str):
                arg = _const(_compile_regex(arg.const, arg.column, 1), arg.column)
        elif arg.is_const and not isinstance(arg.const, (str, Regex)) and name != "contains":
            raise KflError(f"{name}() takes a string or a regex", arg.column)
        if arg.is_const:
            constant = arg.const
            if function is h_starts and type(constant) is str:
                return Value(lambda entry: type(v := get(entry)) is str and v.startswith(constant), receiver.column)
            if function is h_ends and type(constant) is str:
                return Value(lambda entry: type(v := get(entry)) is str and v.endswith(constant), receiver.column)
            if function is h_contains and type(constant) is str:
                return Value(lambda entry: h_contains(get(entry), constant), receiver.column)
            return Value(lambda entry: function(get(entry), constant), receiver.column)
        get_arg = arg.get
        return Value(lambda entry: function(get(entry), get_arg(entry)), receiver.column)


# -- builders ----------------------------------------------------------------------------------
def _getter(path: tuple[str | int, ...]) -> Getter:
    first = path[0]
    if len(path) == 1:
        return lambda entry: entry.get(first)
    rest = path[1:]
    if len(path) == 2 and type(path[1]) is str:
        second = path[1]
        return lambda entry: v.get(second) if type(v := entry.get(first)) is dict else None
    if len(path) == 3 and type(path[1]) is str and type(path[2]) is str:
        second, third = path[1], path[2]

        def get3(entry: dict[str, Any]) -> Any:
            value = entry.get(first)
            if type(value) is not dict:
                return None
            value = value.get(second)
            return value.get(third) if type(value) is dict else None
        return get3
    return _walk(lambda entry: entry.get(first), rest)


def _walk(base: Getter, steps: tuple[str | int, ...]) -> Getter:
    def get(entry: dict[str, Any]) -> Any:
        value = base(entry)
        for step in steps:
            kind = type(value)
            if kind is dict:
                value = value.get(step) if type(step) is str else None
            elif kind is list and type(step) is int:
                value = value[step] if -len(value) <= step < len(value) else None
            else:
                return None
        return value
    return get


def _comparison(left: Value, op: str, right: Value) -> Test:
    """left op right, specialised when the right side is a constant."""
    get = left.get
    if left.null_literal or right.null_literal:
        if left.null_literal and right.null_literal:
            result = op == "=="
            return lambda entry: result
        if op == "==":
            return lambda entry: get(entry) is None
        if op == "!=":
            return lambda entry: get(entry) is not None
        return lambda entry: False   # null has no order
    if right.is_const and left.is_const:
        result = OPS[op](left.const, right.const)
        return lambda entry: result
    if right.is_const:
        constant = right.const
        kind = _kind(constant)
        if kind == "str":
            if op == "==":
                return lambda entry: get(entry) == constant
            if op == "!=":
                return lambda entry: type(v := get(entry)) is str and v != constant
        if kind == "num":
            if op == "==":
                return lambda entry: type(v := get(entry)) in _NUM and v == constant
            if op == "!=":
                return lambda entry: type(v := get(entry)) in _NUM and v != constant
            if op == ">":
                return lambda entry: type(v := get(entry)) in _NUM and v > constant
            if op == ">=":
                return lambda entry: type(v := get(entry)) in _NUM and v >= constant
            if op == "<":
                return lambda entry: type(v := get(entry)) in _NUM and v < constant
            if op == "<=":
                return lambda entry: type(v := get(entry)) in _NUM and v <= constant
        if kind == "bool":
            if op == "==":
                return lambda entry: get(entry) is constant
            if op == "!=":
                return lambda entry: type(v := get(entry)) is bool and v is not constant
        if kind == "regex":
            full = constant.fullmatch
            if op == "==":
                return lambda entry: type(v := get(entry)) is str and full(v) is not None
            return lambda entry: type(v := get(entry)) is str and full(v) is None
        function = OPS[op]
        return lambda entry: function(get(entry), constant)
    function, other = OPS[op], right.get
    return lambda entry: function(get(entry), other(entry))


def _all_of(tests: list[Test]) -> Test:
    if len(tests) == 2:
        a, b = tests
        return lambda entry: a(entry) and b(entry)
    if len(tests) == 3:
        a, b, c = tests
        return lambda entry: a(entry) and b(entry) and c(entry)
    return lambda entry: all(test(entry) for test in tests)


def _any_of(tests: list[Test]) -> Test:
    if len(tests) == 2:
        a, b = tests
        return lambda entry: a(entry) or b(entry)
    return lambda entry: any(test(entry) for test in tests)


def _union(sets: Any) -> frozenset[str] | None:
    result: set[str] = set()
    for protocols in sets:
        if protocols is None:
            return None
        result |= protocols
    return frozenset(result)


def _intersection(sets: Any) -> frozenset[str] | None:
    result: frozenset[str] | None = None
    for protocols in sets:
        if protocols is not None:
            result = protocols if result is None else result & protocols
    return result


def _protocols_of(left: Value, op: str, right: Value) -> frozenset[str] | None:
    if op != "==":
        return None
    for field_side, const_side in ((left, right), (right, left)):
        if field_side.path == ("protocol",) and type(const_side.const) is str:
            return frozenset({const_side.const})
    return None


# -- literals ----------------------------------------------------------------------------------
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0", "\\": "\\",
            '"': '"', "'": "'", "/": "/"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)", re.S)


def unescape(literal: str, column: int) -> str:
    """The text of a quoted string literal: \\n \\t \\r \\b \\f \\0 \\\\ \\" \\' \\/ \\xHH \\uHHHH."""
    body = literal[1:-1]
    if "\\" not in body:
        return body

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if len(code) > 1:
            return chr(int(code[1:], 16))
        if code in _ESCAPES:
            return _ESCAPES[code]
        raise KflError(f"unknown escape '\\{code}' in a string (a regex literal r\"...\" "
                       "keeps backslashes as they are)", column + 1 + match.start())
    return _ESCAPE.sub(replace, body)


def _regex(token: lark.Token) -> Regex:
    text = str(token.value)
    return _compile_regex(text[2:-1], _col(token), 2)


def _compile_regex(source: str, column: int, prefix: int) -> Regex:
    try:
        return Regex(source)
    except RegexError as error:
        raise KflError(f"invalid regex: {error.message}", column + prefix + error.position) from None
    except (RecursionError, OverflowError, MemoryError):
        raise KflError("invalid regex: too complex", column) from None


def _number(token: lark.Token) -> int | float:
    text = str(token.value)
    if any(c in text for c in ".eE"):
        number = float(text)   # the grammar admits only what float() reads
        if math.isinf(number):
            raise KflError(f"number out of range: {text[:20]}", _col(token))
        return number
    try:
        return int(text)
    except ValueError:  # more digits than int() converts
        raise KflError(f"number too long: {text[:20]}...", _col(token)) from None


def _index_key(token: lark.Token) -> str | int:
    if token.type == "STRING":
        return unescape(str(token.value), _col(token))
    number = _number(token)
    if type(number) is not int:
        raise KflError(f"an index must be a whole number or a \"quoted key\", got {token.value}", _col(token))
    return number


def _did_you_mean(name: str, choices: tuple[str, ...]) -> str:
    lowered = name.lower()
    for choice in choices:
        if choice.lower() == lowered:
            return f" (did you mean '{choice}'?)"
    import difflib
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


# duration("5m") and timestamp("...") take a strict form, the same in hub/scripts/kfl.js
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+|[0-9]+(?:\.[0-9]+)?")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TIMESTAMP = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?)?"
                        r"(Z|[+-][0-9]{2}:[0-9]{2})?")


def _duration(arg: Value) -> float:
    text = arg.const
    if _DURATION.fullmatch(text) is None:
        raise KflError(f"duration(): {text!r} is not a duration; expected a number of seconds or numbers "
                       "with units ms, s, m, h, d, e.g. duration(\"5m\"), duration(\"1h30m\")", arg.column)
    parts = _DURATION_PART.findall(text)
    if not parts:
        return float(text)
    total = 0.0
    for number, unit in parts:
        total += float(number) * _DURATION_UNITS[unit]
    return total


def _timestamp(arg: Value) -> float:
    match = _TIMESTAMP.fullmatch(arg.const)
    bad = KflError(f"timestamp(): {arg.const!r} is not a time; expected ISO 8601 as "
                   "\"2026-03-14T22:00:00Z\" (UTC without an offset)", arg.column)
    if match is None:
        raise bad
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    offset = 0
    if zone and zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise bad
        offset = (hours * 60 + minutes) * 60 * (1 if zone[0] == "+" else -1)
    try:
        when = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                        tzinfo=timezone.utc)
    except ValueError:
        raise bad from None
    micro = int((fraction or "").ljust(6, "0"))
    return (int(when.timestamp()) - offset) + micro / 1_000_000
