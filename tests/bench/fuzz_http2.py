"""Mutation fuzzing and throughput of the HTTP/2 + gRPC dissector (on demand, not in the suite).

    .venv/bin/python tests/bench/fuzz_http2.py [--inputs 100000] [--seed 1] [--copies 300]

Fuzz: the golden captures' TCP conversations (tests/golden/http2/*.pcap, one chunk per segment,
in capture order) are mutated (bit flips, truncations, insertions, segments lost as gaps,
re-splits, a start mid-connection) and fed to a fresh session each, half of them with a
body_limit (gRPC protobuf decoding, bodies); any exception escaping a session is counted and
its input printed. Throughput: each golden capture's connection is copied many times into one
pcap (each copy on its own client port), dissected through the worker's path and timed against
`tshark -d tcp.port==P,http2 -Y http2` on the same file.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import dpkt

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support.golden import GOLDEN, dissect_capture  # noqa: E402
from worker.dissectors.base import Direction, FlowInfo  # noqa: E402
from worker.dissectors.http2 import Http2Session  # noqa: E402

Turn = tuple[int, bytes]          # (direction, segment payload)
PCAPS = ("h2c", "grpc", "upgrade")


def _packets(pcap: Path) -> list[tuple[float, bytes]]:
    with open(pcap, "rb") as f:
        return list(dpkt.pcap.Reader(f))


def server_port(pcap: Path) -> int:
    """The port that answered the first SYN."""
    for _ts, buf in _packets(pcap):
        tcp = dpkt.ethernet.Ethernet(buf).data.data
        if isinstance(tcp, dpkt.tcp.TCP) and tcp.flags & dpkt.tcp.TH_SYN:
            return tcp.dport
    raise ValueError(f"no SYN in {pcap}")


def conversation(pcap: Path) -> list[Turn]:
    """The payload segments of the capture's connection, in capture order (lo: no loss). For
    the Upgrade capture, only what follows the HTTP/1.1 101 (what the HTTP/2 session gets)."""
    port = server_port(pcap)
    turns: list[Turn] = []
    for _ts, buf in _packets(pcap):
        tcp = dpkt.ethernet.Ethernet(buf).data.data
        if isinstance(tcp, dpkt.tcp.TCP) and tcp.data:
            turns.append((0 if tcp.dport == port else 1, bytes(tcp.data)))
    if turns and turns[0][1].startswith(b"GET "):
        turns = turns[1:]
        direction, first = turns[0]
        turns[0] = (direction, first[first.index(b"\r\n\r\n") + 4:])
    return turns


def mutate(turns: list[Turn], rng: random.Random) -> list[tuple[int, bytes | int]]:
    """A mutated copy; an int payload is a gap of that many bytes."""
    out: list[tuple[int, bytes | int]] = []
    for direction, data in turns:
        roll = rng.random()
        if roll < 0.05:
            out.append((direction, len(data)))                        # lost segment
            continue
        b = bytearray(data)
        if roll < 0.35 and b:
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif roll < 0.45 and b:
            del b[rng.randrange(len(b)):]
        elif roll < 0.55:
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif roll < 0.65 and len(b) > 1:
            i = rng.randrange(1, len(b))
            out.append((direction, bytes(b[:i])))
            b = b[i:]
        out.append((direction, bytes(b)))
    if rng.random() < 0.1 and out:
        del out[:rng.randrange(len(out))]                            # start mid-connection
    return out


FLOW = FlowInfo("tcp", b"\x7f\0\0\x01", 40000, b"\x7f\0\0\x01", 50051)


def feed(chunks: list[tuple[int, bytes | int]], sink: Callable, body_limit: int,
         upgraded: bool) -> None:
    session = Http2Session(FLOW, sink, body_limit, upgraded=upgraded)
    offsets = [0, 0]
    for n, (direction, data) in enumerate(chunks):
        d = Direction(direction)
        if isinstance(data, int):
            session.on_gap(d, offsets[direction], data, n)
            offsets[direction] += data
        else:
            session.on_data(d, data, offsets[direction], n, (0, n))
            offsets[direction] += len(data)
    session.on_close(len(chunks))


def fuzz(convs: list[tuple[str, list[Turn]]], inputs: int, seed: int) -> None:
    rng = random.Random(seed)
    errors = entries = 0

    def sink(_exchange: object) -> None:
        nonlocal entries
        entries += 1
    start = time.perf_counter()
    for _ in range(inputs):
        name, turns = rng.choice(convs)
        chunks = mutate(turns, rng)
        try:
            feed(chunks, sink, rng.choice((0, 0, 64, 4096)), name == "upgrade")
        except Exception:  # noqa: BLE001 - counting is the point
            errors += 1
            if errors <= 5:
                traceback.print_exc()
                print(repr(chunks)[:2000], file=sys.stderr)
    elapsed = time.perf_counter() - start
    print(f"fuzz http2: {inputs} inputs, {errors} exceptions, {entries} entries, "
          f"{inputs / elapsed:,.0f} inputs/s")


def replicate(pcap: Path, copies: int, out: Path, port: int) -> None:
    """`copies` copies of the capture's connection, each on its own client port."""
    packets = _packets(pcap)
    with open(out, "wb") as f:
        writer = dpkt.pcap.Writer(f)
        for c in range(copies):
            for ts, buf in packets:
                eth = dpkt.ethernet.Ethernet(buf)
                tcp = eth.data.data
                if isinstance(tcp, dpkt.tcp.TCP):
                    if tcp.sport != port:
                        tcp.sport = 10000 + c
                    if tcp.dport != port:
                        tcp.dport = 10000 + c
                writer.writepkt(bytes(eth), ts + c * 0.01)


def throughput(pcap: Path, copies: int) -> None:
    port = server_port(pcap)
    big = Path("/tmp") / f"bench_http2_{pcap.stem}.pcap"
    replicate(pcap, copies, big, port)
    frames_out = subprocess.run(
        ["tshark", "-r", str(big), "-d", f"tcp.port=={port},http2", "-Y", "http2",
         "-T", "fields", "-E", "aggregator=|", "-e", "http2.type"],
        check=True, capture_output=True, text=True).stdout
    frames = sum(len(line.split("|")) for line in frames_out.splitlines() if line)
    dissect_capture(pcap)           # imports and first-use costs out of the timing
    start = time.perf_counter()
    entries = dissect_capture(big)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run(["tshark", "-r", str(big), "-d", f"tcp.port=={port},http2", "-Y", "http2"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    theirs = time.perf_counter() - start
    print(f"throughput {pcap.name} x{copies} ({big.stat().st_size / 1e6:.1f} MB, {frames} "
          f"frames, {len(entries)} entries): ours {ours:.2f} s = {frames / ours:,.0f} frames/s, "
          f"{len(entries) / ours:,.0f} entries/s (whole worker path); tshark -Y http2 "
          f"{theirs:.2f} s = {frames / theirs:,.0f} frames/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--copies", type=int, default=300)
    args = parser.parse_args()
    convs = [(name, conversation(GOLDEN / "http2" / f"{name}.pcap")) for name in PCAPS]
    fuzz(convs, args.inputs, args.seed)
    for name in ("h2c", "grpc"):
        throughput(GOLDEN / "http2" / f"{name}.pcap", args.copies)


if __name__ == "__main__":
    main()
