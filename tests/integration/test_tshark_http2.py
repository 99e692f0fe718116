"""Cross-check with tshark on the HTTP/2 and gRPC golden captures: HEADERS frames, :path,
:status and grpc-status agree with our entries.

tshark quirks (4.0): several HTTP/2 frames of one TCP segment come as one row, their values
joined by the aggregator (`-E aggregator=|` here, since header values hold commas); a port
that is not 80/443 needs `-d tcp.port==N,http2`, except after an HTTP/1.1 `Upgrade: h2c`,
which its http dissector follows on its own (with -d the HTTP/1.1 part is lost). There is no
grpc.status field: grpc-status is read from http2.header.name / http2.header.value.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from support.golden import GOLDEN, dissect_capture


H2 = GOLDEN / "http2"


def tshark_headers(path: Path, port: int | None) -> list[list[tuple[str, str]]]:
    """The header list of every HEADERS frame, in capture order."""
    argv = ["tshark", "-r", str(path), "-Y", "http2.type==1", "-E", "aggregator=|",
            "-T", "fields", "-e", "http2.header.name", "-e", "http2.header.value"]
    if port is not None:
        argv[3:3] = ["-d", f"tcp.port=={port},http2"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    blocks: list[list[tuple[str, str]]] = []
    for line in out.splitlines():
        names, _, values = line.partition("\t")
        pairs = list(zip(names.split("|"), values.split("|")))
        # One row may hold several HEADERS frames: a new block starts at each pseudo-header
        # run that follows a regular header.
        block: list[tuple[str, str]] = []
        for name, value in pairs:
            if name.startswith(":") and block and not block[-1][0].startswith(":"):
                blocks.append(block)
                block = []
            block.append((name, value))
        if block:
            blocks.append(block)
    return blocks


def compare(entries: list[dict], blocks: list[list[tuple[str, str]]]) -> None:
    theirs_paths = Counter(v for b in blocks for n, v in b if n == ":path")
    theirs_status = Counter(v for b in blocks for n, v in b if n == ":status")
    theirs_grpc = Counter(v for b in blocks for n, v in b if n == "grpc-status")
    ours = [e for e in entries if e["protocol"] in ("http2", "grpc")]
    ours_paths: Counter[str] = Counter()
    for e in ours:
        if "path" in e["request"]:
            query = "&".join(f"{k}={v}" for k, vs in e["request"].get("query", {}).items()
                             for v in vs)
            ours_paths[e["request"]["path"] + (f"?{query}" if query else "")] += 1
    assert ours_paths == theirs_paths
    assert Counter(str(e["response"]["status"]) for e in ours) == theirs_status
    assert Counter(str(e["status"]) for e in ours if e["protocol"] == "grpc") == theirs_grpc


def server_port(entries: list[dict]) -> int:
    return entries[0]["dst"]["port"]


@pytest.mark.parametrize("name", ["h2c", "grpc"])
def test_matches_tshark(name: str) -> None:
    entries = dissect_capture(H2 / f"{name}.pcap")
    blocks = tshark_headers(H2 / f"{name}.pcap", server_port(entries))
    requests = [b for b in blocks if any(n == ":method" for n, _ in b)]
    assert len(requests) == len(entries)
    compare(entries, blocks)


def test_upgrade_matches_tshark() -> None:
    entries = dissect_capture(H2 / "upgrade.pcap")
    assert [e["protocol"] for e in entries] == ["http", "http2", "http2"]
    compare(entries, tshark_headers(H2 / "upgrade.pcap", None))
