"""The hub's recovery paths against real workers: a worker killed while its pcap is merged, a
segment evicted under a detail or pcap read (the worker's 410 over HTTP), a worker restarted
mid-feed with its store reset, and a worker whose stream relays entries without an id."""

from __future__ import annotations

import http.server
import json
import shutil
import signal
import struct
import threading
from pathlib import Path

import dpkt
import httpx
import pytest

from support.processes import TEST_TOKEN, free_port, wait_for
from test_hub_live import AUTH, Hub, SseReader

pytestmark = pytest.mark.root


def write_udp_pcap(path: Path, count: int, first_ts: float, size: int = 1200) -> None:
    """A pcap of `count` UDP datagrams 127.0.0.1:40000 -> :40001, 1 ms apart from `first_ts`."""
    with path.open("wb") as out:
        writer = dpkt.pcap.Writer(out, linktype=dpkt.pcap.DLT_EN10MB)
        for number in range(count):
            udp = dpkt.udp.UDP(sport=40000, dport=40001, data=struct.pack("!I", number) + b"x" * size)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(src=b"\x7f\x00\x00\x01", dst=b"\x7f\x00\x00\x01", p=dpkt.ip.IP_PROTO_UDP, data=udp)
            ip.len = len(ip)
            frame = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x02" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
            writer.writepkt(bytes(frame), ts=first_ts + number / 1000)


def pcap_stamps(data: bytes) -> list[float]:
    """Timestamps of the whole records of a (nanosecond) pcap prefix."""
    stamps, offset = [], 24
    while offset + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from("<IIII", data, offset)
        if offset + 16 + incl > len(data):
            break
        stamps.append(sec + frac / 1e9)
        offset += 16 + incl
    return stamps


def replayed(worker, packets: int) -> None:  # noqa: ANN001
    wait_for(lambda: all(s.get("finished") for s in worker.status()["capture"]["sources"])
             and worker.status()["capture"]["received"] >= packets, what=f"{worker.node} stored its pcap")


def test_a_worker_killed_mid_download_makes_the_merged_pcap_fail_not_look_whole(start_worker, tmp_path):
    big, small = tmp_path / "big.pcap", tmp_path / "small.pcap"
    write_udp_pcap(big, 40_000, 1_700_000_000.0)          # ~50 MB: far more than socket buffers
    write_udp_pcap(small, 5, 1_700_000_100.0, size=10)     # after all of big's packets
    alpha = start_worker("--pcap", str(big), node="alpha", token=TEST_TOKEN)
    beta = start_worker("--pcap", str(small), node="beta", token=TEST_TOKEN)
    replayed(alpha, 40_000)
    replayed(beta, 5)
    hub = Hub(alpha.url, beta.url)
    try:
        data = b""
        with httpx.Client(timeout=60) as client, \
                client.stream("GET", hub.url + "/pcap", headers=AUTH) as response:
            assert response.status_code == 200 and "x-shark-partial" not in response.headers
            chunks = response.iter_bytes()
            data += next(chunks)
            alpha.signal(signal.SIGKILL)
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in chunks:
                    data += chunk
        stamps = pcap_stamps(data)
        assert 0 < len([t for t in stamps if t < 1_700_000_100]) < 40_000   # alpha's, cut short
        # the merge went on with beta after alpha broke, then failed the download
        assert len([t for t in stamps if t >= 1_700_000_100]) == 5
        wait_for(lambda: "pcap from alpha" in hub.output and "left out" in hub.output, what="the hub's log line")
        # before the answer starts, a dead worker is named in X-Shark-Partial
        after = hub.get("/pcap")
        assert after.status_code == 200 and after.headers["x-shark-partial"] == "alpha"
        assert len(pcap_stamps(after.content)) == 5
    finally:
        hub.stop()


def test_a_segment_evicted_under_a_read_is_a_410_through_the_hub(start_worker, http_server, tmp_path):
    store = tmp_path / "evicting"
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", node="alpha",
                          token=TEST_TOKEN, storage_dir=store)
    hub = Hub(worker.url)
    try:
        httpx.get(f"http://127.0.0.1:{http_server}/json", timeout=10)
        entry = wait_for(lambda: worker.entries(q="http"), what="an entry")[0]
        assert hub.get(f"/entries/{entry['id']}").status_code == 200
        # the segments go as eviction takes them. Until the worker prunes their index rows (it
        # looks every 0.25 s) a read finds the row and not the packets: 410; after, no row: 404.
        # Either way the hub passes the worker's answer on, saying why (never a 502).
        for segment in (store / "pcap").iterdir():
            segment.unlink()
        for path in (f"/entries/{entry['id']}", f"/entries/{entry['id']}/pcap"):
            answer = hub.get(path)
            assert answer.status_code in (404, 410), (path, answer.text)
            assert "evicted" in answer.json()["detail"]
        # a merged pcap of evicted entries is an empty file, not a failure
        merged = hub.get("/pcap", params={"q": "http"})
        assert merged.status_code == 200 and "x-shark-partial" not in merged.headers
        assert pcap_stamps(merged.content) == []
    finally:
        hub.stop()


def test_a_worker_restarted_with_its_store_reset_mid_feed(start_worker, http_server, tmp_path):
    port = free_port()
    args = ("--iface", "lo", "--bpf", f"tcp port {http_server}")
    worker = start_worker(*args, node="alpha", token=TEST_TOKEN, port=port, storage_dir=tmp_path / "first")
    hub = Hub(worker.url)
    reader = SseReader(hub.url + "/stream", q="http")
    try:
        wait_for(lambda: reader.of("status"), what="the worker up")
        for number in range(3):
            httpx.get(f"http://127.0.0.1:{http_server}/before?n={number}", timeout=10)
        wait_for(lambda: len(reader.entries()) == 3, what="3 entries")
        worker.signal(signal.SIGKILL)
        worker.process.wait(10)
        shutil.rmtree(tmp_path / "first")
        worker = start_worker(*args, node="alpha", token=TEST_TOKEN, port=port, storage_dir=tmp_path / "second")
        httpx.get(f"http://127.0.0.1:{http_server}/after", timeout=10)
        wait_for(lambda: worker.entries(q="http"), what="the new store's first entry")
        got = wait_for(lambda: len(e := reader.entries()) == 4 and e, what="its entry on the feed")
        assert got[-1]["id"] == "alpha:1" and got[-1]["request"]["path"] == "/after"
        told = wait_for(lambda: reader.of("lost"), what="a notice of the store reset")
        assert told[0]["node"] == "alpha" and "another store" in told[0]["reason"]
    finally:
        reader.close()
        hub.stop()


class StripIds(http.server.BaseHTTPRequestHandler):
    """A relay in front of a worker whose /stream drops every `id:` line."""

    protocol_version = "HTTP/1.1"
    upstream = ""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        headers = {"Authorization": self.headers.get("Authorization", "")}
        with httpx.Client(timeout=httpx.Timeout(30, read=None)) as client, \
                client.stream("GET", self.upstream + self.path, headers=headers) as response:
            self.send_response(response.status_code)
            self.send_header("Content-Type", response.headers.get("content-type", "text/plain"))
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                if self.path.split("?")[0].endswith("/stream"):
                    for line in response.iter_lines():
                        if not line.startswith("id:"):
                            self.wfile.write(line.encode() + b"\n")
                            self.wfile.flush()
                else:
                    self.wfile.write(response.read())
            except OSError:
                pass


def test_a_worker_relaying_entries_without_an_id(start_worker, http_server):
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", node="alpha", token=TEST_TOKEN)
    StripIds.upstream = worker.url.removesuffix("/api/v1")
    relay = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StripIds)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    hub = Hub(f"http://127.0.0.1:{relay.server_address[1]}")
    reader = SseReader(hub.url + "/stream", q="http")
    try:
        wait_for(lambda: reader.of("status"), what="the relayed worker up")
        for number in range(2):
            httpx.get(f"http://127.0.0.1:{http_server}/relayed?n={number}", timeout=10)
        got = wait_for(lambda: len(e := reader.entries()) == 2 and e, what="both entries, not dropped")
        assert [e["id"] for e in got] == ["alpha:1", "alpha:2"]
        # the position stays where the feed started: a resume re-reads nothing it cannot
        assert got[0]["_id"] == got[1]["_id"] and got[0]["_id"].startswith("alpha@")
        wait_for(lambda: "without an id" in hub.output, what="the hub's warning")
        assert json.loads(reader.events[0]["data"])["ok"] is True
    finally:
        reader.close()
        hub.stop()
        relay.shutdown()
        relay.server_close()
