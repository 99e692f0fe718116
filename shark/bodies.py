"""Request bodies decoded into msgspec Structs, with errors in the words every route uses.

msgspec checks the shape (fields, types, unknown names) in C; `decode_body` turns its message
("Expected `bool`, got `str` - at `$.idle`") into the project's ("idle: expected true or
false, got str"), naming the field by its path and listing the known fields of the object that
had an unknown one. A field may say how it is described to people with
`Annotated[..., msgspec.Meta(description="a list of tags")]`; what is not a matter of shape
(an IP address, a tag's characters) the route checks after decoding.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class BodyError(ValueError):
    """A body that is not what the route takes; the message names the field and what was expected."""


# How msgspec's type names read in an error meant for people.
_WORDS = {"bool": "true or false", "array": "a list", "object": "an object", "str": "a string",
          "int": "an integer", "float": "a number", "null": "null"}
_MESSAGE = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_PART = re.compile(r"\.([^.[]+)|\[(\d+|\.\.\.)\]")


def decode_body(raw: bytes, type_: type[T]) -> T:
    """`raw` as a `type_` Struct; BodyError saying which field is wrong and what was expected."""
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as error:
        raise BodyError(describe(error, type_)) from None
    except msgspec.DecodeError as error:
        raise BodyError(f"body: not valid JSON ({error})") from None
    except RecursionError:   # a field typed Any holding ~100k nested arrays: was a 500
        raise BodyError("body: arrays and objects nest too deep to decode") from None


def convert_body(value: Any, type_: type[T]) -> T:
    """Like decode_body, for a body already parsed into Python values."""
    try:
        return msgspec.convert(value, type=type_)
    except msgspec.ValidationError as error:
        raise BodyError(describe(error, type_)) from None


def describe(error: msgspec.ValidationError, root: type) -> str:
    """msgspec's validation message in the project's words: "path: what was wrong"."""
    match = _MESSAGE.match(str(error))
    assert match is not None       # the pattern matches any text
    what, path = match["what"], match["path"] or ""
    parts: list[str | int] = [name if name else (int(index) if index.isdigit() else index)
                              for name, index in _PART.findall(path)]
    where = _dotted(parts)
    if found := re.fullmatch(r"Object contains unknown field `(.+)`", what):
        known = _field_names(_type_at(root, parts))
        expected = f"; expected {', '.join(known)}" if known else ""
        return f"{_join(where, found[1])}: unknown field{expected}"
    if found := re.fullmatch(r"Object missing required field `(.+)`", what):
        description = _description(_type_at(root, parts), found[1])
        return f"{_join(where, found[1])}: missing" + (f"; expected {description}" if description else "")
    if not where:
        where = "body"
        what = what.replace("Expected `object`", "Expected a JSON object")
    description = _description(_type_at(root, parts[:-1]), parts[-1]) if parts else None
    if found := re.fullmatch(r"Expected `([^`]+)`, got `([^`]+)`", what):
        expected = description or " or ".join(_WORDS.get(name, name) for name in found[1].split(" | "))
        return f"{where}: expected {expected}, got {found[2]}"
    if description:
        return f"{where}: expected {description} ({_plain(what)})"
    return f"{where}: {_plain(what)}"


def _plain(what: str) -> str:
    """msgspec's "Expected `int` >= 0" as "expected an integer >= 0"."""
    text = re.sub(r"`([^`]+)`", lambda m: _WORDS.get(m[1], m[1]), what)
    return text[:1].lower() + text[1:]


def _dotted(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) or part == "..." else ("." if out else "") + part
    return out


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _bare(type_: Any) -> Any:
    """`type_` without Annotated, Optional and UNSET around it."""
    while True:
        if typing.get_origin(type_) is typing.Annotated:
            type_ = typing.get_args(type_)[0]
            continue
        args = [a for a in typing.get_args(type_) if a not in (type(None), msgspec.UnsetType)]
        if typing.get_origin(type_) in (typing.Union, types.UnionType) and len(args) == 1:
            type_ = args[0]
            continue
        return type_


def _hints(struct: Any) -> dict[str, Any]:
    return typing.get_type_hints(struct, include_extras=True)


def _type_at(root: Any, parts: list[str | int]) -> Any:
    """The type found at `parts` below `root` (None where the path leaves what is known)."""
    type_ = root
    for part in parts:
        type_ = _bare(type_)
        if isinstance(part, str) and part != "..." and isinstance(type_, type) \
                and issubclass(type_, msgspec.Struct):
            type_ = _hints(type_).get(_field_by_wire_name(type_, part))
        elif typing.get_origin(type_) in (list, tuple, set, frozenset, dict):
            type_ = typing.get_args(type_)[-1]
        else:
            return None
    return _bare(type_)


def _field_by_wire_name(struct: Any, name: str) -> str:
    for field in msgspec.structs.fields(struct):
        if field.encode_name == name:
            return field.name
    return name


def _field_names(type_: Any) -> list[str]:
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        return [field.encode_name for field in msgspec.structs.fields(type_)]
    return []


def _description(struct: Any, name: str | int) -> str | None:
    """The description a Struct's field declares with msgspec.Meta, if any."""
    if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)) or not isinstance(name, str):
        return None
    hint = _hints(struct).get(_field_by_wire_name(struct, name))
    while hint is not None:
        if typing.get_origin(hint) is typing.Annotated:
            for meta in typing.get_args(hint)[1:]:
                if isinstance(meta, msgspec.Meta) and meta.description:
                    return meta.description
            hint = typing.get_args(hint)[0]
            continue
        inner = [a for a in typing.get_args(hint) if a not in (type(None), msgspec.UnsetType)]
        hint = inner[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(inner) == 1 else None
    return None
