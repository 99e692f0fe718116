"""Mutation fuzzing and throughput of the WebSocket dissector (on demand, not in the suite).

    .venv/bin/python tests/bench/fuzz_websocket.py [--inputs 100000] [--seed 1]
        [--bench-copies 2000]

Fuzz: the WebSocket bytes (after the HTTP/1.1 101 response) of each connection in
tests/golden/websocket/basic.pcap, as chunks per direction in capture order, mutated as in
fuzz_dns.py (bit flips, random bytes, truncations, insertions, deletions, splits, duplicated or
dropped chunks, gaps) and fed to a fresh WebSocketSession. Reported: escaped exceptions and
internal errors (both must be 0), inputs/s.

Bench: the golden capture replicated --bench-copies times; our whole path (HTTP/1 upgrade ->
WebSocket) against `tshark -r FILE -d tcp.port==PORT,http -Y websocket`; messages/s, where a
message is a data message or a control frame.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_dns import (ROOT, Chunk, _server_port, bench, fuzz, read_flows,  # noqa: E402
                      session_rate)

from worker.dissectors.base import FlowInfo  # noqa: E402


def websocket_parts(path: Path) -> list[tuple[FlowInfo, list[Chunk]]]:
    """Each connection's chunks after the end of its HTTP request and 101 response."""
    out = []
    for flow, chunks in read_flows(path):
        heads = [bytearray(), bytearray()]
        done = [False, False]
        rest: list[Chunk] = []
        for direction, data in chunks:
            if done[direction]:
                rest.append((direction, data))
                continue
            heads[direction] += data
            end = heads[direction].find(b"\r\n\r\n")
            if end >= 0:
                done[direction] = True
                tail = bytes(heads[direction][end + 4:])
                if tail:
                    rest.append((direction, tail))
        if rest:
            out.append((flow, rest))
    return out


def count_messages(entries: list[dict]) -> int:
    return sum(1 + (e["response"] is not None) for e in entries if e["protocol"] == "websocket")


def main() -> None:
    from worker.dissectors.websocket import WebSocketSession
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bench-copies", type=int, default=2000)
    args = parser.parse_args()
    pcap = ROOT / "tests" / "golden" / "websocket" / "basic.pcap"
    flows = websocket_parts(pcap)
    result = fuzz(flows, WebSocketSession, None, args.inputs, args.seed)
    print("fuzz:", {k: v for k, v in result.items() if k != "first_failure"})
    if result["first_failure"]:
        print(result["first_failure"])
    print("session alone:", session_rate(flows, WebSocketSession))
    port = _server_port(pcap)
    print("bench:", bench(pcap, args.bench_copies, "websocket",
                          ["-d", f"tcp.port=={port},http"], count_messages))
    sys.exit(1 if result["escaped_exceptions"] or result["internal_errors"] else 0)


if __name__ == "__main__":
    main()
