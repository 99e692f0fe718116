from __future__ import annotations

from support.golden import GOLDEN, assert_golden, dissect_capture


def test_http1_golden() -> None:
    entries = dissect_capture(GOLDEN / "http1" / "basic.pcap")
    assert [e["summary"] for e in entries] == [
        "GET /json?q=1", "POST /echo", "GET /chunked", "GET /gzip", "HEAD /head", "GET /nobody",
        "GET /status/503", "GET /status/404"]
    assert_golden(GOLDEN / "http1" / "basic.json", entries)
