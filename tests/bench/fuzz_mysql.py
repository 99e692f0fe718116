"""Mutation fuzzing and throughput of the MySQL dissector (run on demand, not in the suite).

    .venv/bin/python tests/bench/fuzz_mysql.py [--inputs 100000] [--seed 1]

The same mutations and measurements as fuzz_postgres.py, on tests/golden/mysql/*.pcap and
against `tshark -Y mysql` (messages: MySQL packets as tshark counts them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_postgres import GOLDEN, conversations, count_messages, fuzz, throughput  # noqa: E402


def main() -> None:
    from worker.dissectors.mysql import MysqlDissector
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    pcaps = sorted((GOLDEN / "mysql").glob("*.pcap"))
    convs = [c for p in pcaps for c in conversations(p, 3306)]
    fuzz(MysqlDissector(), convs, args.inputs, args.seed)
    session = GOLDEN / "mysql" / "session.pcap"
    throughput(session, "mysql", count_messages(session, "mysql", "mysql.packet_length"))


if __name__ == "__main__":
    main()
