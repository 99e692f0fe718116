"""Mutation fuzzing and throughput of the MQTT dissector (run on demand, not in the suite).

    .venv/bin/python tests/bench/fuzz_mqtt.py [--inputs 100000] [--seed 1] [--connections 300]

The same procedure as fuzz_amqp.py (whose functions it uses) on the streams of
tests/golden/mqtt/*.pcap (3.1.1 and 5): mutated streams in random chunks, exceptions counted
(expected 0), inputs/s; then messages/s through the worker's path on a pcap of repeated golden
connections next to `tshark -r FILE -Y mqtt`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_amqp import GOLDEN, fuzz, throughput  # noqa: E402


def count_mqtt_messages(entries: list[dict]) -> int:
    n = 0
    for e in entries:
        n += 1
        response = e["response"]
        if response is not None:
            n += 3 if response["packet_type"] == "PUBCOMP" else 1
    return n


def main() -> None:
    from worker.dissectors.mqtt import MqttDissector
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=300)
    args = parser.parse_args()
    pcaps = sorted((GOLDEN / "mqtt").glob("*.pcap"))
    fuzz(MqttDissector(), pcaps, args.inputs, args.seed)
    throughput(pcaps, args.connections, 1883, "mqtt", count_mqtt_messages)


if __name__ == "__main__":
    main()
