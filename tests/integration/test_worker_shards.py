"""--dissect-shards on lo: a shard process killed is seen in /status, started again, and the
worker goes on indexing."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from support.processes import wait_for

pytestmark = pytest.mark.root


def requests(base: str, tag: str, count: int) -> None:
    for number in range(count):   # a connection each: flows (client ports) spread over the shards
        with httpx.Client(base_url=base) as client:
            client.get(f"/{tag}/{number}")


def paths(worker, tag: str) -> set[str]:
    return {e["request"]["path"] for e in worker.entries(q=f'request.path.startsWith("/{tag}/")', limit=500)}


def test_killed_shard_is_reported_and_started_again(start_worker, http_server):
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", "--dissect-shards", "2")
    base = f"http://127.0.0.1:{http_server}"
    requests(base, "before", 20)
    wait_for(lambda: len(paths(worker, "before")) == 20, what="20 entries before the kill")
    shards = worker.status()["dissection"]["shards"]
    assert [s["shard"] for s in shards] == [0, 1]
    assert all(s["running"] and s["restarts"] == 0 and s["entries"] > 0 for s in shards)
    victim = shards[1]["pid"]

    os.kill(victim, signal.SIGKILL)
    restarted = wait_for(lambda: (s := worker.status()["dissection"]["shards"][1])["restarts"] == 1
                         and s["running"] and s,
                         what="the killed shard started again", timeout=30)
    assert restarted["pid"] != victim
    assert "SIGKILL" in restarted["last_failure"]
    assert "lost" in restarted["last_failure"]

    # Names the hub gives now reach every shard, the restarted one too.
    names = {"127.0.0.1": {"name": "web-1", "namespace": "shop", "kind": "pod"}}
    httpx.put(f"{worker.url}/targets", json={"ips": [], "names": names}, timeout=10).raise_for_status()
    requests(base, "after", 20)
    wait_for(lambda: len(paths(worker, "after")) == 20, what="20 entries after the kill")
    after = worker.entries(q='request.path.startsWith("/after/")', limit=500)
    assert {e["dst"]["name"] for e in after} == {"web-1"}
    status = worker.status()
    assert status["dissection"]["shards"][1]["entries"] > 0   # the new process dissects its flows
    ids = [int(e["id"].rpartition(":")[2]) for e in worker.entries(limit=500)]
    assert len(ids) == len(set(ids)) == 40


def test_sigterm_to_the_process_group_stops_the_shards_in_order(start_worker, http_server):
    """kubectl delete / Ctrl-C signal the whole group: the shards must not die first and be
    started again by the merge as failed ones while the worker shuts down."""
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", "--dissect-shards", "2")
    requests(f"http://127.0.0.1:{http_server}", "before", 4)
    wait_for(lambda: len(paths(worker, "before")) == 4, what="4 entries")
    pids = [s["pid"] for s in worker.status()["dissection"]["shards"]]
    assert worker.stop() == 0
    assert "started again" not in worker.output and "exited with code" not in worker.output, worker.output
    for pid in pids:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what=f"shard {pid} gone", timeout=10)
