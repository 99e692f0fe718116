"""The index's requests for room wake the capture loop (worker.store.grant's wake-up pipes):
an idle loop answers within its turn instead of at the next one, and dissection, waiting for
the answer, wakes when it is written instead of polling."""

from __future__ import annotations

import multiprocessing
import os
import select
import threading
from pathlib import Path

import pytest

import worker.capture as capture
from worker.capture import CaptureState, _turn
from worker.store.grant import IndexBudget, IndexGrant
from worker.store.index import INDEX_FILES
from worker.store.segments import MIN_SEGMENT_SIZE, SegmentWriter


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_request_makes_the_asked_pipe_readable_until_drained() -> None:
    grant = IndexGrant()
    assert not readable(grant.asked_fd)
    for seq in range(1, 5):
        grant.ask(seq, 4096 * seq)
    assert readable(grant.asked_fd)
    grant.drain_asked()
    assert not readable(grant.asked_fd)
    assert grant.asked() == (4, 4 * 4096)      # the cell, not the bytes, says what was asked


def test_a_full_pipe_does_not_block_the_side_that_writes() -> None:
    grant = IndexGrant()
    for seq in range(1, 200_000):              # far more than a pipe holds
        grant.ask(seq % 1000 + 1, 1)
    grant.drain_asked()
    assert not readable(grant.asked_fd)


def test_a_request_from_a_forked_child_wakes_the_parent() -> None:
    grant = IndexGrant()
    context = multiprocessing.get_context("fork")
    child = context.Process(target=grant.ask, args=(7, 12345))
    child.start()
    child.join(10)
    assert select.select([grant.asked_fd], [], [], 10)[0]
    assert grant.asked() == (7, 12345)


@pytest.mark.timeout(60)
def test_an_idle_capture_loop_answers_a_request_within_its_turn(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # With the loop's idle wait at 30 s, only the wake-up can make this turn answer the request
    # that comes 0.1 s into it (without it, the answer waits for the next turn's enforce).
    monkeypatch.setattr(capture, "IDLE_WAIT_S", 30.0)
    grant = IndexGrant()
    writer = SegmentWriter(tmp_path, 4 * MIN_SEGMENT_SIZE, grant=grant, index_files=INDEX_FILES)
    parent, child = multiprocessing.Pipe()
    try:
        state = CaptureState([], writer, grant=grant)
        asker = threading.Timer(0.1, grant.ask, args=(1, 64 * 1024))
        asker.start()
        assert _turn(state, child, child.fileno(), [], {}, None)
        asker.join()
        assert grant.given() == (1, 64 * 1024)
    finally:
        writer.close()
        parent.close()
        child.close()


@pytest.mark.timeout(60)
def test_the_index_side_wakes_when_the_answer_is_written(tmp_path: Path) -> None:
    grant = IndexGrant()
    budget = IndexBudget(grant, 64 * 1024 * 1024)

    def answer() -> None:       # what the writer does, 0.2 s after the request
        seq, size = grant.asked()
        grant.give(seq, size)
    answerer = threading.Timer(0.2, answer)
    answerer.start()
    # a wait of an hour ends when the answer comes (the test's timeout fails it otherwise)
    assert budget.fits(0, 1024 * 1024, 0, wait=3600.0)
    answerer.join()
    assert budget.waits == 1 and budget.refused == 0
    assert os.read(grant.asked_fd, 1) == b"\0"    # the request woke the writer's side too
