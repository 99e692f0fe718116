"""Real processes for integration tests: the worker and the HTTP test server."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
# The installation's token of tests whose workers and hub serve beyond loopback (namespaces as
# nodes), where a token is required (shark/auth.py).
TEST_TOKEN = "shark-tests-9c1f3e2d7b6a5f4e3d2c1b0a9f8e7d6c"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], T | None], timeout: float = 20.0, what: str = "condition",
             interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Proc:
    """A child process whose output is collected in the background (never blocks on a pipe)."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
                 prefix: Sequence[str] = (), stdin: bool = False) -> None:
        self.argv = [*prefix, *argv]
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.PIPE if stdin else None,
            env={**os.environ, **(env or {})}, cwd=ROOT, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)

        def find() -> re.Match[str] | None:
            exited = self.process.poll() is not None
            if exited:
                self._reader.join(5)   # everything it printed is in self.lines now
            for line in list(self.lines):
                if match := regex.search(line):
                    return match
            if exited:
                raise AssertionError(f"{self.argv} exited {self.process.returncode}:\n{self.output}")
            return None
        return wait_for(find, timeout, f"{pattern!r} from {self.argv}")

    def send(self, text: str, close: bool = False) -> None:
        """Write to the standard input (a Proc made with stdin=True); close it after."""
        assert self.process.stdin is not None, "made without stdin=True"
        self.process.stdin.write(text)
        self.process.stdin.flush()
        if close:
            self.process.stdin.close()

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.process.wait(5)
        self._reader.join(5)
        if self.process.stdin is not None:
            self.process.stdin.close()
        return code


class Worker(Proc):
    """`python -m worker` with a fresh API port; `url` is its /api/v1 base. With `token` it asks
    for it (and `get` sends it); without, it runs without one (loopback only), whatever
    SHARK_TOKEN the test run itself has."""

    def __init__(self, args: Sequence[str], storage_dir: Path, *, prefix: Sequence[str] = (),
                 node: str = "test-node", listen_host: str = "127.0.0.1", token: str | None = None,
                 port: int = 0) -> None:
        super().__init__([sys.executable, "-m", "worker", *args, "--storage-dir", str(storage_dir),
                          "--listen", f"{listen_host}:{port}", "--node", node], prefix=prefix,
                         env={"SHARK_TOKEN": token or ""})
        match = self.wait_line(r"serving on (http://\S+/api/v1)")
        self.url = match.group(1)
        self.node = node
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return httpx.get(self.url + path, timeout=30, headers=headers, **kwargs)

    def entries(self, **params: Any) -> list[dict[str, Any]]:
        import json
        response = self.get("/entries", params=params)
        response.raise_for_status()
        return [json.loads(line) for line in response.text.splitlines() if line]

    def status(self) -> dict[str, Any]:
        return self.get("/status").json()
