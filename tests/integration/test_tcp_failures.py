"""Failed TCP connections as entries (issue 15), from real sockets on lo captured by tcpdump,
dissected through the worker's path and checked against tshark on the same capture."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from shark import kfl
from support.golden import dissect_capture, record
from support.netns import in_netns
from support.processes import free_port

pytestmark = pytest.mark.root

REQUEST = b"GET /orders HTTP/1.1\r\nHost: shop\r\n\r\n"


def tshark_resets(path: Path) -> list[tuple[int, int]]:
    """(source port, destination port) of every segment with RST, as tshark reads the file."""
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "tcp.flags.reset == 1", "-T", "fields",
                          "-e", "tcp.srcport", "-e", "tcp.dstport"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [tuple(map(int, line.split())) for line in out.splitlines() if line.strip()]


def matching(query: str, entries: list[dict]) -> list[dict]:
    compiled = kfl.compile(query)
    return [e for e in entries if compiled(e)]


def resetting_server(port: int, reply: bytes) -> threading.Thread:
    """Accepts one connection, reads the request, sends `reply` and closes with SO_LINGER 0
    (an RST instead of a FIN)."""
    listener = socket.create_server(("127.0.0.1", port))

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            data = b""
            while not data.endswith(b"\r\n\r\n"):
                data += conn.recv(4096)
            if reply:
                conn.sendall(reply)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def client_until_reset(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(REQUEST)
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass


def test_connect_to_a_closed_port_is_a_refused_entry(tmp_path):
    port = free_port()        # bound and closed again: nothing listens there
    path = tmp_path / "refused.pcap"

    def connect() -> None:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10)

    record(path, f"tcp port {port}", connect)
    entries = dissect_capture(path)
    (entry,) = entries
    assert entry["protocol"] == "tcp" and entry["dst"]["port"] == port
    assert entry["summary"] == f"connection refused: 127.0.0.1:{port}"
    assert entry["tcp"]["failure"] == "refused" and entry["tcp"]["rst"] == "server"
    assert entry["tcp"]["syns"] == 1 and entry["tcp"]["handshake_ms"] is None
    assert matching('tcp.failure == "refused"', entries) == entries
    # tshark sees the one RST, sent by the closed port
    assert [src for src, _ in tshark_resets(path)] == [port]


@pytest.mark.parametrize("reply, when", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10, "mid-response"),
    (b"", "before the response"),
])
def test_server_reset_cuts_the_exchange_it_was_answering(tmp_path, reply, when):
    port = free_port()
    path = tmp_path / "reset.pcap"
    server = resetting_server(port, reply)
    record(path, f"tcp port {port}", lambda: client_until_reset(port))
    server.join(10)
    entries = dissect_capture(path)
    (entry,) = entries       # the HTTP exchange carries the reset: no separate tcp entry
    assert entry["protocol"] == "http" and entry["summary"] == "GET /orders"
    assert not entry["complete"]
    assert f"connection reset by server {when}" in entry["notes"]
    assert entry["tcp"]["rst"] == "server" and entry["tcp"]["failure"] == "reset"
    assert entry["tcp"]["handshake_ms"] is not None and entry["tcp"]["closed_by"] is None
    assert matching('http and tcp.rst == "server"', entries) == entries
    assert matching("tcp.handshake_ms >= 0", entries) == entries
    assert (port, entry["src"]["port"]) in tshark_resets(path)


def test_syns_dropped_by_a_firewall_are_a_timeout_entry(tmp_path):
    # A namespace of our own whose iptables drops SYNs to one port; Linux retransmits the SYN
    # every second at first (net.ipv4.tcp_syn_linear_timeouts = 4): 0, 1, 2, 3, 4 s.
    name = f"shark-t15-{os.getpid()}"
    port = 5544
    path = tmp_path / "timeout.pcap"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        def run(*argv: str) -> None:
            subprocess.run(["ip", "netns", "exec", name, *argv], check=True, capture_output=True)
        run("ip", "link", "set", "lo", "up")
        run("sysctl", "-q", "-w", "net.ipv4.tcp_syn_linear_timeouts=4")
        run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(port), "--syn", "-j", "DROP")

        def connect() -> None:
            def attempt() -> None:
                with pytest.raises(TimeoutError):
                    socket.create_connection(("127.0.0.1", port), timeout=4.5)
            in_netns(name, attempt)

        record(path, f"tcp port {port}", connect, netns=name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    entries = dissect_capture(path)
    (entry,) = entries
    assert entry["protocol"] == "tcp" and entry["tcp"]["failure"] == "timeout"
    assert entry["summary"] == f"connection timed out: 127.0.0.1:{port}"
    assert matching('tcp.failure == "timeout"', entries) == entries
    # tshark sees the SYNs (the first, then retransmissions) and no answer; the entry was made
    # once 3 s had passed, with the SYNs seen by then (the one at 4 s came after)
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "tcp.flags.syn == 1", "-T", "fields",
                          "-e", "tcp.flags.ack", "-e", "tcp.analysis.retransmission"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.split("\n")
    syns = [line for line in out if line.strip()]
    assert 4 <= entry["tcp"]["syns"] <= len(syns)
    assert all(line.split("\t")[0] in ("0", "False") for line in syns)     # no SYN-ACK
    assert sum(1 for line in syns if line.split("\t")[1:] != [""]) == len(syns) - 1


def test_dns_to_a_port_with_no_listener_is_refused_by_icmp(tmp_path):
    port = free_port()
    path = tmp_path / "unreachable.pcap"

    def query() -> None:
        result = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=2",
                                 "shop.example.", "A"], capture_output=True, text=True, timeout=30)
        assert "refused" in result.stdout.lower() or "unreachable" in result.stdout.lower(), result.stdout

    record(path, f"udp port {port} or icmp", query)
    entries = dissect_capture(path)
    (entry,) = entries
    assert entry["protocol"] == "dns" and entry["dst"]["port"] == port
    assert entry["request"]["qname"] == "shop.example" and entry["response"] is None
    assert entry["udp"] == {"failure": "refused"} and not entry["complete"]
    assert "refused: ICMP port unreachable (nothing listens on that port)" in entry["notes"]
    assert matching('dns and udp.failure == "refused"', entries) == entries
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "icmp.type == 3 and icmp.code == 3",
                          "-T", "fields", "-e", "udp.dstport"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert out == [str(port)]
