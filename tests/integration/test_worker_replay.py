"""`python -m worker --pcap FILE`: a file goes through the path live packets take."""

from __future__ import annotations

from pathlib import Path

import dpkt
import pytest

from factories import tcp_conversation
from support.processes import wait_for


def write_pcap(path: Path, packets: list[tuple[int, bytes, int]]) -> None:
    with path.open("wb") as handle:
        writer = dpkt.pcap.Writer(handle, nano=True)
        for ts_ns, frame, _wirelen in packets:
            writer.writepkt(frame, ts=ts_ns / 1e9)


def conversation(n: int, port: int, start_ns: int) -> list[tuple[int, bytes, int]]:
    request = b"GET /item/%d HTTP/1.1\r\nHost: shop\r\n\r\n" % n
    body = b'{"n": %d}' % n
    response = (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return tcp_conversation([request], [response], client=("10.0.0.1", port),
                            server=("10.0.0.2", 8080), start_ns=start_ns)


@pytest.fixture
def capture_file(tmp_path: Path) -> Path:
    packets = []
    for n in range(5):
        packets += conversation(n, 41000 + n, 1_700_000_000_000_000_000 + n * 10**9)
    path = tmp_path / "five.pcap"
    write_pcap(path, packets)
    return path


def test_replayed_file_is_served_like_live_traffic(start_worker, capture_file):
    worker = start_worker("--pcap", str(capture_file))
    entries = wait_for(lambda: (e := worker.entries()) and len(e) == 5 and e, what="5 entries")
    assert [e["request"]["path"] for e in entries] == [f"/item/{n}" for n in range(4, -1, -1)]
    assert {e["status"] for e in entries} == {500}
    assert entries[-1]["ts"] == pytest.approx(1_700_000_000.0 + 0.003, abs=1e-6)
    # request at 3 ms (after the handshake), its ACK at 4 ms, the response at 5 ms
    assert entries[-1]["elapsed_ms"] == pytest.approx(2.0)
    detail = worker.get(f"/entries/{entries[0]['id']}").json()
    assert detail["response"]["body"]["data"] == '{"n": 4}'
    status = wait_for(lambda: (s := worker.status())["capture"]["sources"][0]["finished"] and s,
                      what="the replay to finish")
    assert status["capture"]["sources"][0]["error"] == ""


def test_damaged_file_keeps_what_was_read_and_says_where(start_worker, capture_file, tmp_path):
    data = capture_file.read_bytes()
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(data[: len(data) - 30])   # the last packet is cut short
    worker = start_worker("--pcap", str(damaged))
    status = wait_for(lambda: (s := worker.status())["capture"]["sources"][0]["finished"]
                      and s["dissection"]["caught_up"] and s, what="the replay to finish")
    error = status["capture"]["sources"][0]["error"]
    assert "damaged.pcap" in error and "byte" in error and "kept" in error
    entries = worker.entries()
    assert len(entries) == 5   # the damage was in the last connection's closing packets


def test_bpf_applies_to_a_replayed_file(start_worker, capture_file):
    worker = start_worker("--pcap", str(capture_file), "--bpf", "tcp port 41002")
    wait_for(lambda: worker.status()["capture"]["sources"][0]["finished"], what="the replay")
    entries = wait_for(lambda: worker.entries(), what="an entry")
    assert [e["request"]["path"] for e in entries] == ["/item/2"]


def test_a_cap_reached_is_counted_in_status_and_noted_in_the_entries(start_worker, tmp_path):
    # one connection pipelining 200 requests that are never answered: HTTP/1's pending cap
    requests = [b"GET /p/%d HTTP/1.1\r\nHost: shop\r\n\r\n" % n for n in range(200)]
    path = tmp_path / "pipelined.pcap"
    write_pcap(path, tcp_conversation([b"".join(requests)], [b""], server=("10.0.0.2", 8080),
                                      close=None))
    worker = start_worker("--pcap", str(path))
    status = wait_for(lambda: (s := worker.status())["dissection"]["cut"] and s,
                      what="the cap to be counted")
    assert status["dissection"]["cut"] == {"http1 pending": 128}
    entries = worker.entries(limit=1000)
    assert len(entries) == 128
    assert all(e["notes"][0].startswith("cut: http1 pending: over 128 requests") for e in entries)


def test_bytes_a_session_skipped_are_counted_in_status(start_worker, tmp_path):
    # garbage where the second request should start: the HTTP/1 reader resyncs past it
    garbage = b"\x00\x01 not a request line\r\n"
    requests = [b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\n",
                garbage + b"GET /b HTTP/1.1\r\nHost: shop\r\n\r\n"]
    responses = [b"HTTP/1.1 204 No Content\r\n\r\n"] * 2
    path = tmp_path / "garbage.pcap"
    write_pcap(path, tcp_conversation(requests, responses, server=("10.0.0.2", 8080)))
    worker = start_worker("--pcap", str(path))
    status = wait_for(lambda: (s := worker.status())["dissection"]["skipped"] and s,
                      what="the skipped bytes to be counted")
    assert status["dissection"]["skipped"] == {"http": len(garbage)}
