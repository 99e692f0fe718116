"""`kubectl shark mcp` as an MCP client meets it: the SDK's stdio client starts the command as a
subprocess against a real `tap --local` with real HTTP traffic on lo, and calls every tool;
then the same over streamable HTTP (`--http`)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import dpkt
import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from shark.mcp_server import TOOLS
from support.processes import Proc, free_port, wait_for

pytestmark = pytest.mark.root


def data(result: Any) -> Any:
    assert not result.is_error, result.content[0].text
    return result.structured_content


def error(result: Any) -> str:
    assert result.is_error, result
    return result.content[0].text


async def session(client: Client, port: int, tmp_path: Path) -> None:
    listed = await client.list_tools()
    assert sorted(t.name for t in listed.tools) == sorted(TOOLS)
    for tool in listed.tools:
        assert tool.description and tool.input_schema["type"] == "object", tool

    assert data(await client.call_tool("validate_query", {"query": "http"}))["valid"] is True
    bad = data(await client.call_tool("validate_query", {"query": "http and =="}))
    assert bad["valid"] is False and bad["column"] == 10

    ours = f"http and dst.port == {port}"

    async def five() -> list[dict[str, Any]] | None:
        rows = data(await client.call_tool("list_entries", {"query": ours, "limit": 20}))["entries"]
        return rows if len(rows) >= 5 else None
    for _ in range(60):
        rows = await five()
        if rows:
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("5 entries never listed")
    assert len(rows) == 5
    assert sorted(r["summary"] for r in rows) == ["GET /json?n=0", "GET /json?n=1", "GET /json?n=2",
                                                  "GET /status/503", "GET /status/503"]
    assert {r["dst"] for r in rows} == {f"127.0.0.1:{port}"} and all(r["protocol"] == "http" for r in rows)
    assert set(rows[0]) >= {"id", "time", "src", "dst", "summary", "status", "elapsed_ms"}
    assert "request" not in rows[0]           # compact rows; get_entry has the rest
    limited = data(await client.call_tool("list_entries", {"query": ours, "limit": 2, "since": "10m"}))
    assert limited["count"] == 2
    assert "column 10" in error(await client.call_tool("list_entries", {"query": "http and =="}))
    assert "limit" in error(await client.call_tool("list_entries", {"limit": 0}))

    failing = next(r for r in rows if r["status"] == 503)
    full = data(await client.call_tool("get_entry", {"id": failing["id"]}))
    assert full["response"]["status"] == 503 and full["request"]["path"] == "/status/503"
    assert full["response"]["body"]["data"] == "status 503\n"
    assert "not an entry id" in error(await client.call_tool("get_entry", {"id": "nonsense"}))
    assert "404" in error(await client.call_tool("get_entry", {"id": "no-such-node:1"}))

    smap = data(await client.call_tool("service_map", {"query": ours}))
    [edge] = smap["edges"]
    assert edge["target"] == f"127.0.0.1:{port}" and edge["count"] == 5 and edge["errors"] == 2
    assert edge["protocol"] == "http" and edge["p99_ms"] is not None

    for _ in range(60):     # the hub's view of the worker is its last poll (every 2 s)
        status = data(await client.call_tool("status", {}))
        [worker] = status["workers"]
        if (worker.get("entries") or 0) >= 5:
            break
        await asyncio.sleep(0.5)
    assert worker["ok"] is True and worker["packets_received"] > 0 and worker["entries"] >= 5
    assert status["hub"]["workers_ok"] == 1 and status["packets_dropped_total"] == 0

    pcap = data(await client.call_tool("export_pcap", {"path": "out.pcap", "query": ours}))
    assert pcap["path"] == str(tmp_path / "out.pcap") and pcap["bytes"] > 0
    with open(tmp_path / "out.pcap", "rb") as file:
        requests = [bytes(tcp.data).split(b" HTTP/")[0] for _, frame in dpkt.pcap.UniversalReader(file)
                    for tcp in [dpkt.ethernet.Ethernet(frame).data.data]
                    if isinstance(tcp, dpkt.tcp.TCP) and tcp.dport == port and tcp.data.startswith(b"GET ")]
    assert sorted(requests) == [b"GET /json?n=0", b"GET /json?n=1", b"GET /json?n=2",
                                b"GET /status/503", b"GET /status/503"]
    har = data(await client.call_tool("export_har", {"path": str(tmp_path / "out.har"), "query": ours}))
    assert har["entries"] == 5
    assert len(json.loads((tmp_path / "out.har").read_text())["log"]["entries"]) == 5
    assert "no directory" in error(await client.call_tool("export_har", {"path": str(tmp_path / "no" / "x.har")}))

    snap = data(await client.call_tool("create_snapshot", {"name": "mcp-1", "query": ours, "since": "10m"}))
    assert (snap["name"], snap["entries"]) == ("mcp-1", 5) and snap["pcap_bytes"] > 24
    assert "exists" in error(await client.call_tool("create_snapshot", {"name": "mcp-1"}))
    listed = data(await client.call_tool("list_snapshots", {}))
    assert [s["name"] for s in listed["snapshots"]] == ["mcp-1"] and listed["bytes"] > snap["pcap_bytes"]

    prompts = await client.list_prompts()
    assert {p.name for p in prompts.prompts} == {"why_failing", "slow_endpoints", "what_talks_to"}
    prompt = await client.get_prompt("why_failing", {"service": "orders"})
    assert 'dst.name == "orders"' in prompt.messages[0].content.text


def test_mcp_stdio_serves_every_tool_against_tap_local(tap_local, http_server, tmp_path):
    hub, env = tap_local
    for path in ("/json?n=0", "/json?n=1", "/json?n=2", "/status/503", "/status/503"):
        httpx.get(f"http://127.0.0.1:{http_server}{path}", timeout=10)

    async def run() -> None:
        # the token comes from the state dir tap --local wrote, as for every hub-facing command
        params = StdioServerParameters(command=sys.executable, args=["-m", "shark.cli", "mcp", "--hub", hub],
                                       env={**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
                                       cwd=str(tmp_path))
        async with Client(params, read_timeout_seconds=60) as client:
            await session(client, http_server, tmp_path)
        # a hub that is not there: a clear error from the tool, not a dead server
        down = StdioServerParameters(command=sys.executable,
                                     args=["-m", "shark.cli", "mcp", "--hub", f"http://127.0.0.1:{free_port()}"],
                                     env=env)
        async with Client(down, read_timeout_seconds=60) as client:
            text = error(await client.call_tool("status", {}))
            assert "cannot reach the hub" in text and "connection refused" in text
    asyncio.run(run())


def test_mcp_streamable_http(tap_local, tmp_path):
    hub, env = tap_local
    port = free_port()
    token = "mcp-token-for-the-test"     # the guard itself: tests/unit/test_mcp_http.py
    server = Proc([sys.executable, "-m", "shark.cli", "mcp", "--http", "--port", str(port), "--hub", hub],
                  env={**env, "SHARK_MCP_TOKEN": token})

    def listening() -> bool | None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return None
        return True
    try:
        wait_for(listening, timeout=30, what="the MCP HTTP server")

        async def run() -> None:
            http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
            transport = streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
            async with http, Client(transport, read_timeout_seconds=60) as client:
                for _ in range(60):     # until the hub has polled its worker once
                    status = data(await client.call_tool("status", {}))
                    if status["hub"]["workers_ok"] == 1:
                        break
                    await asyncio.sleep(0.5)
                assert status["hub"]["url"] == hub and status["workers"][0]["ok"] is True
                assert data(await client.call_tool("validate_query", {"query": "dns"}))["valid"] is True
        asyncio.run(run())
    finally:
        server.stop()
