"""Mutation fuzzing and throughput of the PostgreSQL dissector (run on demand, not in the suite).

    .venv/bin/python tests/bench/fuzz_postgres.py [--inputs 100000] [--seed 1]

Fuzz: the golden captures' TCP conversations (one chunk per segment, in capture order) are
mutated (bit flips, truncations, insertions, chunk drops turned into gaps, re-splits) and fed
to a fresh session each; any exception escaping a session is counted and its input printed.
Throughput: the golden capture is copied many times into one pcap (each copy on its own
client port), dissected through the worker's path and timed against `tshark -Y pgsql`.
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

Turn = tuple[int, bytes]          # (direction, segment payload)


def conversations(pcap: Path, server_port: int) -> list[list[Turn]]:
    """Per TCP connection, its payload segments in capture order (lo: no loss)."""
    flows: dict[int, list[Turn]] = {}
    with open(pcap, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP) or not tcp.data:
                continue
            to_server = tcp.dport == server_port
            port = tcp.sport if to_server else tcp.dport
            flows.setdefault(port, []).append((0 if to_server else 1, bytes(tcp.data)))
    return list(flows.values())


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


def feed(dissector, chunks: list[tuple[int, bytes | int]], sink: Callable) -> None:
    flow = FlowInfo("tcp", b"\x7f\0\0\x01", 40000, b"\x7f\0\0\x01", 5432)
    session = dissector.session(flow, sink, 0 if random.random() < 0.5 else 256)
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


def fuzz(dissector, convs: list[list[Turn]], inputs: int, seed: int) -> None:
    rng = random.Random(seed)
    errors = 0
    entries = 0

    def sink(_exchange) -> None:
        nonlocal entries
        entries += 1
    start = time.perf_counter()
    for i in range(inputs):
        chunks = mutate(rng.choice(convs), rng)
        try:
            feed(dissector, chunks, sink)
        except Exception:  # noqa: BLE001 - counting is the point
            errors += 1
            if errors <= 5:
                traceback.print_exc()
                print(repr(chunks)[:2000], file=sys.stderr)
    elapsed = time.perf_counter() - start
    print(f"fuzz {dissector.name}: {inputs} inputs, {errors} exceptions, {entries} entries, "
          f"{inputs / elapsed:,.0f} inputs/s")


def replicate(pcap: Path, copies: int, out: Path) -> None:
    """`copies` copies of every connection of pcap, each on its own client port."""
    with open(pcap, "rb") as f:
        packets = list(dpkt.pcap.Reader(f))
    with open(out, "wb") as f:
        writer = dpkt.pcap.Writer(f)
        for c in range(copies):
            for ts, buf in packets:
                eth = dpkt.ethernet.Ethernet(buf)
                tcp = eth.data.data
                if isinstance(tcp, dpkt.tcp.TCP):
                    if tcp.sport > 10000:
                        tcp.sport = 10000 + (tcp.sport + c * 7) % 50000
                    if tcp.dport > 10000:
                        tcp.dport = 10000 + (tcp.dport + c * 7) % 50000
                writer.writepkt(bytes(eth), ts + c)


def throughput(pcap: Path, tshark_filter: str, messages_per_copy: int, copies: int = 300) -> None:
    big = Path("/tmp") / f"bench_{pcap.parent.name}_{pcap.stem}.pcap"
    replicate(pcap, copies, big)
    start = time.perf_counter()
    entries = dissect_capture(big)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run(["tshark", "-r", str(big), "-Y", tshark_filter], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    theirs = time.perf_counter() - start
    messages = messages_per_copy * copies
    print(f"throughput {pcap.name} x{copies} ({big.stat().st_size / 1e6:.1f} MB, {messages} "
          f"messages, {len(entries)} entries): ours {ours:.2f} s = {messages / ours:,.0f} msg/s "
          f"(whole worker path); tshark -Y {tshark_filter} {theirs:.2f} s = "
          f"{messages / theirs:,.0f} msg/s")


def count_messages(pcap: Path, tshark_filter: str, field: str) -> int:
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", tshark_filter, "-T", "fields",
                          "-E", "aggregator=\x1e", "-e", field], check=True, capture_output=True,
                         text=True).stdout
    return sum(len(line.split("\x1e")) for line in out.split("\n") if line)


def main() -> None:
    from worker.dissectors.postgres import PostgresDissector
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    pcaps = sorted((GOLDEN / "postgres").glob("*.pcap"))
    convs = [c for p in pcaps for c in conversations(p, 5432)]
    fuzz(PostgresDissector(), convs, args.inputs, args.seed)
    session = GOLDEN / "postgres" / "session.pcap"
    throughput(session, "pgsql", count_messages(session, "pgsql", "pgsql.type"))


if __name__ == "__main__":
    main()
