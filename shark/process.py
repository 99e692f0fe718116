"""Process helpers shared by the worker and the local runner."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (even by kill -9), so
    a child never goes on alone holding an interface, a store or a port. Linux only; a no-op
    elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        pass


def name_process(name: str) -> None:
    """Name this process in ps and /proc/PID/comm (at most 15 bytes): a forked child has its
    parent's command line. Linux only; a no-op elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15])
    except (OSError, AttributeError):
        pass


def exit_after_parent(stop: threading.Event, grace_s: float = 5.0, every_s: float = 0.5) -> None:
    """A daemon thread that notices this process's parent is gone (reparented), sets `stop`
    for an orderly end and, if the process is still here `grace_s` later, ends it with
    os._exit. die_with_parent's SIGTERM alone relies on the main thread reaching a Python
    signal handler and then finishing its clean-up (a capture child once deadlocked in its
    SIGTERM handler and outlived its killed parent: tests/integration/test_worker_store.py).
    Records cut short by the exit are repaired when the store is next opened, as after any
    crash."""
    parent = os.getppid()

    def watch() -> None:
        # kept up after `stop` is set too: die_with_parent's SIGTERM sets it first
        while os.getppid() == parent:
            time.sleep(every_s)
        stop.set()
        time.sleep(grace_s)
        os._exit(0)

    threading.Thread(target=watch, name="shark-parent-watch", daemon=True).start()
