"""A worker fed a capture of every protocol answers KFL queries as the dissectors say.

All golden captures (real clients against real servers) are merged into one file with
mergecap and replayed through `python -m worker --pcap`; every query's answer over the API
must equal the query applied to the entries each capture gives on its own.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from shark import kfl
from support.golden import GOLDEN, dissect_capture
from support.processes import wait_for

QUERIES = [
    "redis",
    'redis and request.command == "GET"',
    "dns and status != 0",
    'dns and response.rcode == "NXDOMAIN"',
    "postgres and response.error != null",
    'postgres and response.error.code == "42P01" or postgres and response.error.code == "23505"',
    "mysql and response.error != null",
    'http2 and request.path.startsWith("/j")',
    "grpc and status != 0",
    'http and request.method == "POST"',
    "http and response.status >= 500",
    "amqp",
    'mqtt and request.topic.contains("/")',
    "kafka",
    "tls and response.error != null",
    "tcp or udp",
    "websocket",
    "elapsed_ms > 1 and not dns",
]


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    captures = sorted(GOLDEN.glob("*/*.pcap"))
    assert len(captures) >= 20
    path = tmp_path_factory.mktemp("all") / "all.pcapng"
    subprocess.run(["mergecap", "-w", str(path), *map(str, captures)], check=True)
    expected = [entry for capture in captures for entry in dissect_capture(capture)]
    return path, expected


def test_every_protocol_through_one_worker(start_worker, merged):
    path, expected = merged
    protocols = Counter(e["protocol"] for e in expected)
    assert {"http", "http2", "grpc", "websocket", "dns", "redis", "kafka", "amqp", "postgres",
            "mysql", "mqtt", "tls", "tcp", "udp"} <= set(protocols)
    worker = start_worker("--pcap", str(path))
    wait_for(lambda: (s := worker.status())["capture"]["sources"][0]["finished"]
             and s["dissection"]["caught_up"], what="the replay", timeout=60)
    entries = wait_for(lambda: (e := worker.entries(limit=100000)) and len(e) >= len(expected)
                       and e, what=f"{len(expected)} entries", timeout=60)
    assert Counter(e["protocol"] for e in entries) == protocols

    def key(entry: dict) -> tuple:
        return (entry["protocol"], entry["summary"], str(entry["status"]), round(entry["ts"], 6))
    for query in QUERIES:
        want = sorted(key(e) for e in expected if kfl.compile(query)(e))
        assert want, f"{query!r} matches nothing in the golden captures"
        got = sorted(key(e) for e in worker.entries(q=query, limit=100000))
        assert got == want, query


def test_detail_of_every_protocol(start_worker, merged):
    path, expected = merged
    worker = start_worker("--pcap", str(path))
    entries = wait_for(lambda: (e := worker.entries(limit=100000)) and len(e) >= len(expected)
                       and e, what=f"{len(expected)} entries", timeout=60)
    seen: set[str] = set()
    for entry in entries:
        if entry["protocol"] in seen:
            continue
        seen.add(entry["protocol"])
        response = worker.get(f"/entries/{entry['id']}")
        assert response.status_code == 200, (entry["protocol"], response.text)
        detail = response.json()
        assert detail["id"] == entry["id"] and detail["summary"] == entry["summary"]
    grpc = next(e for e in entries if e["protocol"] == "grpc" and e["response"])
    body = worker.get(f"/entries/{grpc['id']}").json()["response"].get("body")
    assert body is not None and body["encoding"] == "protobuf"
