"""shark/process.py: a child whose parent is killed ends, even when its main thread is stuck."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The grandchild: exit_after_parent watching, then a main thread that never looks at `stop`
# (as a clean-up stuck in a blocking call would).
GRANDCHILD = """
import threading, sys
from shark.process import exit_after_parent
stop = threading.Event()
exit_after_parent(stop, grace_s=0.5, every_s=0.05)
print("ready", flush=True)
stuck = threading.Lock(); stuck.acquire(); stuck.acquire()   # never returns
"""
# The parent: starts the grandchild, says its pid once it is ready, then waits to be killed.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_child_with_a_stuck_main_thread_ends_soon_after_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, GRANDCHILD], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    try:
        child = int(parent.stdout.readline())
        time.sleep(0.3)
        assert alive(child), "the child ends only once its parent is gone"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the child outlived its killed parent by 20 s"
    finally:
        parent.kill()
        parent.wait(10)
        parent.stdout.close()
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass
