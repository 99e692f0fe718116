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


def test_snapshot_saved_from_real_traffic_outlives_a_restart(tmp_path: Path, http_server: int):
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
        assert (row["name"], row["entries"], row["details"], row["q"]) == ("errors", 1, 1, "status >= 500")
        # its entry opens in full from the snapshot (the body the worker dissected when it was saved)
        auth = {"Authorization": f"Bearer {shark('token', '--local', env=env).stdout.strip()}"}
        [saved] = httpx.get(f"{hub}/api/v1/snapshots/errors/entries", params={"q": "status_code == 503"},
                            headers=auth, timeout=10).json()["entries"]
        full = httpx.get(f"{hub}/api/v1/snapshots/errors/entries/{saved['id']}", headers=auth, timeout=10).json()
        assert full["response"]["body"]["data"] == "status 503\n"
        out = tmp_path / "errors.pcap"
        got = shark("snapshot", "download", "errors", "-o", str(out), "--hub", hub, env=env)
        assert got.returncode == 0, got.stderr
        read = subprocess.run(["tshark", "-r", str(out), "-Y", "http.request", "-T", "fields", "-e", "http.request.uri"],
                              capture_output=True, text=True, timeout=60)
        assert read.stdout.split() == ["/status/503"], read.stderr     # only the matching stream's packets
        # the downloaded pcap opens again with `tap --local --pcap FILE`, as docs/API.md says
        replay_env = {"XDG_STATE_HOME": str(tmp_path / "replay-state")}
        replay_port = free_port()
        replay = Proc([sys.executable, "-m", "shark.cli", "tap", "--local", "--no-open", "--pcap", str(out),
                       "--proxy-port", str(replay_port)], env=replay_env)
        try:
            replay.wait_line(rf"replaying .*errors\.pcap; UI and API at http://127\.0\.0\.1:{replay_port}")
            replay_hub = f"http://127.0.0.1:{replay_port}"

            def replayed() -> list[dict] | None:
                r = shark("query", "", "-o", "json", "--hub", replay_hub, env=replay_env)
                return [json.loads(line) for line in r.stdout.splitlines()] or None
            [entry] = wait_for(replayed, timeout=30, what="the replayed entry")
            assert (entry["summary"], entry["status"]) == ("GET /status/503", 503)
        finally:
            replay.stop()
        entries = tmp_path / "errors.json"
        assert shark("snapshot", "download", "errors", "--entries", "-o", str(entries), "--hub", hub,
                     env=env).returncode == 0
        assert [e["status"] for e in json.loads(entries.read_text())["entries"]] == [503]
        assert shark("snapshot", "delete", "errors", "--hub", hub, env=env).returncode == 0
        gone = shark("snapshot", "download", "errors", "--hub", hub, env=env)
        assert gone.returncode == 1 and "404" in gone.stderr
    finally:
        tap.stop()
