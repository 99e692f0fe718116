"""`kubectl shark mcp --http` is guarded (shark/mcp_http.py): a real server started as the user
starts it, asked with plain HTTP and with the MCP SDK's own client. Without the bearer token
every request is a 401; with it a client lists the tools; a foreign Host or Origin is refused;
it will not listen beyond loopback unless told to. No hub is needed to list tools."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
from pathlib import Path

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from shark.mcp_server import TOOLS
from support.processes import Proc, free_port, wait_for

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}}}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[Proc, int]:
    port = free_port()
    server = Proc([sys.executable, "-m", "shark.cli", "mcp", "--http", "--port", str(port),
                   "--hub", f"http://127.0.0.1:{free_port()}", *args],
                  env={"XDG_STATE_HOME": str(tmp_path), "SHARK_MCP_TOKEN": "", **(env or {})})

    def listening() -> bool | None:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited {server.process.returncode}:\n{server.output}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return None
        return True
    wait_for(listening, timeout=30, what="the MCP HTTP server")
    return server, port


async def tool_names(url: str, token: str) -> list[str]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http), read_timeout_seconds=30) as client:
        return sorted(tool.name for tool in (await client.list_tools()).tools)


def test_the_token_is_required_and_a_real_client_with_it_lists_the_tools(tmp_path):
    server, port = start(tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        token_file = tmp_path / "shark" / "mcp-token"
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token) >= 40
        server.wait_line(rf"clients send the header: Authorization: Bearer {token}$")

        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {token}"},
                        {"authorization": f"Bearer {token}x"}):
            answer = httpx.post(url, json=INIT, headers={**HEADERS, **headers})
            assert answer.status_code == 401, (headers, answer.text)
            assert answer.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
            assert answer.json()["error"] == "invalid_token"
        assert httpx.get(url, headers={"accept": "text/event-stream"}).status_code == 401

        bearer = {**HEADERS, "authorization": f"Bearer {token}"}
        assert httpx.post(url, json=INIT, headers=bearer).status_code == 200
        # a page whose name was rebound to 127.0.0.1: its Host and its Origin are not ours
        assert httpx.post(url, json=INIT, headers={**bearer, "host": f"evil.example:{port}"}).status_code == 421
        assert httpx.post(url, json=INIT, headers={**bearer, "origin": "http://evil.example"}).status_code == 403
        assert httpx.post(url, json=INIT, headers={**bearer, "origin": f"http://localhost:{port}"}).status_code == 200

        assert asyncio.run(tool_names(url, token)) == sorted(TOOLS)
        # the SDK's client with a wrong token: the 401 ends its session at the start
        with pytest.raises(Exception) as refused:  # noqa: PT011 - an ExceptionGroup around MCPError
            asyncio.run(tool_names(url, "not-the-token"))
        assert "MCPError(-32603, 'Server returned an error response'" in repr(refused.value)
    finally:
        server.stop()
    # a restart keeps the token, so a configured client keeps working
    server, port = start(tmp_path)
    try:
        assert asyncio.run(tool_names(f"http://127.0.0.1:{port}/mcp", token)) == sorted(TOOLS)
    finally:
        server.stop()


def test_a_token_from_the_environment_replaces_the_file(tmp_path):
    server, port = start(tmp_path, env={"SHARK_MCP_TOKEN": "s3cret-for-the-test"})
    try:
        assert asyncio.run(tool_names(f"http://127.0.0.1:{port}/mcp", "s3cret-for-the-test")) == sorted(TOOLS)
        assert not (tmp_path / "shark" / "mcp-token").exists()
        assert "s3cret" not in server.output      # said where it came from, not printed
        server.wait_line(r"Bearer \(the one in --http-token/SHARK_MCP_TOKEN\)")
    finally:
        server.stop()


def test_only_loopback_unless_allowed(tmp_path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    refused = Proc([sys.executable, "-m", "shark.cli", "mcp", "--http", "--host", "0.0.0.0",
                    "--port", str(free_port())], env=env)
    assert refused.process.wait(30) == 1
    refused.stop()
    assert "--host 0.0.0.0: not a loopback address" in refused.output and "--allow-remote" in refused.output
    usage = Proc([sys.executable, "-m", "shark.cli", "mcp", "--http-token", "x"], env=env)
    assert usage.process.wait(30) == 2
    usage.stop()
    assert "--http-token need --http" in usage.output

    server, port = start(tmp_path, "--host", "0.0.0.0", "--allow-remote", "--allow-host", "shark.example")
    try:
        token = (tmp_path / "shark" / "mcp-token").read_text().strip()
        url = f"http://127.0.0.1:{port}/mcp"
        assert asyncio.run(tool_names(url, token)) == sorted(TOOLS)
        bearer = {**HEADERS, "authorization": f"Bearer {token}"}
        assert httpx.post(url, json=INIT, headers={**bearer, "host": f"shark.example:{port}"}).status_code == 200
        assert httpx.post(url, json=INIT, headers={**bearer, "host": f"evil.example:{port}"}).status_code == 421
        assert httpx.post(url, json=INIT, headers={**bearer, "origin": f"http://shark.example:{port}"}).status_code == 200
        assert httpx.post(url, json=INIT).status_code == 401
    finally:
        server.stop()
