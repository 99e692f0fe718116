"""--storage-limit bounds everything the worker writes under its storage dir, the index and its
WAL included: a flood of small DNS exchanges (whose index rows outweigh their packets ~6 to 1)
keeps `du` of the directory within the limit (docs/OPERATIONS.md, "Faults and bounds")."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from support.processes import wait_for

pytestmark = pytest.mark.root

LIMIT = 3_000_000
# While dissection catches up, the index grows by the rows of packets already stored before the
# writer sees it and evicts (docs/OPERATIONS.md): with this tiny limit and ~6 index bytes per
# packet byte, peaks measured 3.0-4.2 MB. Once dissection is caught up, the limit holds.
TRANSIENT = LIMIT // 2


def du(path: Path) -> int:
    """`du -sb` of a directory the worker is writing to: a segment evicted or a journal removed
    between du's listing and its stat makes it exit 1, so such a walk is taken again."""
    for _ in range(20):
        done = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True)
        if done.returncode == 0:
            return int(done.stdout.split()[0])
    raise AssertionError(f"du -sb {path} failed 20 times in a row: {done.stderr.strip()}")


class Responder(threading.Thread):
    """Answers every DNS query on a UDP port with one A record."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def run(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(2048)
            except OSError:
                return
            query = DNSRecord.parse(data)
            reply = query.reply()
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("192.0.2.7"), ttl=60))
            self.sock.sendto(reply.pack(), peer)


def test_small_dns_exchanges_keep_the_whole_directory_within_the_limit(start_worker, tmp_path):
    responder = Responder()
    responder.start()
    storage = tmp_path / "store"
    worker = start_worker("--iface", "lo", "--bpf", f"udp port {responder.port}",
                          "--storage-limit", str(LIMIT), storage_dir=storage)
    largest = 0

    def ask(name: str) -> None:
        client.sendto(DNSRecord.question(name).pack(), ("127.0.0.1", responder.port))
        client.recv(2048)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        for n in range(20_000):            # ~20 MB of index rows offered
            ask(f"host-{n}.flood.example.test")
            if n % 250 == 0:
                largest = max(largest, du(storage))
        wait_for(lambda: worker.status()["dissection"]["caught_up"], what="dissection to catch up")
        for n in range(3):
            ask(f"after-{n}.example.test")
    entries = wait_for(lambda: (e := worker.entries(q='request.qname.startsWith("after-")'))
                       and len(e) == 3 and e, what="the 3 queries after the flood")
    assert len(entries) == 3
    status = worker.status()
    assert status["store"]["evicted_for_other"] > 0     # evicted for the index, not the pcaps
    assert largest <= LIMIT + TRANSIENT, largest
    assert wait_for(lambda: du(storage) <= LIMIT, what="du of the store within the limit")
    responder.sock.close()


def dir_bytes(path: Path) -> int:
    """What `du -sb` counts (apparent sizes of the directory, its files and subdirectories,
    links not followed), walked with os.scandir; a file evicted while walked counts as gone."""
    total = 0
    pending = [str(path)]
    while pending:
        current = pending.pop()
        try:
            total += os.lstat(current).st_size
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total


class Sampler(threading.Thread):
    """The largest dir_bytes() of a directory, sampled every `every` seconds until stopped."""

    def __init__(self, path: Path, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.path, self.every = path, every
        self.largest = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.largest = max(self.largest, dir_bytes(self.path))
            self.samples += 1

    def stop(self) -> None:
        self.done.set()
        self.join()


def dns_pairs(count: int) -> list[tuple[bytes, bytes]]:
    """`count` (query, answer) datagrams, each query with its own name."""
    pairs = []
    for n in range(count):
        query = DNSRecord.question(f"lag-{n}.flood.example.test")
        reply = query.reply()
        reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("192.0.2.9"), ttl=60))
        pairs.append((query.pack(), reply.pack()))
    return pairs


def test_the_limit_holds_at_every_moment_while_dissection_lags_and_catches_up(start_worker, tmp_path):
    """Dissection is stopped (SIGSTOP on its shard processes) while small DNS exchanges are
    stored, then let go: the rows of everything stored arrive at once. `du -sb` of the store,
    sampled every 50 ms through the flood and the catch-up, never passes the limit."""
    storage = tmp_path / "store"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        server.bind(("127.0.0.1", 0))
        client.bind(("127.0.0.1", 0))
        server_port, client_port = server.getsockname()[1], client.getsockname()[1]
        for sock in (server, client):   # nothing reads them: the kernel drops what overflows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        worker = start_worker("--iface", "lo", "--bpf", f"udp port {server_port}",
                              "--storage-limit", str(LIMIT), "--dissect-shards", "2",
                              storage_dir=storage)
        def shard_pids() -> list[int] | None:
            shards = worker.status()["dissection"]["shards"]
            pids = [shard["pid"] for shard in shards if shard["running"] and shard["pid"]]
            return pids if len(pids) == 2 else None
        pids = wait_for(shard_pids, what="the 2 dissection shards")
        pairs = dns_pairs(2000)
        sampler = Sampler(storage)
        sampler.start()
        try:
            for round_ in range(3):
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                try:
                    deadline = time.monotonic() + 3.0
                    n = 0
                    while time.monotonic() < deadline:   # ~4x a 3 MB store's worth of rows
                        query, answer = pairs[n % len(pairs)]
                        client.sendto(query, ("127.0.0.1", server_port))
                        server.sendto(answer, ("127.0.0.1", client_port))
                        n += 1
                        if n % 64 == 0:
                            time.sleep(0.001)
                finally:
                    for pid in pids:
                        os.kill(pid, signal.SIGCONT)
                wait_for(lambda: worker.status()["dissection"]["caught_up"], timeout=30,
                         what="dissection to catch up")
        finally:
            sampler.stop()
        status = worker.status()
    assert status["index"]["entries"] > 0
    assert sampler.samples > 50
    assert sampler.largest <= LIMIT, \
        f"the store reached {sampler.largest:,} bytes, above its limit of {LIMIT:,}"
