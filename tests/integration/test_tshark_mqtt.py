"""Cross-check with tshark on the MQTT golden captures (3.1.1 and 5): packet types, and topic
and QoS of every PUBLISH, packet by packet.

tshark 4.0 quirks: `-T fields` joins the values of several packets in one TCP segment with
commas and prints mqtt.qos for PUBLISH only while mqtt.topic also comes from SUBSCRIBE, so the
columns do not line up; `-T json` repeats the "mqtt" key once per packet, read here with
object_pairs_hook. tshark learns the version from CONNECT as we do.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest

from support.golden import GOLDEN, dissect_capture
from worker.dissectors.mqtt import NAMES

CAPTURES = ["v311", "v5"]


def tshark(name: str, *args: str) -> str:
    return subprocess.run(["tshark", "-r", str(GOLDEN / "mqtt" / f"{name}.pcap"), *args],
                          check=True, capture_output=True, text=True).stdout


def tshark_packets(name: str) -> list[dict]:
    def pairs(items: list[tuple[str, object]]) -> dict:
        out: dict = {}
        for key, value in items:
            if key == "mqtt":
                out.setdefault("mqtt", []).append(value)
            else:
                out[key] = value
        return out
    packets = json.loads(tshark(name, "-Y", "mqtt", "-T", "json", "-J", "mqtt"),
                         object_pairs_hook=pairs)
    return [p for packet in packets for p in packet["_source"]["layers"]["mqtt"]]


def our_packet_types(entries: list[dict]) -> list[str]:
    kinds = []
    for e in entries:
        kinds.append(e["request"]["packet_type"])
        response = e["response"]
        if response is None:
            continue
        if response["packet_type"] == "PUBCOMP":
            kinds += ["PUBREC", "PUBREL"]
        kinds.append(response["packet_type"])
    return kinds


@pytest.mark.parametrize("name", CAPTURES)
def test_packet_types_match_tshark(name: str) -> None:
    out = tshark(name, "-Y", "mqtt", "-T", "fields", "-e", "mqtt.msgtype")
    theirs = Counter(NAMES[int(t)] for line in out.split() for t in line.split(","))
    assert sum(theirs.values()) >= 25
    assert Counter(our_packet_types(dissect_capture(GOLDEN / "mqtt" / f"{name}.pcap"))) == theirs


@pytest.mark.parametrize("name", CAPTURES)
def test_publish_topics_and_qos_match_tshark(name: str) -> None:
    theirs = []
    for packet in tshark_packets(name):
        flags = packet["mqtt.hdrflags_tree"]
        if flags["mqtt.msgtype"] == "3":
            theirs.append((packet["mqtt.topic"], int(flags["mqtt.qos"]),
                           flags["mqtt.retain"] == "1"))
    ours = [(e["request"]["topic"], e["request"]["qos"], e["request"]["retain"])
            for e in dissect_capture(GOLDEN / "mqtt" / f"{name}.pcap")
            if e["request"]["packet_type"] == "PUBLISH"]
    assert len(ours) >= 8
    assert Counter(ours) == Counter(theirs)   # ours in order of completion
