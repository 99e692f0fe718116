"""Helpers for the live capture-source tests: traffic makers, a tcpdump peer, a collector.

Imported explicitly by test_sources_live.py (not a pytest conftest)."""

from __future__ import annotations

import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import dpkt

from worker.packet import RawPacket
from worker.sources.base import Source


def udp_receiver() -> socket.socket:
    """A bound UDP socket on 127.0.0.1 (so datagrams to its port are delivered, not refused)."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    return receiver


def send_udp(port: int, count: int, host: str = "127.0.0.1", tag: bytes = b"shark") -> list[bytes]:
    """Send `count` datagrams; returns their payloads."""
    payloads = [b"%s-%d" % (tag, i) for i in range(count)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for payload in payloads:
            sender.sendto(payload, (host, port))
    return payloads


def tcp_exchange(request: bytes, response: bytes) -> int:
    """One TCP connection on 127.0.0.1: the client sends `request`, the server answers
    `response`, both close. Returns the server port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            received = b""
            while len(received) < len(request):
                received += connection.recv(65536)
            connection.sendall(response)
            connection.shutdown(socket.SHUT_WR)
            while connection.recv(65536):
                pass
        server.close()

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(request)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
        assert received == response
    thread.join(10)
    return port


def collect(source: Source, *, expected: int | None = None, quiet: float = 0.3,
            limit: float = 10.0) -> list[RawPacket]:
    """Packets from a live source: until `expected` have come and then `quiet` seconds more
    (to catch any extra), or, without `expected`, until nothing came for `quiet` seconds.
    `limit` only bounds a broken run; callers assert on what was collected."""
    packets: list[RawPacket] = []
    start = time.monotonic()
    settled_since = start  # since when the stop condition has held
    while time.monotonic() - start < limit:
        now = time.monotonic()
        done = len(packets) >= expected if expected is not None else bool(packets)
        if not done:
            settled_since = now
        elif now - settled_since > quiet:
            break
        select.select([source.fileno()], [], [], 0.05)
        batch = source.read_batch(1000)
        if batch:
            packets.extend(batch)
            if expected is None:
                settled_since = time.monotonic()  # the quiet period restarts
    return packets


class Tcpdump:
    """tcpdump writing a pcap, for comparing counts with the source under test."""

    def __init__(self, path: Path, iface: str, bpf: str, prefix: Sequence[str] = (),
                 options: Sequence[str] = ()) -> None:
        self.path = path
        self.process = subprocess.Popen(
            [*prefix, "tcpdump", "-i", iface, "-nn", "--immediate-mode", "-U", "-s", "262144",
             "-B", "65536",
             *options, "-w", str(path), bpf],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        said = ""
        while "listening on" not in said:  # "tcpdump: listening on lo, link-type ..."
            line = self.process.stderr.readline()
            if not line:
                self.kill()
                raise AssertionError(f"tcpdump did not start: {said}")
            said += line

    def written(self) -> int:
        """Whole packet records in the file so far."""
        content = self.path.read_bytes() if self.path.exists() else b""
        count, position = 0, 24
        while position + 16 <= len(content):
            caplen = struct.unpack_from("=I", content, position + 8)[0]
            position += 16 + caplen
            count += position <= len(content)
        return count

    def stop(self, expected: int = 0, limit: float = 10.0) -> list[tuple[float, bytes]]:
        """Stop tcpdump once it wrote `expected` packets (it loses what it has not read yet
        when interrupted) and return what it captured (timestamp, frame)."""
        deadline = time.monotonic() + limit
        while self.written() < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # time to write any packet beyond `expected`
        self.process.send_signal(signal.SIGINT)
        _, stderr = self.process.communicate(timeout=10)
        match = re.search(r"(\d+) packets? captured", stderr)
        assert match, stderr
        with open(self.path, "rb") as file:
            if file.read(4) == b"":
                return []
            file.seek(0)
            packets = list(dpkt.pcap.Reader(file))
        assert len(packets) == int(match.group(1)), stderr
        return packets

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
