"""What keeping to the dissection memory budget costs with many flows open.

    .venv/bin/python tests/bench/bench_memory_budget.py [--flows 65536] [--held 200]

Opens `--flows` HTTP/1 connections (the assembler's maximum by default), each leaving a request
head of about `--held` bytes unfinished (held by its session), in one Dissection with a budget
large enough that nothing is cut. Then times, best of 5: one sum of held_bytes() over every
session (Dissection.keep_to_budget forced: what a check costs, due after the budget's share of
bytes was delivered or every 10 s of capture time) beside one assembler
expiry pass over the same flows (what a tick already cost), and feeding a batch of 2048 packets
of small complete exchanges on those flows with and without the budget (what the check after
each batch costs when it is not due).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from factories import LINKTYPE_ETHERNET, tcp_packet  # noqa: E402
from worker.dissection import Dissection, MemoryBudget  # noqa: E402

START = 1_700_000_000_000_000_000


def address(n: int) -> str:
    return f"10.{1 + n // 60000}.{(n % 60000) // 250}.{n % 250 + 1}"


def head(n: int, held: int) -> bytes:
    return b"GET /%d HTTP/1.1\r\nHost: shop\r\nX-Pad: " % n + b"a" * held


def open_flows(dissection: Dissection, flows: int, held: int) -> None:
    batch = []
    for n in range(flows):
        frame = tcp_packet(address(n), "10.0.0.2", 40000, 80, seq=1, ack=1, flags="PA", payload=head(n, held))
        batch.append(((0, n), LINKTYPE_ETHERNET, START + n, frame, len(frame)))
        if len(batch) == 2048:
            dissection.feed(batch)
            batch = []
    dissection.feed(batch)


END, NEXT = b"\r\n\r\n", b"GET /x HTTP/1.1\r\n\r\n"


def exchanges(flows: int, held: int, count: int, rounds: int) -> list[list]:
    """`rounds` batches of `count` packets, in order on the first `count` flows: the first
    ends each held head, the next ones are whole requests."""
    batches = []
    for k in range(rounds):
        batch = []
        for n in range(count):
            seq = 1 + len(head(n, held)) + (len(END) + (k - 1) * len(NEXT) if k else 0)
            frame = tcp_packet(address(n % flows), "10.0.0.2", 40000, 80, seq=seq, ack=1,
                               flags="PA", payload=NEXT if k else END)
            batch.append(((1 + k, n), LINKTYPE_ETHERNET, START + flows + k * count + n, frame,
                          len(frame)))
        batches.append(batch)
    return batches


def best(runs: list) -> float:
    spent = []
    for run in runs:
        begin = time.perf_counter()
        run()
        spent.append(time.perf_counter() - begin)
    return min(spent)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=65536)
    parser.add_argument("--held", type=int, default=200)
    args = parser.parse_args()
    budgeted = Dissection("n", memory=MemoryBudget(1 << 40))
    plain = Dissection("n")
    begin = time.perf_counter()
    open_flows(budgeted, args.flows, args.held)
    open_flows(plain, args.flows, args.held)
    print(f"opened {args.flows} flows twice in {time.perf_counter() - begin:.1f} s")
    memory = budgeted.memory
    assert memory is not None
    sum_s = best([lambda: budgeted.keep_to_budget(START, force=True)] * 5)
    print(f"sum over {memory.sessions} sessions holding {memory.held} bytes: "
          f"{sum_s * 1e3:.1f} ms ({sum_s / memory.sessions * 1e9:.0f} ns a session)")
    expire_s = best([lambda: budgeted._assembler.expire(START + args.flows)] * 5)
    print(f"one assembler expiry pass over the same flows: {expire_s * 1e3:.1f} ms")
    batches = exchanges(args.flows, args.held, min(2048, args.flows), 5)
    with_s = without_s = float("inf")
    for batch in batches:   # interleaved, so that both see the same moments of a loaded machine
        with_s = min(with_s, best([lambda: budgeted.feed(batch)]))
        without_s = min(without_s, best([lambda: plain.feed(batch)]))
    print(f"a batch of 2048 packets: {with_s * 1e3:.2f} ms with the budget, "
          f"{without_s * 1e3:.2f} ms without; checks {memory.checks}")


if __name__ == "__main__":
    main()
