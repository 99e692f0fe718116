"""Cross-check with a peer: on the same pcap, the worker's HTTP pairs match tshark's."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from support.processes import Proc, wait_for

pytestmark = pytest.mark.root


def make_traffic(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base) as client:  # keep-alive
        for n in range(20):
            client.get(f"/items/{n}")
        client.post("/echo", content=b"x" * 5000, headers={"Content-Type": "text/plain"})
        client.get("/chunked")
        client.get("/gzip")
        client.head("/head")
        client.get("/nobody")
        for status in (301, 404, 500, 503):
            client.get(f"/status/{status}")
    for n in range(10):  # one connection each
        httpx.get(f"{base}/fresh/{n}")
    # Pipelining: three requests in one write, then read the three responses.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"".join(b"GET /pipe/%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(3)))
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b"HTTP/1.1 200") < 3 and time.monotonic() < deadline:
            received += sock.recv(65536)


def tshark_fields(path: Path, port: int, display_filter: str, *fields: str) -> list[tuple[str, ...]]:
    argv = ["tshark", "-r", str(path), "-d", f"tcp.port=={port},http", "-Y", display_filter,
            "-T", "fields"]
    for field in fields:
        argv += ["-e", field]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rows: list[tuple[str, ...]] = []
    for line in out.splitlines():
        if line.strip():
            # Several messages in one frame (pipelining) come as comma-joined values per field.
            columns = [value.split(",") for value in line.split("\t")]
            rows.extend(zip(*columns))
    return rows


def test_worker_http_pairs_match_tshark(start_worker, http_server, tmp_path):
    capture = tmp_path / "peer.pcap"
    tcpdump = Proc(["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-w", str(capture),
                    f"tcp port {http_server}"])
    tcpdump.wait_line("listening on")
    make_traffic(http_server)
    wait_for(lambda: capture.exists() and capture.stat().st_size > 0, what="tcpdump's file")
    sizes: list[int] = []

    def settled() -> bool:
        sizes.append(capture.stat().st_size)
        return len(sizes) > 3 and sizes[-1] == sizes[-4]
    wait_for(settled, interval=0.2, what="tcpdump to write everything")
    tcpdump.signal(signal.SIGINT)
    tcpdump.process.wait(10)

    requests = tshark_fields(capture, http_server, "http.request", "http.request.method",
                             "http.request.uri")
    responses = tshark_fields(capture, http_server, "http.response", "http.response.code",
                              "http.response_for.uri")
    assert len(requests) == 42 and len(responses) == 42

    worker = start_worker("--pcap", str(capture))
    wait_for(lambda: (s := worker.status())["capture"]["sources"][0]["finished"]
             and s["dissection"]["caught_up"], what="the replay to finish")
    entries = wait_for(lambda: (e := worker.entries(limit=1000)) and len(e) >= 42 and e,
                       what="42 entries")
    assert len(entries) == len(requests)
    ours_requests = Counter((e["request"]["method"], e["request"]["path"]) for e in entries)
    assert ours_requests == Counter(requests)
    ours_responses = Counter((str(e["status"]), e["request"]["path"])
                             for e in entries if e["response"] is not None)
    # tshark names the request a response answers by its full URI (scheme, Host, path)
    theirs_responses = Counter((code, urlsplit(uri).path) for code, uri in responses)
    assert Counter(code for code, _ in ours_responses.elements()) == Counter(
        code for code, _ in theirs_responses.elements())
    # tshark 4.0 pairs every pipelined response with the last request of the frame that
    # carried them; HTTP pairs them in order, as we do. Compare the rest one to one.
    pipelined = {("200", f"/pipe/{n}") for n in range(3)}
    assert {pair for pair in ours_responses if pair[1].startswith("/pipe/")} == pipelined
    assert theirs_responses[("200", "/pipe/2")] == 3
    assert (Counter({k: v for k, v in ours_responses.items() if k not in pipelined})
            == Counter({k: v for k, v in theirs_responses.items() if not k[1].startswith("/pipe/")}))
    assert all(e["complete"] for e in entries)
