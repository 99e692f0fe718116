from __future__ import annotations

import pytest

from support.golden import GOLDEN, assert_golden, dissect_capture

TRAFFIC = [
    "SET shark:golden:user:42", "GET shark:golden:user:42", "GET shark:golden:missing",
    "INCR shark:golden:counter", "INCR shark:golden:user:42",
    *[f"SET shark:golden:pipe:{n}" for n in range(10)],
    "MULTI", "INCRBY shark:golden:counter", "GET shark:golden:user:42",
    "EXPIRE shark:golden:counter", "EXEC", "HSET shark:golden:hash", "HGETALL shark:golden:hash",
]


@pytest.mark.parametrize("version", [2, 3])
def test_redis_golden(version: int) -> None:
    entries = dissect_capture(GOLDEN / "redis" / f"resp{version}.pcap")
    assert all(e["protocol"] == "redis" and e["complete"] for e in entries)
    summaries = [e["summary"] for e in entries]
    main = [s for s in summaries if not s.startswith(("CLIENT ", "HELLO"))]
    assert main[:len(TRAFFIC)] == TRAFFIC
    by_summary = {e["summary"]: e for e in entries}
    assert by_summary["GET shark:golden:missing"]["response"]["type"] == "null"
    assert by_summary["INCR shark:golden:user:42"]["response"]["error"] == \
        "ERR value is not an integer or out of range"
    assert by_summary["INCR shark:golden:counter"]["response"]["value"] == 1
    queued = [e for e in entries if e["response"]["value"] == "QUEUED"]
    assert len(queued) == 3
    assert by_summary["EXEC"]["response"] == {
        "type": "array", "value": "[2, alice, 1]", "error": None, "length": 3}
    hgetall = by_summary["HGETALL shark:golden:hash"]["response"]
    assert hgetall["type"] == ("map" if version == 3 else "array")
    assert hgetall["length"] == (2 if version == 3 else 4)
    subscribe = by_summary["SUBSCRIBE shark:golden:news"]
    assert subscribe["response"]["confirmations"] == 1
    assert subscribe["response"]["type"] == ("push" if version == 3 else "array")
    message = by_summary["message shark:golden:news"]
    assert message["request"] == {} and message["response"]["kind"] == "message"
    assert message["response"]["channel"] == "shark:golden:news"
    assert by_summary["PUBLISH shark:golden:news"]["response"]["value"] == 1
    if version == 3:
        assert by_summary["HELLO 3"]["response"]["type"] == "map"
    # status: 0 for a reply, 1 for an error reply
    assert all(e["status"] == (1 if e["response"] and e["response"]["error"] else 0)
               for e in entries)
    assert any(e["status"] == 1 for e in entries)
    assert_golden(GOLDEN / "redis" / f"resp{version}.json", entries)
