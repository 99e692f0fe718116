"""shark.bodies: a body's shape checked by msgspec, its errors in the project's words."""

from __future__ import annotations

from typing import Annotated

import msgspec
import pytest

from shark.bodies import BodyError, convert_body, decode_body


class Item(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    tags: Annotated[list[str], msgspec.Meta(description="a list of tags")] = []
    weight: Annotated[int, msgspec.Meta(ge=0)] = 0


class Order(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[Item], msgspec.Meta(description="a list of items, e.g. [{\"id\": \"a\"}]")]
    urgent: bool = False
    note: str | None = None
    by_name: dict[str, Item] = {}
    limit: str | int = 0
    renamed: int = msgspec.field(default=0, name="renamed-on-wire")


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"items": [], "colour": 1}', "colour: unknown field; expected items, urgent, note, by_name, limit, renamed-on-wire"),
    (b'{"items": [{"id": "a", "size": 1}]}', "items[0].size: unknown field; expected id, tags, weight"),
    (b'{}', 'items: missing; expected a list of items, e.g. [{"id": "a"}]'),
    (b'{"items": [{}]}', "items[0].id: missing"),
    (b'{"items": "a"}', 'items: expected a list of items, e.g. [{"id": "a"}], got str'),
    (b'{"items": [], "urgent": "yes"}', "urgent: expected true or false, got str"),
    (b'{"items": [], "note": 3}', "note: expected a string or null, got int"),
    (b'{"items": [], "limit": true}', "limit: expected an integer or a string, got bool"),
    (b'{"items": [{"id": "a", "tags": "x"}]}', "items[0].tags: expected a list of tags, got str"),
    (b'{"items": [{"id": "a", "tags": [1]}]}', "items[0].tags[0]: expected a string, got int"),
    (b'{"items": [{"id": "a", "weight": -1}]}', "items[0].weight: expected an integer >= 0"),
    (b'{"items": [], "by_name": {"x": {"id": 1}}}', "by_name[...].id: expected a string, got int"),
    (b'{"items": [], "renamed-on-wire": "1"}', "renamed-on-wire: expected an integer, got str"),
    (b'[1]', "body: expected a JSON object, got a list"),
    (b'{"items": [', "body: not valid JSON"),
    (b'', "body: not valid JSON"),
])
def test_each_mistake_is_named_by_its_field(raw: bytes, message: str) -> None:
    with pytest.raises(BodyError) as caught:
        decode_body(raw, Order)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_good_body_decodes_and_converts() -> None:
    order = decode_body(b'{"items": [{"id": "a", "tags": ["t"]}], "urgent": true, "limit": "5MB"}', Order)
    assert order == Order(items=[Item("a", ["t"])], urgent=True, limit="5MB")
    assert convert_body({"items": [{"id": "b"}]}, Order).items == [Item("b")]
    with pytest.raises(BodyError, match=r"^items\[0\]\.id: expected a string, got int$"):
        convert_body({"items": [{"id": 2}]}, Order)


def test_a_body_nested_too_deep_is_a_body_error() -> None:
    # TargetsUpdate.names is Any: 100k nested arrays made msgspec raise RecursionError, a 500
    from shark.model import TargetsUpdate
    raw = b'{"names": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(BodyError, match=r"^body: arrays and objects nest too deep to decode$"):
        decode_body(raw, TargetsUpdate)
