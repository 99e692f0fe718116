"""HTTP/2 and gRPC golden captures (tests/golden/capture_http2.py): httpx -> hypercorn h2c with
prior knowledge, the h2 client's Upgrade: h2c, grpcio client and server; and the gRPC capture
cut so that it starts mid-connection."""

from __future__ import annotations

from pathlib import Path

import dpkt
import pytest

from support.golden import GOLDEN, assert_golden, dissect_capture

H2 = GOLDEN / "http2"


def test_h2c_prior_knowledge_golden() -> None:
    entries = dissect_capture(H2 / "h2c.pcap")
    assert [(e["protocol"], e["summary"], e["status"]) for e in entries] == [
        ("http2", "GET /json?q=1", 200), ("http2", "POST /echo", 200),
        ("http2", "GET /missing", 404)]
    get, post, missing = entries
    assert get["request"]["query"] == {"q": ["1"]}
    assert get["request"]["headers"]["user-agent"].startswith("python-httpx/")
    assert get["response"]["headers"]["server"] == "hypercorn-h2"
    assert post["request"]["content_length"] == 100 == post["response"]["content_length"]
    assert [e["request"]["stream_id"] for e in entries] == [1, 3, 5]
    assert all(e["complete"] and not e["notes"] for e in entries)
    assert_golden(H2 / "h2c.json", entries)


def test_grpc_golden() -> None:
    entries = dissect_capture(H2 / "grpc.pcap")
    assert [(e["protocol"], e["summary"], e["status"]) for e in entries] == [
        ("grpc", "/golden.Items/Get", 0), ("grpc", "/golden.Items/List", 0),
        ("grpc", "/golden.Items/Sum", 0), ("grpc", "/golden.Items/Get", 5)]
    get, lst, total, missing = entries
    assert get["request"]["service"] == "golden.Items" and get["request"]["method"] == "Get"
    assert get["request"]["messages"] == 1 and get["response"]["message_sizes"] == [15]
    assert lst["response"]["messages"] == 3 and total["request"]["messages"] == 3
    assert missing["response"]["grpc_message"] == "no such item: missing"
    assert missing["response"]["error"] == {"code": 5, "name": "NOT_FOUND",
                                            "message": "no such item: missing"}
    assert missing["response"]["messages"] == 0        # a trailers-only response
    assert all(e["complete"] and not e["notes"] for e in entries)
    assert_golden(H2 / "grpc.json", entries)


def _cut(src: Path, dst: Path, skip: int) -> Path:
    with src.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        packets = list(reader)
        linktype = reader.datalink()
    with dst.open("wb") as f:
        writer = dpkt.pcap.Writer(f, linktype=linktype, nano=False)
        for ts, buf in packets[skip:]:
            writer.writepkt(buf, ts)
    return dst


@pytest.mark.parametrize("skip", [10, 14, 20])
def test_grpc_capture_started_mid_connection(tmp_path: Path, skip: int) -> None:
    entries = dissect_capture(_cut(H2 / "grpc.pcap", tmp_path / "cut.pcap", skip))
    assert entries and all(e["protocol"] in ("grpc", "http2") for e in entries)
    assert all(e["src"]["port"] != entries[0]["dst"]["port"] for e in entries)
    # Nothing is dropped and what is unknown is said: every later call is there, marked.
    sids = {e["request"]["stream_id"] for e in entries}
    assert {5, 7} <= sids
    for e in entries:
        if e["request"]["stream_id"] > 1:
            assert any("decodable" in n or "not captured" in n for n in e["notes"]), e
    paths = [e["request"].get("path") for e in entries]
    assert "/golden.Items/Sum" in paths          # a literal :path survives unknown tables


def test_h2c_upgrade_golden() -> None:
    entries = dissect_capture(H2 / "upgrade.pcap")
    assert [(e["protocol"], e["summary"], e["status"]) for e in entries] == [
        ("http", "GET /json", 101), ("http2", "stream 1 (h2c upgrade request) -> 200", 200),
        ("http2", "GET /missing", 404)]
    assert entries[0]["response"]["upgrade"] == "h2c"
    assert entries[1]["response"]["content_type"] == "application/json"
    assert all(e["complete"] for e in entries)
    assert_golden(H2 / "upgrade.json", entries)
