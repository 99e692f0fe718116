"""The capture loop's idle wait: short while the index asks for room (it waits for the loop's
answer, worker.store.grant) and right after a file is read, the usual one otherwise. Times are
passed in: no clock is read."""

from __future__ import annotations

from worker.capture import (GRANT_BUSY_S, GRANT_LOOK_S, IDLE_WAIT_S, CaptureState, _idle_wait)
from worker.store.grant import IndexGrant


def _state(grant: IndexGrant | None) -> CaptureState:
    return CaptureState(sources=[], writer=None, grant=grant)   # type: ignore[arg-type]


def test_without_a_grant_the_loop_waits_as_long_as_ever() -> None:
    assert _idle_wait(_state(None), 100.0) == IDLE_WAIT_S


def test_a_request_makes_the_loop_look_often_for_a_while() -> None:
    grant = IndexGrant()
    state = _state(grant)
    assert _idle_wait(state, 100.0) == IDLE_WAIT_S       # nothing asked yet
    grant.ask(1, 4096)
    assert _idle_wait(state, 100.0) == GRANT_LOOK_S
    assert _idle_wait(state, 100.0 + GRANT_BUSY_S / 2) == GRANT_LOOK_S
    assert _idle_wait(state, 100.0 + GRANT_BUSY_S + 0.01) == IDLE_WAIT_S
    grant.ask(2, 8192)                                   # a new request: again
    assert _idle_wait(state, 200.0) == GRANT_LOOK_S
    assert _idle_wait(state, 200.0 + GRANT_BUSY_S + 0.01) == IDLE_WAIT_S


def test_a_file_just_read_keeps_the_loop_looking_often() -> None:
    state = _state(IndexGrant())
    state.grant_busy_until = 50.0 + GRANT_BUSY_S         # what a turn reading a file sets
    assert _idle_wait(state, 50.0 + GRANT_BUSY_S / 2) == GRANT_LOOK_S
    assert _idle_wait(state, 50.0 + GRANT_BUSY_S + 0.01) == IDLE_WAIT_S
