"""Mutation fuzzing and throughput of the DNS dissector (on demand, not in the test suite).

    .venv/bin/python tests/bench/fuzz_dns.py [--inputs 100000] [--seed 1] [--bench-copies 2000]

Fuzz: the flows of tests/golden/dns/basic.pcap (UDP datagrams and TCP chunks, per direction,
in capture order) are mutated (bit flips, random bytes, truncations, insertions, deletions,
splits, duplicated or dropped chunks, gaps) and fed to a fresh session, and the first chunks
to detect(). Reported: exceptions that escaped (must be 0), exceptions a session caught
internally (its `errors`, must be 0 too) and inputs/s.

Bench: the golden capture's packets replicated --bench-copies times (each copy on other client
ports, later in time) into one pcap; our path (tests.support.golden.dissect_capture: decode,
assembler, selection, Entry) against `tshark -r FILE -Y dns` on it; messages/s.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import dpkt

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from worker.assembler.flows import is_server_port  # noqa: E402
from worker.dissectors.base import Direction, FlowInfo  # noqa: E402

Chunk = tuple[int, bytes]          # (direction, payload)


def read_flows(path: Path) -> list[tuple[FlowInfo, list[Chunk]]]:
    """Payload chunks per flow (client = first sender), in capture order; TCP retransmissions
    (a sequence number seen before) dropped."""
    flows: dict[tuple, tuple[FlowInfo, list[Chunk]]] = {}
    seen: set[tuple] = set()
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                continue
            seg = ip.data
            if not isinstance(seg, (dpkt.udp.UDP, dpkt.tcp.TCP)) or not seg.data:
                continue
            transport = "tcp" if isinstance(seg, dpkt.tcp.TCP) else "udp"
            a, b = (ip.src, seg.sport), (ip.dst, seg.dport)
            key = (transport, *sorted([a, b]))
            if transport == "tcp":
                mark = (a, b, seg.seq)
                if mark in seen:
                    continue
                seen.add(mark)
            if key not in flows:
                flows[key] = (FlowInfo(transport, a[0], a[1], b[0], b[1]), [])
            info, chunks = flows[key]
            direction = 0 if (ip.src, seg.sport) == (info.client_ip, info.client_port) else 1
            chunks.append((direction, bytes(seg.data)))
    return list(flows.values())


def mutate(chunks: list[Chunk], rng: random.Random) -> list[tuple[int, bytes | int]]:
    """A mutated copy; an int in place of bytes is a gap of that many bytes."""
    out: list[tuple[int, bytes | int]] = [(d, bytes(c)) for d, c in chunks]
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        i = rng.randrange(len(out))
        d, data = out[i]
        if isinstance(data, int) or not data:
            continue
        op = rng.randrange(9)
        p = rng.randrange(len(data))
        if op == 0:
            data = data[:p] + bytes([data[p] ^ (1 << rng.randrange(8))]) + data[p + 1:]
        elif op == 1:
            data = data[:p] + bytes([rng.randrange(256)]) + data[p + 1:]
        elif op == 2:
            data = data[:p]
        elif op == 3:
            data = data[:p] + rng.randbytes(rng.randint(1, 16)) + data[p:]
        elif op == 4:
            data = data[:p] + data[p + rng.randint(1, 16):]
        elif op == 5:
            out[i:i + 1] = [(d, data[:p]), (d, data[p:])]
            continue
        elif op == 6:
            out.insert(i, (d, data))
            continue
        elif op == 7:
            del out[i]
            continue
        else:
            out[i] = (d, len(data))
            continue
        out[i] = (d, data)
    return out


def feed(make_session: Callable, flow: FlowInfo, chunks: list[tuple[int, bytes | int]]) -> int:
    """Runs one input; returns the session's internal error count."""
    emitted: list = []
    session = make_session(flow, emitted.append)
    offsets = [0, 0]
    for n, (direction, data) in enumerate(chunks):
        if isinstance(data, int):
            session.on_gap(Direction(direction), offsets[direction], data, n)
            offsets[direction] += data
        elif data:
            session.on_data(Direction(direction), data, offsets[direction], n, (0, n))
            offsets[direction] += len(data)
    session.on_close(len(chunks))
    return getattr(session, "errors", 0)


def fuzz(flows: list[tuple[FlowInfo, list[Chunk]]], make_session: Callable,
         detect: Callable[[bytes, bytes], object] | None, inputs: int, seed: int) -> dict:
    rng = random.Random(seed)
    escaped = internal = 0
    first_failure = ""
    started = time.perf_counter()
    for _ in range(inputs):
        flow, chunks = flows[rng.randrange(len(flows))]
        mutated = mutate(chunks, rng)
        try:
            if detect is not None:
                firsts = [b"", b""]
                for d, c in mutated:
                    if isinstance(c, bytes) and not firsts[d]:
                        firsts[d] = c
                detect(firsts[0], firsts[1])
            internal += feed(make_session, flow, mutated)
        except Exception:
            escaped += 1
            if not first_failure:
                first_failure = traceback.format_exc()
    elapsed = time.perf_counter() - started
    return {"inputs": inputs, "escaped_exceptions": escaped, "internal_errors": internal,
            "seconds": round(elapsed, 2), "inputs_per_s": round(inputs / elapsed),
            "first_failure": first_failure}


def session_rate(flows: list[tuple[FlowInfo, list[Chunk]]], make_session: Callable,
                 seconds: float = 3.0) -> dict:
    """The golden flows fed straight to sessions, again and again: messages/s of the dissector
    alone (no pcap reading, decoding, reassembly or Entry building)."""
    messages = runs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for flow, chunks in flows:
            out: list = []
            session = make_session(flow, out.append)
            offsets = [0, 0]
            for n, (direction, data) in enumerate(chunks):
                session.on_data(Direction(direction), data, offsets[direction], n, (0, n))
                offsets[direction] += len(data)
            session.on_close(len(chunks))
            messages += sum(1 + (e.response is not None) for e in out)
        runs += 1
    elapsed = time.perf_counter() - started
    return {"runs": runs, "messages": messages, "messages_per_s": round(messages / elapsed)}


def replicate(src: Path, dst: Path, copies: int) -> int:
    """src's packets `copies` times, each copy's non-server ports shifted and later in time."""
    with open(src, "rb") as f:
        packets = [(ts, buf) for ts, buf in dpkt.pcap.Reader(f)]
    span = packets[-1][0] - packets[0][0] + 1.0
    count = 0
    with open(dst, "wb") as f:
        writer = dpkt.pcap.Writer(f)
        server = _server_port(src)
        clients: dict[int, int] = {}      # each client port gets its own band of new ports
        for copy in range(copies):
            for ts, buf in packets:
                eth = dpkt.ethernet.Ethernet(buf)
                seg = eth.data.data
                for attr in ("sport", "dport"):
                    port = getattr(seg, attr)
                    if port != server:
                        band = clients.setdefault(port, len(clients))
                        # 20000-59999: no port the assembler takes for a server's
                        new = 20000 + (band * copies + copy) % 40000
                        if new == server or is_server_port(new):
                            new = 60000 + band
                        setattr(seg, attr, new)
                seg.sum = 0
                writer.writepkt(bytes(eth), ts + copy * span)
                count += 1
    return count


def _server_port(path: Path) -> int:
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            return dpkt.ethernet.Ethernet(buf).data.data.dport
    raise ValueError(f"{path}: no packets")


def bench(src: Path, copies: int, display_filter: str, decode_as: list[str],
          count_messages: Callable[[list[dict]], int]) -> dict:
    from support.golden import dissect_capture
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.pcap"
        packets = replicate(src, big, copies)
        started = time.perf_counter()
        entries = dissect_capture(big)
        ours = time.perf_counter() - started
        messages = count_messages(entries)
        argv = ["tshark", "-r", str(big), *decode_as, "-Y", display_filter]
        started = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        theirs = time.perf_counter() - started
    return {"packets": packets, "entries": len(entries), "messages": messages,
            "ours_s": round(ours, 3), "ours_messages_per_s": round(messages / ours),
            "tshark_s": round(theirs, 3), "tshark_frames": len(out.splitlines()),
            "tshark_messages_per_s": round(messages / theirs)}


def main() -> None:
    from worker.dissectors.dns import DnsDissector, detect
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bench-copies", type=int, default=2000)
    args = parser.parse_args()
    pcap = ROOT / "tests" / "golden" / "dns" / "basic.pcap"
    flows = read_flows(pcap)
    dissector = DnsDissector()
    result = fuzz(flows, dissector.session, detect, args.inputs, args.seed)
    print("fuzz:", {k: v for k, v in result.items() if k != "first_failure"})
    if result["first_failure"]:
        print(result["first_failure"])
    print("session alone:", session_rate(flows, dissector.session))
    port = _server_port(pcap)
    print("bench:", bench(pcap, args.bench_copies, "dns",
                          ["-d", f"udp.port=={port},dns", "-d", f"tcp.port=={port},dns"],
                          lambda es: sum(1 + (e["response"] is not None) for e in es
                                         if e["protocol"] == "dns")))
    sys.exit(1 if result["escaped_exceptions"] or result["internal_errors"] else 0)


if __name__ == "__main__":
    main()
