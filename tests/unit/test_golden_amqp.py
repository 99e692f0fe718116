from __future__ import annotations

import shark.kfl as kfl
from support.golden import GOLDEN, assert_golden, dissect_capture


def test_amqp_golden() -> None:
    entries = dissect_capture(GOLDEN / "amqp" / "basic.pcap")
    assert {e["protocol"] for e in entries} == {"amqp"}
    methods = [e["request"]["method"] for e in entries]
    assert methods[:4] == ["connection.start", "connection.tune", "connection.open",
                           "channel.open"]
    assert methods[-1] == "connection.close"
    for name in ("exchange.declare", "queue.declare", "queue.bind", "basic.get",
                 "basic.consume", "basic.cancel", "confirm.select", "queue.purge",
                 "queue.delete", "exchange.delete"):
        assert name in methods, name
    publishes = [e for e in entries if e["request"]["method"] == "basic.publish"]
    assert [p["request"]["routing_key"] for p in publishes] == [
        "orders.created", "orders.paid", publishes[2]["request"]["routing_key"],
        "orders.shipped"]
    created = publishes[0]["request"]
    assert created["properties"]["content_type"] == "application/json"
    assert created["properties"]["delivery_mode"] == 2
    assert created["properties"]["headers_count"] == 2 and created["body_size"] == 25
    assert publishes[0]["response"] is None and publishes[0]["status"] is None
    # published in confirm mode: paired with the broker's basic.ack
    assert publishes[3]["response"]["method"] == "basic.ack" and publishes[3]["status"] == 200
    get = next(e for e in entries if e["request"]["method"] == "basic.get")
    assert get["response"]["method"] == "basic.get-ok" and get["response"]["body_size"] == 25
    deliveries = [e for e in entries if e["request"]["method"] == "basic.deliver"]
    assert len(deliveries) == 2
    assert all(d["response"]["method"] == "basic.ack" for d in deliveries)
    assert deliveries[1]["request"]["body_size"] == 3000
    missing = next(e for e in entries if e["request"].get("passive"))
    assert missing["status"] == 404
    assert missing["response"]["error"].startswith("NOT_FOUND - no queue 'missing-")
    closes = [e for e in entries if e["request"]["method"] == "channel.close"]
    assert [c["status"] for c in closes] == [404, 0]
    assert all(e["complete"] and not e["notes"] for e in entries)
    # the ack of the basic.get-ok message is an entry alone; every other request is answered
    lone = [e["summary"] for e in entries if e["response"] is None]
    assert lone == [p["summary"] for p in publishes[:3]] + ["basic.ack 1"]
    def select(query: str) -> list[str]:
        test = kfl.compile(query)
        return [e["summary"] for e in entries if test(e)]
    assert len(select('amqp and request.method == "basic.publish" and '
                      'request.routing_key.startsWith("orders.")')) == 3
    assert select("amqp and response.error != null") == [missing["summary"], closes[0]["summary"]]
    assert len(select('amqp and request.sender == "server" and request.body_size > 1000')) == 1
    assert_golden(GOLDEN / "amqp" / "basic.json", entries)
