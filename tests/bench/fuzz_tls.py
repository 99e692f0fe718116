"""Mutation fuzzing of the TLS and generic sessions (not in the suite).

    .venv/bin/python tests/bench/fuzz_tls.py [--count 100000] [--seed 1]
    .venv/bin/python tests/bench/fuzz_tls.py --bench 2000     (throughput vs tshark instead)

The client and server streams of every golden capture in tests/golden/tls/ are mutated (bit
flips, byte changes, truncations, insertions, deletions, spliced record headers), cut into
random chunks with the occasional gap, and fed to a TlsSession and a GenericSession. Prints
the inputs run, the exceptions (must be 0) and inputs/s.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN  # noqa: E402
from worker.assembler import Assembler  # noqa: E402
from worker.dissectors.base import Direction, FlowInfo  # noqa: E402
from worker.dissectors.generic import GenericDissector  # noqa: E402
from worker.dissectors.tls import TlsDissector  # noqa: E402
from worker.packet import decode  # noqa: E402
from worker.sources import open_file_source  # noqa: E402

FLOW = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 443)


class _Streams:
    def __init__(self) -> None:
        self.data = [bytearray(), bytearray()]

    def on_data(self, direction, data, offset, ts_ns, ref) -> None:
        self.data[direction] += data

    def on_gap(self, *args) -> None: ...
    def on_close(self, *args) -> None: ...


def golden_streams() -> list[tuple[bytes, bytes]]:
    out = []
    for path in sorted((GOLDEN / "tls").glob("*.pcap")):
        sessions: list[_Streams] = []

        def opener(flow, sessions=sessions):
            sessions.append(_Streams())
            return sessions[-1]
        assembler = Assembler(opener)
        source = open_file_source(path)
        while not source.finished:
            for ts_ns, data, _ in source.read_batch(4096):
                decoded = decode(source.linktype, data)
                if decoded is not None:
                    assembler.packet(ts_ns, (0, 0), decoded)
        source.close()
        assembler.close_all(0)
        out += [(bytes(s.data[0]), bytes(s.data[1])) for s in sessions]
    return out


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if not buf:
            buf += rng.randbytes(rng.randint(1, 20))
            continue
        at = rng.randrange(len(buf))
        if op == 0:
            buf[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[at] = rng.randrange(256)
        elif op == 2:
            del buf[rng.randrange(len(buf)):]
        elif op == 3:
            buf[at:at] = rng.randbytes(rng.randint(1, 64))
        elif op == 4:
            del buf[at:at + rng.randint(1, 64)]
        elif op == 5:
            buf[at:at] = bytes([rng.choice((20, 21, 22, 23)), 3, rng.randrange(5),
                                rng.randrange(256), rng.randrange(256)])
        else:
            buf[at:at + 4] = bytes([rng.choice((1, 2)), 0, rng.randrange(256), rng.randrange(256)])
    return bytes(buf)


def feed(dissector, client: bytes, server: bytes, rng: random.Random) -> None:
    session = dissector.session(FLOW, lambda exchange: None)
    pos = [0, 0]
    streams = (client, server)
    ts = 0
    while pos[0] < len(client) or pos[1] < len(server):
        d = rng.randrange(2)
        if pos[d] >= len(streams[d]):
            d = 1 - d
        n = rng.randint(1, 3000)
        ts += 1
        if rng.random() < 0.02:
            session.on_gap(Direction(d), pos[d], n, ts)
        else:
            session.on_data(Direction(d), streams[d][pos[d]:pos[d] + n], pos[d], ts, (0, ts))
        pos[d] += n
    session.on_close(ts + 1)


def bench(copies: int) -> None:
    """The golden TLS connections replicated `copies` times (client port changed per copy)
    into one pcap; dissection through worker.dissection vs tshark on the same file."""
    import json
    import struct
    import subprocess
    import tempfile

    import dpkt

    from worker.dissection import Dissection

    names = ["tls13", "tls12", "python_https", "fail_version", "fail_unknown_ca"]
    packets, ports = [], set()
    for name in names:
        ports.add(json.loads((GOLDEN / "tls" / f"{name}.json").read_text())[0]["dst"]["port"])
        with open(GOLDEN / "tls" / f"{name}.pcap", "rb") as f:
            packets.append(list(dpkt.pcap.Reader(f)))
    out = Path(tempfile.mkdtemp()) / "tls_bench.pcap"
    count = 0
    with open(out, "wb") as f:
        writer = dpkt.pcap.Writer(f)
        ts = 1.0e9
        for i in range(copies):
            for conn in packets:
                base = conn[0][0]
                for t, frame in conn:
                    frame = bytearray(frame)
                    sport, dport = struct.unpack_from("!HH", frame, 34)
                    new = 20000 + i % 40000
                    if sport in ports:
                        struct.pack_into("!H", frame, 36, new)
                    else:
                        struct.pack_into("!H", frame, 34, new)
                    writer.writepkt(bytes(frame), ts + (t - base))
                    count += 1
                ts += 0.01
    start = time.perf_counter()
    dissection = Dissection("bench")
    source = open_file_source(out)
    n = 0
    while not source.finished:
        batch = source.read_batch(4096)
        dissection.feed(((0, n + i), source.linktype, t, d, w) for i, (t, d, w) in enumerate(batch))
        n += len(batch)
    dissection.close_all()
    entries = len(dissection.take_rows())
    ours = time.perf_counter() - start
    decode_as = [arg for port in sorted(ports) for arg in ("-d", f"tcp.port=={port},tls")]
    timings = {}
    for label, extra in (("-Y tls", ["-Y", "tls"]),
                         ("-Y tls.handshake.type==1 -T fields", [
                             "-Y", "tls.handshake.type==1", "-T", "fields", "-e",
                             "tls.handshake.extensions_server_name"])):
        start = time.perf_counter()
        subprocess.run(["tshark", "-r", str(out), *decode_as, *extra], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        timings[label] = time.perf_counter() - start
    print(f"{count} packets, {entries} tls entries (connections): ours {ours:.2f}s "
          f"({entries / ours:,.0f} connections/s, {count / ours:,.0f} packets/s)")
    for label, seconds in timings.items():
        print(f"tshark {label}: {seconds:.2f}s ({entries / seconds:,.0f} connections/s)")
    out.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bench", type=int, default=0, metavar="COPIES",
                        help="measure throughput against tshark instead of fuzzing")
    args = parser.parse_args()
    if args.bench:
        bench(args.bench)
        return
    rng = random.Random(args.seed)
    corpus = golden_streams()
    dissectors = (TlsDissector(), GenericDissector())
    errors = 0
    start = time.perf_counter()
    for i in range(args.count):
        client, server = rng.choice(corpus)
        if rng.random() < 0.5:
            client = mutate(client, rng)
        else:
            server = mutate(server, rng)
        for dissector in dissectors:
            try:
                feed(dissector, client, server, rng)
            except Exception:
                errors += 1
                if errors <= 5:
                    print(f"input {i}: {dissector.name}", file=sys.stderr)
                    traceback.print_exc()
    elapsed = time.perf_counter() - start
    print(f"tls+generic fuzz: {args.count} inputs ({len(corpus)} golden streams), "
          f"{errors} exceptions, {args.count / elapsed:,.0f} inputs/s")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
