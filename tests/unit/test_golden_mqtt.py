from __future__ import annotations

import pytest

import shark.kfl as kfl
from support.golden import GOLDEN, assert_golden, dissect_capture


@pytest.mark.parametrize("name,version", [("v311", "3.1.1"), ("v5", "5.0")])
def test_mqtt_golden(name: str, version: str) -> None:
    entries = dissect_capture(GOLDEN / "mqtt" / f"{name}.pcap")
    assert {e["protocol"] for e in entries} == {"mqtt"}
    kinds = [e["request"]["packet_type"] for e in entries]
    assert kinds[0] == "CONNECT" and kinds[-1] == "DISCONNECT"
    connect = entries[0]
    assert connect["request"]["version"] == version
    assert connect["request"]["client_id"].startswith("golden-")
    assert connect["request"]["username_present"] and connect["status"] == 0
    assert connect["response"]["packet_type"] == "CONNACK"
    assert kinds.count("SUBSCRIBE") == 2 and kinds.count("UNSUBSCRIBE") == 1
    publishes = [e for e in entries if e["request"]["packet_type"] == "PUBLISH"]
    sent = [p for p in publishes if p["request"]["sender"] == "client"]
    received = [p for p in publishes if p["request"]["sender"] == "server"]
    assert [p["request"]["qos"] for p in sent] == [0, 1, 2, 1, 1]
    assert len(received) >= 3
    for p in publishes:
        qos = p["request"]["qos"]
        expected = {0: None, 1: "PUBACK", 2: "PUBCOMP"}[qos]
        assert (p["response"] or {}).get("packet_type") == expected
        assert p["summary"] == f"PUBLISH {p['request']['topic']} qos{qos}"
    assert sent[3]["request"]["retain"] and sent[4]["request"]["payload_size"] == 0
    if version == "5.0":
        assert sent[0]["request"]["properties"]["content_type"] == "application/json"
        # nobody subscribes to the retained topic: 0x10 No matching subscribers, not an error
        assert sent[3]["status"] == 0x10 and sent[3]["response"]["error"] is None
    unsub = next(e for e in entries if e["request"]["packet_type"] == "UNSUBSCRIBE")
    assert len(unsub["request"]["topics"]) == 3 and unsub["response"]["error"] is None
    assert all(e["complete"] and not e["notes"] for e in entries)
    def count(query: str) -> int:
        test = kfl.compile(query)
        return sum(1 for e in entries if test(e))
    assert count('mqtt and request.topic.contains("/sensors/") and request.qos > 0') == sum(
        1 for p in publishes if "/sensors/" in p["request"]["topic"] and p["request"]["qos"])
    assert count("mqtt and response.error != null") == 0
    assert count(f'mqtt and request.packet_type == "CONNECT" and request.version == "{version}"') == 1
    assert_golden(GOLDEN / "mqtt" / f"{name}.json", entries)
