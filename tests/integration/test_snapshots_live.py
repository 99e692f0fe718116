"""`kubectl shark snapshot` against a real `tap --local`: a window of real HTTP traffic saved by
the hub, listed, downloaded as a pcap tshark reads, and there again after tap restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.processes import Proc, free_port, wait_for

pytestmark = pytest.mark.root


def shark(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shark.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def start_tap(env: dict[str, str], http_server: int, port: int) -> Proc:
    proc = Proc([sys.executable, "-m", "shark.cli", "tap", "--local", "--no-open", "-i", "lo",
                 "--bpf", f"tcp port {http_server}", "--proxy-port", str(port)], env=env)
    proc.wait_line(rf"UI and API at http://127\.0\.0\.1:{port}")
    return proc


def test_snapshot_saved_from_real_traffic_outlives_a_restart(tmp_path: Path, http_server: int, start_worker):
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    port = free_port()
    hub = f"http://127.0.0.1:{port}"
    tap = start_tap(env, http_server, port)
    try:
        for path in ("/json?n=0", "/status/503", "/json?n=1"):
            httpx.get(f"http://127.0.0.1:{http_server}{path}", timeout=10)

        def three() -> bool | None:
            r = shark("query", f"http and dst.port == {http_server}", "-o", "json", "--hub", hub, env=env)
            return len(r.stdout.splitlines()) >= 3 or None
        wait_for(three, timeout=30, what="3 entries")
        made = shark("snapshot", "create", "--since", "10m", "-q", "status >= 500", "--name", "errors",
                     "--hub", hub, env=env)
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith("saved snapshot errors: 1 entries")
        bad = shark("snapshot", "create", "--name", "errors", "--hub", hub, env=env)
        assert bad.returncode == 1 and "exists" in bad.stderr
    finally:
        tap.signal(signal.SIGINT)
        assert tap.process.wait(20) == 0, tap.output

    tap = start_tap(env, http_server, port)          # the same state dir: a new hub process
    try:
        listed = shark("snapshot", "list", "-o", "json", "--hub", hub, env=env)
        assert listed.returncode == 0, listed.stderr
        [row] = json.loads(listed.stdout)["snapshots"]
        assert (row["name"], row["entries"], row["q"]) == ("errors", 1, "status >= 500")
        out = tmp_path / "errors.pcap"
        got = shark("snapshot", "download", "errors", "-o", str(out), "--hub", hub, env=env)
        assert got.returncode == 0, got.stderr
        read = subprocess.run(["tshark", "-r", str(out), "-Y", "http.request", "-T", "fields", "-e", "http.request.uri"],
                              capture_output=True, text=True, timeout=60)
        assert read.stdout.split() == ["/status/503"], read.stderr     # only the matching stream's packets
        # the pcap opens again as live traffic does (what `tap --local --pcap FILE` runs)
        replay = start_worker("--pcap", str(out))
        replayed = wait_for(lambda: replay.entries() or None, timeout=30, what="the replayed entry")
        assert [(e["summary"], e["status"]) for e in replayed] == [("GET /status/503", 503)]
        entries = tmp_path / "errors.json"
        assert shark("snapshot", "download", "errors", "--entries", "-o", str(entries), "--hub", hub,
                     env=env).returncode == 0
        assert [e["status"] for e in json.loads(entries.read_text())["entries"]] == [503]
        assert shark("snapshot", "delete", "errors", "--hub", hub, env=env).returncode == 0
        gone = shark("snapshot", "download", "errors", "--hub", hub, env=env)
        assert gone.returncode == 1 and "404" in gone.stderr
    finally:
        tap.stop()
