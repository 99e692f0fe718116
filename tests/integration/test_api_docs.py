"""Every curl example in docs/API.md runs against a live worker."""

from __future__ import annotations

import os
import re
import subprocess

import httpx
import pytest

from support.processes import ROOT, TEST_TOKEN, wait_for

pytestmark = pytest.mark.root


def doc_commands() -> list[str]:
    text = (ROOT / "docs" / "API.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]


def test_docs_have_examples():
    commands = doc_commands()
    assert len(commands) >= 14
    for route in ("/status", "/entries?", "/stream", "/entries/$ENTRY", "/entries/$ENTRY/pcap",
                  "/pcap", "/targets", "/config", "/query/validate", "q=", "/healthz"):
        assert any(route in command for command in commands), route
    # every example but the health check shows the token (docs/API.md, "Access")
    assert all('-H "Authorization: Bearer $SHARK_TOKEN"' in c for c in commands if "/healthz" not in c)


def test_every_example_runs(start_worker, http_server, tmp_path):
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", token=TEST_TOKEN)
    for path in ("/api/orders", "/status/500"):
        httpx.get(f"http://127.0.0.1:{http_server}{path}")
    entry = wait_for(lambda: (e := worker.entries()) and len(e) == 2 and e, what="2 entries")[0]
    env = {**os.environ, "WORKER": worker.url.removesuffix("/api/v1"), "ENTRY": entry["id"], "SHARK_TOKEN": TEST_TOKEN}
    for command in doc_commands():
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=30)
        if "--max-time" in command and "/stream" in command:
            assert result.returncode == 28, (command, result.stderr)  # a stream ends by timeout
        else:
            assert result.returncode == 0, (command, result.stderr)
    assert (tmp_path / "entry.pcap").stat().st_size > 24
    assert (tmp_path / "errors.pcap").stat().st_size > 24
