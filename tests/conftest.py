from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import Proc, Worker, free_port

# Each test gives its workers, hubs and CLI runs the token it means them to have; one exported in
# the shell that runs the suite must not leak into all of them.
os.environ.pop("SHARK_TOKEN", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root for raw capture and network namespaces")
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def http_server() -> Iterator[int]:
    """A real HTTP/1.1 server on 127.0.0.1; yields its port."""
    port = free_port()
    server = Proc([sys.executable, "-m", "support.http_server", str(port)],
                  env={"PYTHONPATH": str(Path(__file__).parent)})
    server.wait_line(r"listening")
    yield port
    server.stop()


@pytest.fixture
def tap_local(tmp_path: Path, http_server: int) -> Iterator[tuple[str, dict[str, str]]]:
    """`kubectl shark tap --local` on lo capturing only the http_server's port; yields the hub's
    URL and the environment (its state dir, with the token) hub-facing commands need."""
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    port = free_port()
    proc = Proc([sys.executable, "-m", "shark.cli", "tap", "--local", "--no-open", "-i", "lo",
                 "--bpf", f"tcp port {http_server}", "--proxy-port", str(port)], env=env)
    proc.wait_line(rf"UI and API at http://127\.0\.0\.1:{port}")
    yield f"http://127.0.0.1:{port}", env
    proc.stop()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    """Start workers with given arguments; all are stopped at the end of the test."""
    workers: list[Worker] = []

    def start(*args: str, storage_dir: Path | None = None, **kwargs) -> Worker:
        worker = Worker(list(args), storage_dir or tmp_path / f"store{len(workers)}", **kwargs)
        workers.append(worker)
        return worker
    yield start
    for worker in workers:
        worker.stop()
