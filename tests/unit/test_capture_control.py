"""The API's questions to the capture child: an answer that comes after the API gave up on it is
never taken for the answer to the next question (a long filter compile made /status and
/config read a filter's answer as stats: a 500 until the next command)."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from worker.capture import CaptureProcess
from worker.sources.base import CaptureError


class _Alive:
    exitcode = None

    def is_alive(self) -> bool:
        return True


def test_a_late_answer_is_skipped_not_taken_for_the_next_one() -> None:
    capture = CaptureProcess.__new__(CaptureProcess)
    capture._conn, child = multiprocessing.Pipe()
    capture._process = _Alive()   # type: ignore[assignment]
    capture._lock = threading.Lock()
    capture._seq = 0

    def child_side() -> None:
        seq, command, _arg = child.recv()          # the slow one: answered after the asker left
        time.sleep(0.5)
        child.send((seq, "ok", f"late {command}"))
        seq, command, _arg = child.recv()
        child.send((seq, "ok", f"prompt {command}"))
    peer = threading.Thread(target=child_side, daemon=True)
    peer.start()
    with pytest.raises(CaptureError, match="did not answer 'filter' within 0.2s"):
        capture.ask("filter", "tcp", timeout=0.2)
    time.sleep(0.6)                                 # the late answer is in the pipe now
    assert capture.ask("stats", timeout=5.0) == "prompt stats"
    peer.join(5)
