"""WebSocket golden capture: the `websockets` library on both ends, through an HTTP/1.1
Upgrade (capture_websocket.py); entries come through the real path (HTTP/1 -> upgrade hook)."""

from __future__ import annotations


from support.golden import GOLDEN, assert_golden, dissect_capture


# Remove the marker once HttpSession calls its hook with emit and body_limit (the HTTP/2
# work's h2c golden test waits for the same change).
def test_websocket_golden() -> None:
    entries = dissect_capture(GOLDEN / "websocket" / "basic.pcap")
    assert [(e["protocol"], e["summary"]) for e in entries] == [
        ("http", "GET /chat"),
        ("websocket", "text 15 bytes →"), ("websocket", "← text 15 bytes"),
        ("websocket", "binary 512 bytes →"), ("websocket", "← binary 512 bytes"),
        ("websocket", "text 23 bytes →"), ("websocket", "← text 23 bytes"),
        ("websocket", "ping →"), ("websocket", "close 1000 →"),
        ("http", "GET /chat"),
        *[("websocket", s) for _ in range(3) for s in ("text 265 bytes →", "← text 265 bytes")],
        ("websocket", "text 12 bytes →"), ("websocket", "← close 4000")]
    ws = [e for e in entries if e["protocol"] == "websocket"]
    assert all(e["complete"] and not e["notes"] for e in ws)
    hello, echo, binary, _, fragmented, _, ping, close = ws[:8]
    assert hello["request"] == {"direction": "client", "opcode": "text", "length": 15,
                                "fin": True, "frames": 1, "text": "hello websocket"}
    assert echo["request"]["direction"] == "server" and echo["response"] is None
    assert "text" not in binary["request"] and binary["size"]["request"] == 4 + 4 + 512
    assert fragmented["request"]["frames"] == 4
    assert fragmented["request"]["text"] == "fragmented text message"
    assert ping["response"]["opcode"] == "pong" and ping["response"]["data"] == "are you there"
    assert (close["status"], close["request"]["reason"], close["response"]["code"]) == (
        1000, "done", 1000)
    compressed = ws[8]
    assert compressed["request"]["compressed"] is True
    assert compressed["request"]["text"].startswith('{"seq": 0, "payload": "compress me')
    assert compressed["request"]["wire_length"] < compressed["request"]["length"]
    last = ws[-1]
    assert (last["status"], last["request"]["direction"], last["response"]["direction"]) == (
        4000, "server", "client")
    assert_golden(GOLDEN / "websocket" / "basic.json", entries)
