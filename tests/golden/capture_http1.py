"""Regenerate tests/golden/http1/*.pcap: real clients (httpx, curl) against the test server.

    .venv/bin/python tests/golden/capture_http1.py      (as root; then UPDATE_GOLDEN=1 tests)
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN, Scenario, record_all  # noqa: E402
from support.processes import Proc, free_port  # noqa: E402


@contextmanager
def scenarios() -> Iterator[list[Scenario]]:
    port = free_port()
    server = Proc([sys.executable, "-m", "support.http_server", str(port)],
                  env={"PYTHONPATH": str(GOLDEN.parent)})
    server.wait_line("listening")
    base = f"http://127.0.0.1:{port}"

    def traffic() -> None:
        with httpx.Client(base_url=base) as client:
            client.get("/json?q=1")
            client.post("/echo", json={"item": 7})
            client.get("/chunked")
            client.get("/gzip")
            client.head("/head")
            client.get("/nobody")
            client.get("/status/503")
        subprocess.run(["curl", "-s", "-o", "/dev/null", f"{base}/status/404"], check=True)
    try:
        yield [Scenario(GOLDEN / "http1" / "basic.pcap", f"tcp port {port}", traffic)]
    finally:
        server.stop()


if __name__ == "__main__":
    record_all(scenarios)
