"""Mutation fuzzing and throughput of the Redis dissector (run on demand, not in the suite).

    .venv/bin/python tests/bench/fuzz_redis.py [--inputs 100000] [--seed 1] [--connections 300]

The client and server streams of every connection of tests/golden/redis/*.pcap are mutated
(bit flips, overwrites, truncations, insertions, deletions, duplicated slices, gaps, mid-stream
starts) and fed in random chunk sizes, with and without body_limit; exceptions escaping the
session are counted (expected: 0). Throughput: --connections copies of the golden connections
dissected through worker.dissection, next to `tshark -r FILE -Y resp` on the same file.
The machinery is fuzz_amqp.py's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_amqp import GOLDEN, fuzz, throughput  # noqa: E402


def count_redis_messages(entries: list[dict]) -> int:
    """Commands plus server messages (replies, confirmations, pushes)."""
    n = 0
    for e in entries:
        n += 1 if e["request"] else 0
        if e["response"] is not None:
            n += e["response"].get("confirmations", 1)
    return n


def main() -> None:
    from worker.dissectors.redis import RedisDissector
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=300)
    args = parser.parse_args()
    pcaps = sorted((GOLDEN / "redis").glob("*.pcap"))
    fuzz(RedisDissector(), pcaps, args.inputs, args.seed)
    throughput(pcaps, args.connections, 6379, "resp", count_redis_messages)


if __name__ == "__main__":
    main()
