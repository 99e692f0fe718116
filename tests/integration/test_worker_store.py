"""The store under the worker: the cap holds under 5x its size, kill -9 recovery, rebuild."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from support.processes import wait_for

pytestmark = pytest.mark.root

LIMIT = 4_000_000


def segments(storage: Path) -> list[Path]:
    return sorted((storage / "pcap").glob("*.pcap"))


def segment_bytes(storage: Path) -> int:
    """Bytes of the segments there now (one evicted while summed counts as gone)."""
    total = 0
    for path in segments(storage):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def tshark_count(path: Path) -> int:
    result = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"],
                            capture_output=True, text=True)
    assert result.returncode == 0, (path, result.stderr)
    assert "cut short" not in result.stderr, (path, result.stderr)
    return len(result.stdout.split())


def test_cap_holds_while_five_times_the_limit_passes(start_worker, http_server, tmp_path):
    storage = tmp_path / "store"
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}",
                          "--storage-limit", "4MB", storage_dir=storage)
    pushed = 0
    largest = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{http_server}") as client:
        while pushed < 5 * LIMIT:
            pushed += len(client.get("/bytes/400000").content)
            on_disk = segment_bytes(storage)
            largest = max(largest, on_disk)
            assert on_disk <= LIMIT
        # A flood that outruns dissection is shed (counted); traffic after it is dissected.
        for n in range(5):
            client.get(f"/after-flood/{n}")
    status = wait_for(lambda: (s := worker.status())["dissection"]["caught_up"] and s,
                      what="dissection to catch up")
    store = status["store"]
    assert store["limit"] == LIMIT
    assert store["bytes"] <= LIMIT
    assert store["evicted_segments"] > 0
    assert largest > LIMIT // 2  # the store did fill up before evicting
    # Index rows of evicted segments went with them: what is left is found again.
    entries = worker.entries(limit=1000)
    assert 5 <= len(entries) < 5 + pushed // 400000
    assert [e["request"]["path"] for e in entries[:5]] == [f"/after-flood/{n}" for n in range(4, -1, -1)]
    dissection = status["dissection"]
    assert dissection["packets"] + dissection["shed_segments"] > 0
    assert dissection["packets"] <= store["packets_written"]
    oldest = entries[-1]
    detail = worker.get(f"/entries/{oldest['id']}")
    assert detail.status_code == 200, (detail.text, oldest["id"], worker.status()["store"],
                                       [p.name for p in segments(storage)])

    # Lowering the limit while running evicts at once.
    response = httpx.put(f"{worker.url}/config", json={"storage_limit": "2MiB"}, timeout=10)
    assert response.status_code == 200
    assert worker.status()["store"]["bytes"] <= 2 * 1024 * 1024
    worker.stop()
    total = 0
    for segment in segments(storage):
        total += segment.stat().st_size
        tshark_count(segment)
    assert total <= 2 * 1024 * 1024


def test_kill9_then_restart_serves_old_traffic(start_worker, http_server, tmp_path):
    storage = tmp_path / "store"
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", storage_dir=storage)
    with httpx.Client(base_url=f"http://127.0.0.1:{http_server}") as client:
        for n in range(5):
            client.get(f"/before/{n}")
    before = wait_for(lambda: (e := worker.entries()) and len(e) == 5 and e, what="5 entries")
    worker.signal(signal.SIGKILL)  # the whole process group: API process and capture child
    worker.process.wait(10)

    # A torn last packet, as if the crash came in the middle of a write.
    newest = segments(storage)[-1]
    with newest.open("ab") as handle:
        handle.write(b"\x01\x02\x03\x04\x05\x06\x07")
    restarted = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", storage_dir=storage)
    assert "cut a torn last packet (7 bytes" in restarted.output
    assert any("torn" in note for note in restarted.status()["notes"])
    after = restarted.entries()
    assert [e["id"] for e in after] == [e["id"] for e in before]
    detail = restarted.get(f"/entries/{before[0]['id']}").json()
    assert detail["request"]["path"] == "/before/4"
    assert detail["response"]["body"]["data"] == "hello\n"

    httpx.get(f"http://127.0.0.1:{http_server}/after")
    newest_entries = wait_for(lambda: (e := restarted.entries()) and len(e) == 6 and e,
                              what="the new entry")
    new_seq = int(newest_entries[0]["id"].split(":")[1])
    assert new_seq > max(int(e["id"].split(":")[1]) for e in before)
    restarted.stop()
    for segment in segments(storage):
        tshark_count(segment)


def test_corrupt_index_is_rebuilt_from_pcap(start_worker, http_server, tmp_path):
    storage = tmp_path / "store"
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", storage_dir=storage)
    for n in range(3):
        httpx.get(f"http://127.0.0.1:{http_server}/item/{n}")
    wait_for(lambda: len(worker.entries()) == 3, what="3 entries")
    worker.stop()
    index = storage / "index.sqlite"
    index.write_bytes(b"garbage" * 1000)
    for leftover in (storage / "index.sqlite-wal", storage / "index.sqlite-shm"):
        leftover.unlink(missing_ok=True)
    restarted = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", storage_dir=storage)
    entries = wait_for(lambda: (e := restarted.entries()) and len(e) == 3 and e,
                       what="3 entries re-dissected from PCAP")
    assert sorted(e["request"]["path"] for e in entries) == ["/item/0", "/item/1", "/item/2"]
    assert any("rebuil" in note for note in restarted.status()["notes"])


def test_capture_child_never_outlives_a_killed_worker(start_worker, tmp_path):
    import os
    import subprocess as sp
    worker = start_worker("--iface", "lo", "--bpf", "tcp port 9", "--dissect-shards", "2",
                          storage_dir=tmp_path / "s")
    children = sp.run(["pgrep", "-P", str(worker.process.pid)], capture_output=True,
                      text=True).stdout.split()
    assert len(children) >= 1   # capture, and the dissection shards' fork server
    shards = wait_for(lambda: (s := worker.status()["dissection"]["shards"]) and all(x["running"] for x in s)
                      and [x["pid"] for x in s], what="the dissection shards to run")
    children += [str(pid) for pid in shards]   # the fork server's children
    os.kill(worker.process.pid, signal.SIGKILL)   # the API process only, not its group
    worker.process.wait(10)

    def survivors() -> list[str]:
        """The children still running, as "pid state cmdline". An exited child that nobody
        has reaped yet (a zombie, state Z: reparented to an init that reaps late) holds no
        interface, store or port, so it counts as gone."""
        alive = []
        for child in children:
            try:
                stat = Path(f"/proc/{child}/stat").read_text()
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            except (FileNotFoundError, ProcessLookupError):
                continue
            state = stat.rsplit(")", 1)[1].split()[0]
            if state != "Z":
                alive.append(f"{child} {state} {cmdline.decode(errors='replace')[:120]}")
        return alive
    try:
        wait_for(lambda: not survivors(), what="capture, fork server and shards to exit after "
                 "their parent was killed")
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; still running: {survivors()}") from None
    # and the store is free for a new worker at once
    start_worker("--iface", "lo", "--bpf", "tcp port 9", storage_dir=tmp_path / "s")


def test_sigterm_stops_cleanly(start_worker, tmp_path):
    import os
    worker = start_worker("--iface", "lo", "--bpf", "tcp port 9", storage_dir=tmp_path / "s")
    os.kill(worker.process.pid, signal.SIGTERM)   # as kubelet or systemd would
    assert worker.process.wait(15) == 0
    worker.wait_line("worker stopped", timeout=5)
