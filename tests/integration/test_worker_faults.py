"""Faults that must never stop capture silently: a disk smaller than the limit, a capture
process that dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from pathlib import Path

import httpx
import pytest

from support.processes import wait_for
from support.tmpfs import small_tmpfs

pytestmark = pytest.mark.root


def test_full_disk_degrades_capture_but_never_stops_it(start_worker, http_server, tmp_path):
    """The storage dir is on a real 8 MiB tmpfs that another program fills: the flood meets a
    full disk long before the limit, capture goes on (the store evicts to make room), entries
    after the flood are indexed, and /status says what the disk refused. (A limit above the
    filesystem's room is refused at start, worker/store/capacity.py: the disk fills from
    elsewhere.)"""
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}",
                              "--storage-limit", "6MB", storage_dir=disk / "store")
        with open(disk / "filler", "wb") as filler:     # another program: ~3 MB left
            filler.write(b"\0" * 5_000_000)
        pushed = 0
        # While the disk is full a read may find no room for SQLite's WAL index to grow: /status
        # and /entries answer a 503 saying so, never a 500; the store frees room and the next
        # read answers.
        refusals: list[str] = []

        def refused_write() -> dict | None:
            answer = worker.get("/status")
            if answer.status_code == 503:
                refusals.append(answer.json()["detail"])
                return None
            assert answer.status_code == 200, answer.text
            status = answer.json()
            return status if status["store"]["write_errors"] else None
        with httpx.Client(base_url=f"http://127.0.0.1:{http_server}") as client:
            while pushed < 30_000_000:                 # ~10x the room left
                pushed += len(client.get("/bytes/400000").content)
            status = wait_for(refused_write, what="the disk to refuse a write")
            capture = status["capture"]
            assert capture["running"]
            assert capture["degraded"]
            assert "the disk refused" in capture["degraded_reasons"][0]
            assert "No space left on device" in capture["degraded_reasons"][0]
            assert status["store"]["evicted_for_space"] > 0
            for n in range(5):
                client.get(f"/after-full/{n}")

        def after_flood() -> list[dict] | None:
            answer = worker.get("/entries", params={"q": 'request.path.startsWith("/after-full")'})
            if answer.status_code == 503:
                refusals.append(answer.json()["detail"])
                return None
            assert answer.status_code == 200, answer.text
            found = [json.loads(line) for line in answer.text.splitlines() if line]
            return found if len(found) == 5 else None
        try:
            entries = wait_for(after_flood, timeout=60, what="the 5 requests after the flood")
        except AssertionError as error:   # say what the worker saw (a CI run is not rerun)
            raise AssertionError(f"{error}\n/status: {worker.get('/status').text[:4000]}\n"
                                 f"worker log: {worker.output[-4000:]}") from None
        assert all(r.startswith("the store cannot answer now: ") for r in refusals), refusals
        assert [e["request"]["path"] for e in entries] == [f"/after-full/{n}" for n in range(4, -1, -1)]
        assert worker.status()["capture"]["running"]
        worker.stop()


def test_healthz_fails_once_the_capture_process_is_dead(start_worker, tmp_path):
    worker = start_worker("--iface", "lo", "--bpf", "tcp port 9", storage_dir=tmp_path / "s")
    health = worker.url.removesuffix("/api/v1") + "/healthz"
    assert httpx.get(health).text == "ok\n"
    children = subprocess.run(["pgrep", "-P", str(worker.process.pid)], capture_output=True,
                              text=True).stdout.split()
    # the capture child is forked; the others are the dissection shards' fork server (forked
    # too, named shark-forksrv) and multiprocessing's resource tracker
    child = [pid for pid in children
             if b"multiprocessing" not in Path(f"/proc/{pid}/cmdline").read_bytes()
             and Path(f"/proc/{pid}/comm").read_bytes().strip() != b"shark-forksrv"]
    assert len(child) == 1
    os.kill(int(child[0]), signal.SIGKILL)
    answer = wait_for(lambda: (r := httpx.get(health)).status_code == 503 and r,
                      what="/healthz to fail")
    assert answer.text.startswith("capture process exited ")
    assert "(exit code -9) and was not restarted" in answer.text
    assert answer.text.count("\n") == 1
    status = worker.status()
    assert status["capture"]["running"] is False
    assert status["capture"]["degraded_reasons"] == [
        "the capture process is not running (exit code -9): nothing is captured"]
