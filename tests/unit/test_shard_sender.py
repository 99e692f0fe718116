"""A shard's reports leave from a thread of their own (worker.shard._Sender): in order, at
most one handed over while another is on its way, and a parent that is gone ends the shard."""

from __future__ import annotations

import multiprocessing
import threading

from worker.shard import _Sender


def test_reports_arrive_whole_and_in_order() -> None:
    ours, theirs = multiprocessing.Pipe()
    sender = _Sender(theirs)
    reports = [bytes([i]) * (300_000 + i) for i in range(5)]   # each more than a pipe holds
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(ours.recv_bytes() for _ in reports))
    reader.start()
    for report in reports:
        sender.send(report)
    reader.join(30)
    assert got == reports
    assert not sender.gone


def test_a_report_is_handed_over_once_the_one_before_is_sent() -> None:
    ours, theirs = multiprocessing.Pipe()
    sender = _Sender(theirs)
    sender.send(b"a" * 1_000_000)          # returns: the thread sends it (blocked: nobody reads)
    handed = threading.Event()

    def second() -> None:
        sender.send(b"b")
        handed.set()
    # the slot holds "a" until it is sent, so "b" cannot be handed over before
    assert sender._report == b"a" * 1_000_000
    threading.Thread(target=second, daemon=True).start()
    assert ours.recv_bytes() == b"a" * 1_000_000
    assert handed.wait(30)
    assert ours.recv_bytes() == b"b"


def test_a_parent_that_is_gone_is_noticed() -> None:
    ours, theirs = multiprocessing.Pipe()
    sender = _Sender(theirs)
    ours.close()
    sender.send(b"x" * 1_000_000)
    sender.send(b"y")                      # returns once the first send failed
    assert sender.gone
