"""Mutation fuzzing and throughput of the AMQP dissector (run on demand, not in the suite).

    .venv/bin/python tests/bench/fuzz_amqp.py [--inputs 100000] [--seed 1] [--connections 300]

Fuzzing: the client and server byte streams of every connection in the golden captures
(tests/golden/amqp/*.pcap) are mutated (bit flips, byte overwrites, truncations, insertions,
deletions, duplicated slices, gaps) and fed to a session in random chunk sizes, with and
without body_limit. Any exception escaping the session is counted and the first ones printed;
the expected count is 0. Reports inputs/s.

Throughput: a pcap of --connections copies of the golden connections (other ports, so each
is its own flow) is written to a temporary directory and dissected through the worker's path
(worker.dissection: decode, assembler, selection, session, Entry); reported as messages/s
(AMQP frames other than heartbeats, content frames counted with their method) next to the wall
time of `tshark -r FILE -Y amqp` on the same file.

fuzz_mqtt.py runs the same for MQTT with these functions.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import dpkt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from factories import tcp_conversation  # noqa: E402
from support.golden import GOLDEN  # noqa: E402
from worker.assembler import Assembler  # noqa: E402
from worker.dissection import Dissection  # noqa: E402
from worker.dissectors.base import Direction, Dissector, FlowInfo  # noqa: E402
from worker.packet import decode  # noqa: E402
from worker.sources import open_file_source  # noqa: E402

FLOW = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 5672)


def streams_of(pcap: Path) -> list[tuple[list[bytes], list[bytes]]]:
    """Per TCP connection, the chunks of each direction in capture order (as turns)."""
    flows: dict[FlowInfo, list[tuple[int, bytes]]] = {}

    class Recorder:
        def __init__(self, flow: FlowInfo) -> None:
            self.calls = flows.setdefault(flow, [])

        def on_data(self, direction, data, offset, ts_ns, ref) -> None:
            self.calls.append((int(direction), bytes(data)))

        def on_gap(self, *args) -> None: ...
        def on_close(self, *args) -> None: ...

    assembler = Assembler(Recorder)
    source = open_file_source(pcap)
    last = 0
    while not source.finished:
        for ts_ns, data, _wirelen in source.read_batch(4096):
            decoded = decode(source.linktype, data)
            if decoded is not None:
                assembler.packet(ts_ns, (0, 0), decoded)
                last = ts_ns
    source.close()
    assembler.close_all(last)
    out = []
    for calls in flows.values():
        # Turns: consecutive chunks of one direction joined.
        client: list[bytes] = []
        server: list[bytes] = []
        previous = None
        for direction, data in calls:
            side = client if direction == 0 else server
            if direction == previous:
                side[-1] += data
            else:
                if direction == 0 and len(client) > len(server):
                    server.append(b"")
                if direction == 1 and len(server) >= len(client):
                    client.append(b"")
                side.append(data)
            previous = direction
        out.append((client, server))
    return out


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        if not buf:
            buf += rng.randbytes(rng.randint(1, 16))
            continue
        op = rng.randrange(7)
        at = rng.randrange(len(buf))
        if op == 0:
            buf[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[at] = rng.choice((0, 0xFF, 0xCE, 0x7F, 0x80, rng.randrange(256)))
        elif op == 2:
            del buf[at:]
        elif op == 3:
            buf[at:at] = rng.randbytes(rng.randint(1, 32))
        elif op == 4:
            del buf[at:at + rng.randint(1, 64)]
        elif op == 5:
            end = min(len(buf), at + rng.randint(1, 64))
            buf[at:at] = buf[at:end]
        else:
            for i in range(at, min(len(buf), at + 8)):
                buf[i] = rng.randrange(256)
    return bytes(buf)


def feed(dissector: Dissector, client: list[bytes], server: list[bytes], rng: random.Random,
         body_limit: int) -> int:
    out: list = []
    session = dissector.session(FLOW, out.append, body_limit)
    offsets = [0, 0]
    ts = 1
    for turn in range(max(len(client), len(server))):
        for direction, chunks in ((0, client), (1, server)):
            if turn >= len(chunks) or not chunks[turn]:
                continue
            data = chunks[turn]
            pos = 0
            while pos < len(data):
                size = rng.choice((1, 3, 7, 64, 1460, 1 << 20))
                piece = data[pos:pos + size]
                if rng.random() < 0.01:
                    gap = rng.randint(1, 100)
                    session.on_gap(Direction(direction), offsets[direction], gap, ts)
                    offsets[direction] += gap
                session.on_data(Direction(direction), piece, offsets[direction], ts, (0, ts))
                offsets[direction] += len(piece)
                pos += size
                ts += 1
    session.on_close(ts)
    return len(out)


def mutated_pair(corpus: list[tuple[list[bytes], list[bytes]]],
                 rng: random.Random) -> tuple[list[bytes], list[bytes]]:
    """One connection of the corpus with one side's chunks (or both) mutated, and sometimes
    joined mid-stream."""
    client, server = rng.choice(corpus)
    which = rng.random()
    if which < 0.45:
        client = [mutate(c, rng) if rng.random() < 0.3 else c for c in client]
    elif which < 0.9:
        server = [mutate(c, rng) if rng.random() < 0.3 else c for c in server]
    else:
        client = [mutate(c, rng) for c in client]
        server = [mutate(c, rng) for c in server]
    if rng.random() < 0.1:      # start mid-stream (MQTT: the version is not known)
        cut = rng.randrange(len(client) + 1)
        client, server = client[cut:], server[cut:]
    return client, server


def fuzz(dissector: Dissector, pcaps: list[Path], inputs: int, seed: int) -> None:
    rng = random.Random(seed)
    corpus = [s for pcap in pcaps for s in streams_of(pcap)]
    if not corpus:
        raise SystemExit("no streams in the golden captures")
    exceptions = 0
    entries = 0
    start = time.perf_counter()
    for n in range(inputs):
        client, server = mutated_pair(corpus, rng)
        try:
            entries += feed(dissector, client, server, rng, rng.choice((0, 0, 16, 4096)))
        except Exception:           # noqa: BLE001 - what this script is for
            exceptions += 1
            if exceptions <= 5:
                print(f"input {n}: exception", file=sys.stderr)
                traceback.print_exc()
    elapsed = time.perf_counter() - start
    print(f"{dissector.name} fuzz: {inputs} mutated inputs from {len(corpus)} connections, "
          f"{exceptions} exceptions, {entries} entries, {elapsed:.1f} s, "
          f"{inputs / elapsed:,.0f} inputs/s")


def write_repeated(pcaps: list[Path], copies: int, out: Path, port: int) -> int:
    """A pcap of `copies` x the golden connections as fresh flows; returns payload bytes."""
    corpus = [s for pcap in pcaps for s in streams_of(pcap)]
    total = 0
    with out.open("wb") as f:
        writer = dpkt.pcap.Writer(f)
        ts = 1_700_000_000_000_000_000
        for i in range(copies):
            for client, server in corpus:
                cport = 10000 + (i * len(corpus) + corpus.index((client, server))) % 50000
                for ts_ns, frame, _ in tcp_conversation(client, server,
                                                        client=("10.1.0.1", cport),
                                                        server=("10.1.0.2", port),
                                                        start_ns=ts, step_ns=1000):
                    writer.writepkt(frame, ts_ns / 1e9)
                    ts = ts_ns + 1000
                total += sum(map(len, client)) + sum(map(len, server))
    return total


def throughput(pcaps: list[Path], copies: int, port: int, tshark_filter: str,
               count_messages: Callable[[list[dict]], int]) -> None:
    import json
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "repeated.pcap"
        payload = write_repeated(pcaps, copies, path, port)
        source = open_file_source(path)
        packets = []
        while not source.finished:
            for ts_ns, data, wirelen in source.read_batch(4096):
                packets.append(((0, len(packets)), source.linktype, ts_ns, data, wirelen))
        source.close()
        start = time.perf_counter()
        dissection = Dissection("bench")
        dissection.feed(packets)
        dissection.close_all()
        rows = dissection.take_rows()
        ours = time.perf_counter() - start
        entries = [json.loads(r.entry_json) for r in rows]
        messages = count_messages(entries)
        tshark_s = None
        if shutil.which("tshark"):
            start = time.perf_counter()
            subprocess.run(["tshark", "-r", str(path), "-Y", tshark_filter],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            tshark_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        print(f"throughput: {len(packets)} packets, {size_mb:.1f} MB pcap, {payload / 1e6:.1f} MB "
              f"payload, {len(entries)} entries, {messages} messages")
        print(f"  ours (decode+assemble+dissect+Entry): {ours:.2f} s = "
              f"{messages / ours:,.0f} messages/s, {len(entries) / ours:,.0f} entries/s")
        if tshark_s is not None:
            print(f"  tshark -r FILE -Y {tshark_filter}: {tshark_s:.2f} s = "
                  f"{messages / tshark_s:,.0f} messages/s")


def count_amqp_messages(entries: list[dict]) -> int:
    n = 0
    for e in entries:
        n += 1
        response = e["response"]
        if response is not None and response["method"] not in ("channel.close",
                                                                 "connection.close"):
            n += 1
    return n


def main() -> None:
    from worker.dissectors.amqp import AmqpDissector
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=300)
    args = parser.parse_args()
    pcaps = sorted((GOLDEN / "amqp").glob("*.pcap"))
    fuzz(AmqpDissector(), pcaps, args.inputs, args.seed)
    throughput(pcaps, args.connections, 5672, "amqp", count_amqp_messages)


if __name__ == "__main__":
    main()
