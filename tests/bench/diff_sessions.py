"""A dissector's sessions in another checkout against this one's, on the same mutated inputs:
the exchanges must be equal field by field (on demand, not in the suite).

    .venv/bin/python tests/bench/diff_sessions.py --old DIR PROTOCOL [--inputs 20000] [--seed 5]

PROTOCOL: mqtt, redis, postgres, mysql, http1, http2, websocket, kafka (TCP) or dns. WebSocket's
inputs are its golden connections' bytes after the HTTP/1.1 upgrade (fuzz_websocket.py's).

DIR is a checkout whose worker/dissectors/<protocol>.py is loaded beside this tree's (e.g.
`git archive main worker | tar -x -C /tmp/old`); both use this tree's base and stream modules.
Inputs: the golden captures' streams, mutated as fuzz_amqp.py / fuzz_dns.py mutate them, fed
in random chunks with gaps (the TCP protocols) or as datagrams with repeated, reordered and late
queries (DNS, detection's parse handed to the session as the selector does). For a change that
must not change any entry (a fast path, a cheaper structure), run with --old at the change's
parent: every difference is printed with its input number. The new tree's pre-encoded requests
and responses (Exchange.request_json, response_json) must be their dicts' JSON, too.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

from worker.dissectors.base import Direction, FlowInfo  # noqa: E402

Run = tuple[list[Any], int, int]        # exchanges, the session's errors, malformed count


def load_old(old: Path, protocol: str) -> ModuleType:
    path = old / "worker" / "dissectors" / f"{protocol}.py"
    spec = importlib.util.spec_from_file_location(f"old_{protocol}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The TCP protocols: their dissector class and port.
TCP = {"mqtt": ("MqttDissector", 1883), "redis": ("RedisDissector", 6379),
       "postgres": ("PostgresDissector", 5432), "mysql": ("MysqlDissector", 3306),
       "http1": ("Http1Dissector", 80), "http2": ("Http2Dissector", 50051),
       "websocket": ("WebSocketDissector", 8080), "kafka": ("KafkaDissector", 9092)}


def tcp_run(module: ModuleType, protocol: str, client: list[bytes], server: list[bytes],
            seed: float, body_limit: int) -> Run:
    """fuzz_amqp.feed's chunking and gaps, from one seed for both trees."""
    rng = random.Random(seed)
    name, port = TCP[protocol]
    flow = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", port)
    out: list[Any] = []
    session = getattr(module, name)().session(flow, out.append, body_limit)
    offsets, ts = [0, 0], 1
    for turn in range(max(len(client), len(server))):
        for direction, chunks in ((0, client), (1, server)):
            if turn >= len(chunks) or not chunks[turn]:
                continue
            data, pos = chunks[turn], 0
            while pos < len(data):
                size = rng.choice((1, 3, 7, 64, 1460, 1 << 20))
                if rng.random() < 0.01:
                    gap = rng.randint(1, 100)
                    session.on_gap(Direction(direction), offsets[direction], gap, ts)
                    offsets[direction] += gap
                piece = data[pos:pos + size]
                session.on_data(Direction(direction), piece, offsets[direction], ts, (0, ts))
                offsets[direction] += len(piece)
                pos += size
                ts += 1
    session.on_close(ts)
    if protocol == "http2":     # its counts of malformed frames and of frames on closed streams
        return out, session.late_frames, session.malformed
    return out, 0, getattr(session, "malformed_count", 0)


def dns_run(module: ModuleType, flow: FlowInfo, chunks: list[tuple[int, bytes | int]],
            step: int, body_limit: int) -> Run:
    dissector = module.DnsDissector()
    firsts = [b"", b""]
    for direction, data in chunks:
        if isinstance(data, bytes) and not firsts[direction]:
            firsts[direction] = data
    dissector.detect(firsts[0], firsts[1])      # its parses go to the session, as selected
    out: list[Any] = []
    session = dissector.session(flow, out.append, body_limit)
    offsets = [0, 0]
    for n, (direction, data) in enumerate(chunks):
        if isinstance(data, int):
            session.on_gap(Direction(direction), offsets[direction], data, n * step)
            offsets[direction] += data
        elif data:
            session.on_data(Direction(direction), data, offsets[direction], n * step, (0, n))
            offsets[direction] += len(data)
    session.on_close(len(chunks) * step)
    return out, session.errors, session.malformed


def encoded_alike(exchanges: list[Any]) -> bool:
    """Each exchange's pre-encoded request and response (Exchange.request_json and
    response_json, when a fast path gave them) are their dicts' JSON: compared is the dicts'
    equality, not them."""
    from shark.model import encode
    for exchange in exchanges:
        made = getattr(exchange, "request_json", None)
        if made is not None and bytes(made) != encode(exchange.request):
            return False
        made = getattr(exchange, "response_json", None)
        if made is not None and bytes(made) != encode(exchange.response):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("protocol", choices=(*TCP, "dns"))
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--inputs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    old = load_old(args.old, args.protocol)
    new = importlib.import_module(f"worker.dissectors.{args.protocol}")
    rng = random.Random(args.seed)
    differing = exchanges = 0
    if args.protocol in TCP:
        from fuzz_amqp import GOLDEN, mutated_pair, streams_of
        if args.protocol == "websocket":
            from fuzz_websocket import websocket_parts
            corpus = [([d for side, d in chunks if side == 0], [d for side, d in chunks if side == 1])
                      for pcap in sorted((GOLDEN / "websocket").glob("*.pcap"))
                      for _, chunks in websocket_parts(pcap)]
        else:
            corpus = [s for pcap in sorted((GOLDEN / args.protocol).glob("*.pcap"))
                      for s in streams_of(pcap)]
    else:
        from fuzz_dns import mutate as mutate_chunks
        from fuzz_dns import read_flows
        flows = read_flows(ROOT / "tests" / "golden" / "dns" / "basic.pcap")
    for n in range(args.inputs):
        if args.protocol in TCP:
            client, server = mutated_pair(corpus, rng)
            body_limit, seed = rng.choice((0, 0, 16, 4096)), rng.random()
            a = tcp_run(old, args.protocol, client, server, seed, body_limit)
            b = tcp_run(new, args.protocol, client, server, seed, body_limit)
        else:
            flow, chunks = flows[rng.randrange(len(flows))]
            mutated = mutate_chunks(chunks, rng) if rng.random() < 0.8 else list(chunks)
            if rng.random() < 0.3:      # more queries, some with one id, out of order
                mutated += [c for c in mutated if rng.random() < 0.5]
                rng.shuffle(mutated)
            step = rng.choice((1, 1, 3_000_000_000))    # also past the 10 s query timeout
            body_limit = rng.choice((0, 0, 64))
            a = dns_run(old, flow, mutated, step, body_limit)
            b = dns_run(new, flow, mutated, step, body_limit)
        exchanges += len(a[0])
        if a != b or not encoded_alike(b[0]):
            differing += 1
            if differing <= 5:
                print(f"input {n}: old {len(a[0])} exchanges {a[1:]}, new {len(b[0])} {b[1:]}")
    print(f"{args.protocol}: {args.inputs} inputs, {exchanges} exchanges, {differing} differing")
    if differing:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
