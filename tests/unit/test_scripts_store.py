"""Where scripts and their tags are kept: the hub's file store (atomic, never deletes what it
cannot read), and the worker's side of test.pass/test.fail (POST /tags into the index, seen by
KFL)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest

from hub.scripts.model import StoredScript, name_problem
from hub.scripts.store import FileScriptStore, MemoryScriptStore
from shark import kfl
from unit.test_store_index import make_row
from worker.api.app import tag_changes
from worker.api.asgi import HTTPError
from worker.store.index import open_index


def script(name: str, code: str = "var a = 1;", **changes: object) -> StoredScript:
    return StoredScript(name=name, code=code, created=1.0, updated=2.0, **changes)  # type: ignore[arg-type]


def test_file_store_round_trip_and_atomic_writes(tmp_path: Path) -> None:
    store = FileScriptStore(tmp_path / "scripts")

    async def run() -> None:
        assert await store.load_all() == []
        await store.put(script("b"))
        await store.put(script("a", enabled=False, disabled_reason="failed 5 calls in a row"))
        await store.put(script("b", code="var b = 2;"))
        assert [s.name for s in await store.load_all()] == ["a", "b"]
        loaded = {s.name: s for s in await store.load_all()}
        assert loaded["b"].code == "var b = 2;" and loaded["a"].disabled_reason == "failed 5 calls in a row"
        assert await store.delete("a") is True and await store.delete("a") is False
    asyncio.run(run())
    assert sorted(p.name for p in (tmp_path / "scripts").iterdir()) == ["b.json"]   # no temporary files left
    assert json.loads((tmp_path / "scripts" / "b.json").read_text())["code"] == "var b = 2;"


def test_a_file_that_cannot_be_read_is_skipped_and_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "scripts"
    directory.mkdir()
    (directory / "broken.json").write_text("{not json")
    (directory / "renamed.json").write_bytes(msgspec.json.encode(script("other")))
    (directory / "good.json").write_bytes(msgspec.json.encode(script("good")))
    loaded = asyncio.run(FileScriptStore(directory).load_all())
    assert [s.name for s in loaded] == ["good"]
    assert (directory / "broken.json").read_text() == "{not json"
    assert "broken.json cannot be read" in caplog.text and "holds a script named 'other'" in caplog.text


def test_memory_store() -> None:
    store = MemoryScriptStore()

    async def run() -> None:
        await store.put(script("x"))
        assert [s.name for s in await store.load_all()] == ["x"]
        assert await store.delete("x") and not await store.delete("x")
    asyncio.run(run())


@pytest.mark.parametrize(("name", "ok"), [("tag-5xx", True), ("a.b_c", True), ("A1", True), ("x" * 63, True),
                                          ("x" * 64, False), ("-a", False), ("a b", False), ("../x", False),
                                          ("", False), ("logs", False), ("snapshots", False), (5, False)])
def test_script_names(name: object, ok: bool) -> None:
    assert (name_problem(name) is None) is ok


# -- the worker's side of tags -----------------------------------------------------------------------
def test_tags_are_written_into_the_stored_entries_and_seen_by_kfl(tmp_path: Path) -> None:
    index, _ = open_index(tmp_path / "index.sqlite")
    try:
        index.add([make_row(1), make_row(2), make_row(3)], None)
        found = index.update_tags([(1, ["test.fail", "slow"], []), (2, ["test.pass"], ["test.fail"]), (9, ["x"], [])])
        assert found == {1: ["test.fail", "slow"], 2: ["test.pass"]}
        # no duplicates; order kept
        assert index.update_tags([(1, ["test.pass", "slow"], ["test.fail"])]) == {1: ["slow", "test.pass"]}
        entries = {row.seq: json.loads(row.entry_json) for row in index.query()}
        assert entries[1]["tags"] == ["slow", "test.pass"] and entries[2]["tags"] == ["test.pass"]
        assert entries[3]["tags"] == []
        assert list(entries[1]) == list(entries[3])   # the entry's fields keep their order
        failed = kfl.compile('"test.pass" in tags and tags.contains("slow")')
        assert [seq for seq, e in sorted(entries.items()) if failed(e)] == [1]
    finally:
        index.close()


@pytest.mark.parametrize(("body", "detail"), [
    ({}, "changes: missing; expected a non-empty list"),
    ({"changes": []}, "changes: expected a non-empty list"),
    ({"changes": [], "x": 1}, "x: unknown field"),
    ({"changes": [{"id": "node-a:1", "add": ["ok"]}] * 1001}, "changes: 1001 changes; at most 1000"),
    ({"changes": ["node-a:1"]}, "changes[0]: expected an object, got str"),
    ({"changes": [{"id": "node-a:1", "add": [1]}]}, "changes[0].add[0]: expected a string, got int"),
    ({"changes": [{"add": ["x"]}]}, "changes[0].id: missing"),
    (b"{", "body: not valid JSON"),
    (b"[1]", "body: expected a JSON object, got a list"),
    ({"changes": [{"id": "node-a"}]}, "changes[0].id: 'node-a' is not an entry id"),
    ({"changes": [{"id": "node-b:1", "add": ["x"]}]}, "changes[0].id: entry 'node-b:1' belongs to node 'node-b'"),
    ({"changes": [{"id": "node-a:1", "add": "x"}]}, "changes[0].add: expected a list of tags"),
    ({"changes": [{"id": "node-a:1", "remove": ["ok", " bad"]}]}, "changes[0].remove[1]: ' bad' is not a tag"),
    ({"changes": [{"id": "node-a:1", "tags": []}]}, "changes[0].tags: unknown field"),
])
def test_tag_changes_are_checked(body: dict | bytes, detail: str) -> None:
    with pytest.raises(HTTPError) as caught:
        tag_changes(body if isinstance(body, bytes) else msgspec.json.encode(body), "node-a")
    assert caught.value.status_code == 400 and caught.value.detail.startswith(detail)


def test_tag_changes_parse() -> None:
    body = {"changes": [{"id": "node-a:7", "add": ["test.fail"], "remove": ["test.pass"]}, {"id": "node-a:8"}]}
    assert tag_changes(msgspec.json.encode(body), "node-a") == [(7, ["test.fail"], ["test.pass"]), (8, [], [])]
