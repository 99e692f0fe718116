"""The hub's query parameters, parsed and checked: text in, values or a BadRequest naming the
parameter out; no I/O.

KFL is validated once here: an invalid `q` is a 400 with its column before any worker is
asked; a valid one is pushed down so only matches cross the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from hub.errors import BadRequest
from hub.stream import last_event_id
from shark import kfl
from shark.seq import MAX_SEQ, parse_seq

QUERY_PARAMS = ("q", "since", "until", "limit")
DEFAULT_LIMIT = 100
# rows one query may ask of the workers and hold at the hub: the default of --max-query-rows
MAX_LIMIT = 100_000
# Python's JSON decoders and encoders recurse: a body of 3000 nested arrays raised
# RecursionError, a bare 500 (and a hub action's data is encoded again for the scripts).
MAX_JSON_DEPTH = 64


def bad_query(error: kfl.KflError) -> BadRequest:
    return BadRequest(f"q: {error}", column=error.column)


def only(params: Mapping[str, str], allowed: tuple[str, ...], hint: str = "") -> None:
    for name in params:
        if name not in allowed:
            expected = allowed[0] if len(allowed) == 1 else f"one of {', '.join(allowed)}"
            raise BadRequest(f"{name}: unknown query parameter; expected {expected}{hint}")


def query(params: Mapping[str, str], allowed: tuple[str, ...] = QUERY_PARAMS) -> dict[str, str]:
    """The parameters of a query over the workers' entries, `q` compiled; empty ones dropped."""
    only(params, allowed, " (filters are KFL queries in q, e.g. q=http and status >= 500)")
    if params.get("q"):
        try:
            kfl.compile(params["q"])
        except kfl.KflError as error:
            raise bad_query(error) from None
    return {name: value for name, value in params.items() if value != ""}


def limit(params: Mapping[str, str], default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """`limit`, at most `maximum` (the hub's --max-query-rows); without one `default`, cut to
    the maximum when the hub was started with a lower one."""
    text = params.get("limit")
    if text is None:
        return min(default, maximum)
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"limit: {text!r} is not a whole number") from None
    if value < 1:
        raise BadRequest(f"limit: {value} is below 1")
    if value > maximum:
        raise BadRequest(f"limit: {value} is above the hub's maximum of {maximum} rows per query "
                         "(--max-query-rows); narrow the query (q, since, until) or ask for fewer")
    return value


def entry_node(entry_id: str) -> str:
    """The node of an entry id NODE:NUMBER."""
    node, sep, number = entry_id.rpartition(":")
    if not sep or not node or parse_seq(number) is None:
        raise BadRequest(f"id: {entry_id!r} is not an entry id (NODE:NUMBER, NUMBER at most {MAX_SEQ})")
    return node


def live(params: Mapping[str, str], headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """/stream's query `q` (None: everything) and its Last-Event-ID, checked."""
    try:
        last_id = last_event_id(dict(headers))   # a bad one is told first
    except ValueError as error:
        raise BadRequest(str(error)) from None
    only(params, ("q",))
    q = params.get("q") or None
    if q is not None and (error := kfl.validate(q)) is not None:
        raise bad_query(error)
    return q, last_id


def ws_query(message: str) -> str:
    """The query of a WebSocket's first message: plain KFL text, or {"q": "..."}."""
    text = message.strip()
    if text.startswith("{"):
        try:
            decoded = json_body(text)
        except BadRequest:
            return message
        if isinstance(decoded, dict) and isinstance(decoded.get("q", ""), str):
            return decoded.get("q", "")
    return message


def json_body(raw: bytes | str) -> Any:
    """A request body (or WebSocket message) as JSON, arrays and objects nested at most
    MAX_JSON_DEPTH deep; BadRequest saying what is wrong."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise BadRequest(f"body: not valid JSON ({error})") from None
    except RecursionError:
        value = None
        too_deep = True
    else:
        too_deep = _deeper_than(value, MAX_JSON_DEPTH)
    if too_deep:
        raise BadRequest(f"body: arrays and objects nest deeper than {MAX_JSON_DEPTH} levels")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False
