"""`kubectl shark tap --local` as a real process: a worker and the hub as its children,
real HTTP traffic on lo, and the hub-facing commands run against it."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.processes import Proc, free_port, wait_for

pytestmark = pytest.mark.root


def shark(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shark.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def tap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_server: int):
    # the CLI runs below find the token where tap put it: the same user, the same state dir
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    port = free_port()
    # only the test server's traffic: lo carries whatever else runs on this machine
    proc = Proc([sys.executable, "-m", "shark.cli", "tap", "--local", "--no-open", "-i", "lo",
                 "--bpf", f"tcp port {http_server}", "--proxy-port", str(port)])
    proc.wait_line(rf"UI and API at http://127\.0\.0\.1:{port}")
    yield proc, f"http://127.0.0.1:{port}"
    proc.stop()


def test_tap_local_serves_traffic_to_the_commands_and_stops_on_ctrl_c(tap, http_server, tmp_path):
    proc, hub = tap
    kids = children(proc.process.pid)
    assert len(kids) == 2, proc.output
    assert (tmp_path / "state" / "shark" / "worker").is_dir()
    assert (tmp_path / "state" / "shark" / "logs" / "hub.log").is_file()

    for number in range(3):
        httpx.get(f"http://127.0.0.1:{http_server}/json?n={number}", timeout=10)

    def ours() -> list[dict] | None:
        r = shark("query", "http", "-o", "json", "--hub", hub)
        assert r.returncode == 0, r.stderr
        found = [e for e in map(json.loads, r.stdout.splitlines())
                 if e["dst"]["port"] == http_server]
        return found if len(found) >= 3 else None
    found = wait_for(ours, timeout=30, what="3 entries from `query http`")
    assert sorted(e["summary"] for e in found) == [f"GET /json?n={n}" for n in range(3)]
    # our own traffic (CLI -> hub, hub -> worker) is left out of the capture (lo also carries
    # other tests' traffic: only ours is looked for)
    everything = shark("query", "-o", "json", "--limit", "100000", "--hub", hub)
    ports = {e["dst"]["port"] for e in map(json.loads, everything.stdout.splitlines())}
    worker_port = int(proc.wait_line(r"worker ready at http://127\.0\.0\.1:(\d+)").group(1))
    assert http_server in ports and not ports & {worker_port, int(hub.rsplit(":", 1)[1])}, everything.stdout

    table = shark("query", f"http and dst.port == {http_server}", "--hub", hub)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].startswith("TIME")
    assert len(table.stdout.splitlines()) == 4

    bad = shark("query", "http and ==", "--hub", hub)
    assert bad.returncode == 1
    assert bad.stderr.startswith("kubectl-shark: query: column 10: ")

    pcap = tmp_path / "out.pcap"
    r = shark("pcapdump", "-o", str(pcap), "--since", "5m", "--hub", hub)
    assert r.returncode == 0, r.stderr
    read = subprocess.run(["tshark", "-r", str(pcap), "-Y", f"tcp.port == {http_server} && http.request",
                           "-T", "fields", "-e", "http.request.uri"], capture_output=True, text=True, timeout=60)
    assert read.returncode == 0, read.stderr
    assert sorted(read.stdout.split()) == ["/json?n=0", "/json?n=1", "/json?n=2"]

    har_file = tmp_path / "out.har"
    r = shark("export", "--format", "har", "-o", str(har_file), "-q", f"dst.port == {http_server}",
              "--hub", hub)
    assert r.returncode == 0, r.stderr
    har = json.loads(har_file.read_text())
    assert har["log"]["version"] == "1.2"
    assert len(har["log"]["entries"]) == 3
    assert all(e["response"]["status"] == 200 for e in har["log"]["entries"])

    r = shark("status", "--hub", hub)
    assert r.returncode == 0, r.stderr
    assert "workers 1/1 ok" in r.stdout

    proc.signal(signal.SIGINT)
    assert proc.process.wait(20) == 0, proc.output
    proc._reader.join(5)
    assert "stopped hub and worker" in proc.output
    assert not [pid for pid in kids if alive(pid)]


def test_tap_local_makes_the_token_once_and_hands_it_over_out_of_sight(tap, tmp_path):
    proc, hub = tap
    token_file = tmp_path / "state" / "shark" / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) & 0o077 == 0 or token_file.parent.owner() == "root"
    token = token_file.read_text().strip()
    assert len(token) >= 40
    login = proc.wait_line(r"log in to the UI at (\S+)").group(1)
    assert login == f"{hub}/?token={token}"
    # children get it in their environment, never on a command line (`ps` shows those to everyone)
    for pid in children(proc.process.pid):
        assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert f"SHARK_TOKEN={token}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert httpx.get(f"{hub}/api/v1/status", timeout=10).status_code == 401
    assert httpx.get(f"{hub}/api/v1/status", headers={"Authorization": f"Bearer {token}"},
                     timeout=10).status_code == 200
    printed = shark("token", "--local")
    assert printed.returncode == 0 and printed.stdout == token + "\n"
    # the same user's next tap uses the same token (a browser stays logged in)
    proc.stop()
    again = Proc([sys.executable, "-m", "shark.cli", "tap", "--local", "--no-open", "-i", "lo",
                  "--bpf", "tcp port 9", "--proxy-port", hub.rsplit(":", 1)[1], "--redact-field", "pin",
                  "--dissect-memory", "128MiB"])
    try:
        assert again.wait_line(r"log in to the UI at (\S+)").group(1) == login
        # tap's redaction and dissection memory options reach its worker
        worker_cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                           for pid in children(again.process.pid)]
        pairs = [args[i:i + 2] for args in worker_cmdlines for i in range(len(args))]
        assert [b"--redact-field", b"pin"] in pairs and [b"--dissect-memory", b"128MiB"] in pairs
    finally:
        again.stop()
    # SHARK_TOKEN overrides the file for tap and the CLI alike
    port = free_port()
    chosen = Proc([sys.executable, "-m", "shark.cli", "tap", "--local", "--no-open", "-i", "lo",
                   "--bpf", "tcp port 9", "--proxy-port", str(port)], env={"SHARK_TOKEN": "chosen-token-abc"})
    try:
        assert chosen.wait_line(r"log in to the UI at (\S+)").group(1) == f"http://127.0.0.1:{port}/?token=chosen-token-abc"
        denied = shark("status", "--hub", f"http://127.0.0.1:{port}")      # the file's token: refused
        assert denied.returncode == 1 and denied.stderr.startswith("kubectl-shark: the hub refused the token: the "
                                                                   "token is not this hub's")
        assert "SHARK_TOKEN (not set); " in denied.stderr
        assert shark("status", "--hub", f"http://127.0.0.1:{port}", env={"SHARK_TOKEN": "chosen-token-abc"}
                     ).returncode == 0
    finally:
        chosen.stop()
    assert token_file.read_text().strip() == token


def test_sigterm_stops_both_children(tap):
    proc, hub = tap
    kids = children(proc.process.pid)
    assert len(kids) == 2
    proc.signal(signal.SIGTERM)
    assert proc.process.wait(20) == 0, proc.output
    proc._reader.join(5)
    assert "stopped hub and worker" in proc.output
    assert not [pid for pid in kids if alive(pid)]


def test_proxy_port_taken_is_one_line_with_a_hint(tap, tmp_path):
    _, hub = tap
    port = hub.rsplit(":", 1)[1]
    r = shark("tap", "--local", "--no-open", "--proxy-port", port, "--state-dir", str(tmp_path / "other"))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"kubectl-shark: cannot listen on 127.0.0.1:{port}: Address already in use",
        "hint: another `kubectl shark tap` may be running (try `kubectl shark status`); "
        "stop it or choose another port with --proxy-port"]


def test_a_child_failing_at_start_is_reported_in_one_line(tmp_path):
    r = shark("tap", "--local", "--no-open", "-i", "nosuch0", "--proxy-port", str(free_port()),
              "--state-dir", str(tmp_path))
    assert r.returncode == 1
    assert "kubectl-shark: worker failed to start: unknown interface 'nosuch0'" in r.stderr
    assert "Traceback" not in r.stderr


def test_hub_down(tmp_path):
    r = shark("status", "--hub", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert "cannot reach the hub" in r.stderr and "kubectl shark tap --local" in r.stderr


def test_tap_local_replays_a_pcap_file(tmp_path):
    golden = Path(__file__).resolve().parents[1] / "golden" / "http1" / "basic.pcap"
    port = free_port()
    proc = Proc([sys.executable, "-m", "shark.cli", "tap", "--local", "--no-open", "--pcap", str(golden),
                 "--proxy-port", str(port), "--state-dir", str(tmp_path / "state")])
    try:
        proc.wait_line(rf"replaying .*basic\.pcap; UI and API at http://127\.0\.0\.1:{port}")
        # a state dir of its own: the CLI is handed its token (README, "The token")
        token = shark("token", "--local", "--state-dir", str(tmp_path / "state")).stdout.strip()

        def entries() -> list[dict] | None:
            r = shark("query", "http", "-o", "json", "--hub", f"http://127.0.0.1:{port}", env={"SHARK_TOKEN": token})
            assert r.returncode == 0, r.stderr
            return [json.loads(line) for line in r.stdout.splitlines()] or None
        assert all(e["protocol"] == "http" for e in wait_for(entries, timeout=30, what="replayed entries"))
        assert (tmp_path / "state" / "replay").is_dir()
    finally:
        assert proc.stop() == 0, proc.output
