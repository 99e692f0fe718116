"""Two network namespaces joined by a veth: the worker captures on one node's interface."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from support.netns import VethPair
from support.processes import Proc, Worker, wait_for

pytestmark = pytest.mark.root
TESTS = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def nodes():
    with VethPair(subnet=7) as pair:
        yield pair


def test_traffic_between_namespaces_is_captured_on_the_veth(nodes, tmp_path):
    client, server = nodes.a, nodes.b
    http = Proc([sys.executable, "-m", "support.http_server", "8080", server.address],
                env={"PYTHONPATH": TESTS}, prefix=server.exec_prefix)
    worker = None
    try:
        http.wait_line("listening")
        worker = Worker(["--iface", server.iface], tmp_path / "store", prefix=server.exec_prefix,
                        node=server.name)
        for path in ("/status/201", "/json", "/status/404"):
            result = client.run("curl", "-sS", "--max-time", "10", f"http://{server.address}:8080{path}")
            assert result.returncode == 0, result.stderr
        result = client.run(sys.executable, "-c",
                            "import httpx; print(httpx.get('http://%s:8080/status/500').status_code)"
                            % server.address)
        assert result.stdout.strip() == "500", result.stderr

        def fetch_entries() -> list[dict] | None:
            out = server.run("curl", "-sS", f"{worker.url}/entries").stdout
            entries = [json.loads(line) for line in out.splitlines() if line]
            return entries if len(entries) >= 4 else None
        entries = wait_for(fetch_entries, what="4 entries from the veth")
        assert sorted((e["request"]["path"], e["status"]) for e in entries) == [
            ("/json", 200), ("/status/201", 201), ("/status/404", 404), ("/status/500", 500)]
        for entry in entries:
            assert entry["src"]["ip"] == client.address
            assert entry["dst"] == {"ip": server.address, "port": 8080, "name": "", "namespace": "",
                                    "kind": ""}
            assert entry["node"] == server.name
        status = json.loads(server.run("curl", "-sS", f"{worker.url}/status").stdout)
        assert status["capture"]["dropped"] == 0
        assert status["capture"]["sources"][0]["name"].endswith(server.iface)
    finally:
        if worker:
            worker.stop()
        http.stop()
