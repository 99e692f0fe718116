"""The MCP tools' own errors, through the SDK's in-memory client over a stub hub client: a file
the server cannot write is a tool error saying why, and the server answers the next call."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from mcp import Client

from shark.mcp_server import build_server


class StubHub:
    url = "http://hub.test"

    def har(self, q: str, since: Any = None, until: Any = None, limit: int | None = None) -> dict[str, Any]:
        return {"log": {"version": "1.2", "entries": [{"request": {}}]}}

    def pcap(self, out: BinaryIO, q: str, since: Any, until: Any = None) -> tuple[int, str | None]:
        out.write(b"\xd4\xc3\xb2\xa1")
        return 4, None

    def validate(self, q: str) -> dict[str, Any]:
        return {"valid": True, "error": None, "column": None}


def call(calls: list[tuple[str, dict[str, Any]]]) -> list[tuple[bool, str]]:
    async def run() -> list[tuple[bool, str]]:
        async with Client(build_server(client=StubHub())) as client:  # type: ignore[arg-type]
            return [((r := await client.call_tool(name, args)).is_error, r.content[0].text) for name, args in calls]
    return asyncio.run(run())


@pytest.mark.parametrize("tool", ["export_pcap", "export_har"])
def test_an_unwritable_path_is_a_tool_error_with_the_reason(tool: str, tmp_path: Path) -> None:
    """/proc refuses new files: the tool used to fail with the SDK's bare 'Error executing tool
    export_har' (an unexpected exception, logged as a traceback), no reason for the model."""
    (unwritable, text), (after, _) = call([(tool, {"path": "/proc/out.file"}),
                                           ("validate_query", {"query": "http"})])
    assert unwritable and text.endswith("path: cannot write /proc/out.file: No such file or directory"), text
    assert not after                   # the server goes on
    ok, text = call([(tool, {"path": str(tmp_path / "out.file")})])[0]
    assert not ok and (tmp_path / "out.file").is_file() and not list(tmp_path.glob("*.part"))


def test_a_prompt_without_its_argument_or_unknown_is_invalid_params() -> None:
    """It was the SDK's "Internal server error" (-32603) with a traceback in the server's log."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import INVALID_PARAMS

    async def run() -> list[Any]:
        answers: list[Any] = []
        async with Client(build_server(client=StubHub())) as client:  # type: ignore[arg-type]
            for name, args in (("why_failing", {}), ("no_such_prompt", {}), ("why_failing", {"service": "cart"})):
                try:
                    answers.append(await client.get_prompt(name, args))
                except MCPError as error:
                    answers.append(error.error)
        return answers
    missing, unknown, good = asyncio.run(run())
    assert missing.code == INVALID_PARAMS and "Missing required arguments: {'service'}" in missing.message
    assert unknown.code == INVALID_PARAMS and "Unknown prompt: no_such_prompt" in unknown.message
    assert "'cart' is failing" in good.messages[0].content.text


def test_an_unknown_argument_is_refused_naming_it_and_the_valid_ones() -> None:
    """The SDK dropped an argument a tool does not take: list_entries(filter=...) answered every
    entry, unfiltered, and validate_query(q=...) said `query` was missing, never what was wrong
    with `q`. Now the call is a tool error naming the argument and the ones the tool takes, and
    the tools' schemas say so."""
    (wrong, text), (two, text2), (none, text3), (right, _) = call([
        ("validate_query", {"q": "http and"}), ("validate_query", {"query": "http", "kfl": 1, "q": 2}),
        ("status", {"verbose": True}), ("validate_query", {"query": "http"})])
    assert wrong and text == "validate_query: unknown argument 'q'; it takes query", text
    assert two and text2 == "validate_query: unknown arguments 'kfl', 'q'; it takes query", text2
    assert none and text3 == "status: unknown argument 'verbose'; it takes no arguments", text3
    assert not right

    async def schemas() -> dict[str, Any]:
        async with Client(build_server(client=StubHub())) as client:  # type: ignore[arg-type]
            return {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
    listed = asyncio.run(schemas())
    assert listed["list_entries"]["additionalProperties"] is False and "query" in listed["list_entries"]["properties"]
