"""--storage-limit bounds everything the worker writes under its storage dir, the index and its
WAL included, at every moment: a flood of small DNS exchanges (whose index rows outweigh their
packets ~6 to 1) keeps `du -sb` of the directory, sampled every 50 ms, within the limit, also
while dissection lags and catches up (docs/OPERATIONS.md, Storage)."""

from __future__ import annotations

import contextlib
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
from support.procstat import DirSampler

pytestmark = pytest.mark.root

LIMIT = 3_000_000


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
    # Every 20 ms: the flood now takes only ~2.5 s here, and the walk must see it many times.
    sampler = DirSampler(str(storage), LIMIT, every=0.02)
    sampler.start()

    def ask(name: str) -> None:
        client.sendto(DNSRecord.question(name).pack(), ("127.0.0.1", responder.port))
        client.recv(2048)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        for n in range(20_000):            # ~20 MB of index rows offered
            ask(f"host-{n}.flood.example.test")
        wait_for(lambda: worker.status()["dissection"]["caught_up"], what="dissection to catch up")
        for n in range(3):
            ask(f"after-{n}.example.test")
    entries = wait_for(lambda: (e := worker.entries(q='request.qname.startsWith("after-")'))
                       and len(e) == 3 and e, what="the 3 queries after the flood")
    sampler.stop()
    assert len(entries) == 3
    status = worker.status()
    assert status["store"]["evicted_for_other"] > 0     # evicted for the index, not the pcaps
    assert sampler.samples > 50, f"the directory was walked only {sampler.samples} times"
    assert sampler.largest <= LIMIT, \
        f"the store reached {sampler.largest:,} bytes, above its limit of {LIMIT:,}"
    assert du(storage) <= LIMIT                          # and du itself agrees
    responder.sock.close()


def dns_pairs(count: int, prefix: str = "lag") -> list[tuple[bytes, bytes]]:
    """`count` (query, answer) datagrams, each query with its own name."""
    pairs = []
    for n in range(count):
        query = DNSRecord.question(f"{prefix}-{n}.flood.example.test")
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
        pairs = dns_pairs(2000)
        sampler = DirSampler(str(storage), LIMIT)
        sampler.start()
        try:
            for _round in range(2):
                # (shards that shed are started again, all of them: new processes each round)
                pids = wait_for(shard_pids, what="the 2 dissection shards")
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
                        with contextlib.suppress(ProcessLookupError):   # restarted meanwhile
                            os.kill(pid, signal.SIGCONT)
                wait_for(lambda: worker.status()["dissection"]["caught_up"], timeout=30,
                         what="dissection to catch up")
        finally:
            sampler.stop()
        # Still indexing after the floods (whatever of them so small a limit could keep).
        for query, answer in dns_pairs(3, "after"):
            client.sendto(query, ("127.0.0.1", server_port))
            server.sendto(answer, ("127.0.0.1", client_port))
        wait_for(lambda: len(worker.entries(q='request.qname.startsWith("after-")')) == 3,
                 what=f"the 3 exchanges after the floods indexed ({worker.status()})")
        status = worker.status()
    assert sampler.samples > 50
    assert sampler.largest <= LIMIT, \
        f"the store reached {sampler.largest:,} bytes, above its limit of {LIMIT:,}"
    assert status["store"]["evicted_for_other"] > 0     # evicted for the index, not the pcaps
    assert status["index"]["over_estimate"] == 0        # no write grew past its bound
