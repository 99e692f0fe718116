"""`python -m worker --dissect-memory`: the sessions' memory budget, through the real worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from factories import LINKTYPE_ETHERNET, tcp_conversation
from shark.pcap import PcapWriter
from support.processes import wait_for

START = 1_700_000_000_000_000_000
NOTE = "cut: memory budget: "


def write_pcap(path: Path, packets: list[tuple[int, bytes, int]]) -> None:
    writer = PcapWriter(LINKTYPE_ETHERNET, 262144)
    with path.open("wb") as handle:
        for ts_ns, frame, wirelen in sorted(packets, key=lambda packet: packet[0]):
            handle.write(writer.add(ts_ns, frame, wirelen) or b"")
        handle.write(writer.flush())


def test_sessions_over_the_budget_are_cut_counted_and_noted(start_worker, tmp_path):
    packets = []
    for n in range(24):   # 24 connections, each leaving a 40-63 KB request head unfinished
        head = b"GET /big/%d HTTP/1.1\r\nHost: shop\r\nX-Pad: " % n + b"a" * (40_000 + 1000 * n)
        packets += tcp_conversation([head], [], client=("10.0.0.1", 41000 + n),
                                    server=("10.0.0.2", 8080), close=None, start_ns=START + n * 1000)
    later = tcp_conversation([b"GET /later HTTP/1.1\r\nHost: shop\r\n\r\n"],
                             [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
                             client=("10.0.0.3", 50000), server=("10.0.0.2", 8080),
                             start_ns=START + 10**9)
    path = tmp_path / "heads.pcap"
    write_pcap(path, packets + later)
    worker = start_worker("--pcap", str(path), "--dissect-memory", "256KiB")
    status = wait_for(lambda: (s := worker.status())["capture"]["sources"][0]["finished"]
                      and s["dissection"]["caught_up"] and s["index"]["entries"] >= 25 and s,
                      what="the replay to be dissected")
    memory = status["dissection"]["memory"]
    assert memory["limit"] == 256 * 1024
    assert memory["peak"] > memory["limit"] and memory["cut_sessions"] > 0
    assert memory["cut_bytes"] >= memory["peak"] - memory["limit"]
    assert memory["held"] <= memory["limit"]
    entries = worker.entries(limit=1000)
    cut = [e for e in entries if any(note.startswith(NOTE) for note in e["notes"])]
    # each cut session emitted what it had: a head, or (cut again while it read on) the rest
    # of one that detection held, as a generic tcp entry
    assert 0 < len(cut) == status["dissection"]["cut"]["memory budget"] <= memory["cut_sessions"]
    assert all(not e["complete"] for e in cut)
    assert {e["request"]["path"] for e in cut if e["protocol"] == "http"} <= \
        {f"/big/{n}" for n in range(24)}
    assert {e["protocol"] for e in cut} <= {"http", "tcp"} and "http" in {e["protocol"] for e in cut}
    [after] = [e for e in entries if e["request"].get("path") == "/later"]
    assert after["complete"] and after["status"] == 200 and after["notes"] == []


def test_a_budget_below_the_minimum_is_refused(tmp_path):
    path = tmp_path / "empty.pcap"
    write_pcap(path, [])
    done = subprocess.run([sys.executable, "-m", "worker", "--pcap", str(path), "--storage-dir",
                           str(tmp_path / "store"), "--dissect-memory", "1KiB"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "--dissect-memory: 1KiB is below the minimum of 256KiB" in done.stderr
