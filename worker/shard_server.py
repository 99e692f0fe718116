"""The fork server the dissection shards (worker.sharded) are started from.

It is one process that imported the dissection once: a shard starts (and restarts) in
milliseconds and shares those pages, and is never forked from the API process, whose other
threads may hold locks. This module imports nothing of the worker, so `python -m worker` can
start the server first thing and let its imports run beside its own.

`python -m worker` forks the server from its own process while that has no thread yet
(start_shard_server): the server starts with what the worker had imported (the interpreter,
multiprocessing, msgspec, logging, the store) and imports only the dissection, then serves
multiprocessing's fork server protocol (multiprocessing.forkserver.main); the shards are
started, watched and stopped through the "forkserver" context as before. multiprocessing's own
start, which everything else that starts shards uses (tests; the worker, should the server
die), execs a new interpreter that imports all of it again: on 2 busy cores that put the
shards' start ~0.25-0.4 s after the worker's (docs/BENCHMARKS.md, "Worker start, fourth round").
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import socket
import sys
import threading
import traceback
from typing import Any
from multiprocessing import connection, resource_tracker, util
from multiprocessing.context import ForkServerContext

from shark.process import die_with_parent, name_process

# What the server imports before it forks any shard: its signal dispositions, then the
# shard's entry point and all it uses, the dissectors included (a shard makes them first
# thing: imported here once, they cost no shard, nor a shard's restart, any time).
PRELOAD = ["worker.shard_server_signals", "worker.shard", "worker.dissectors.builtin"]
# The forked server's name in ps and /proc/PID/comm (its command line is the worker's).
SERVER_NAME = "shark-forksrv"
# The ForkServer fields (CPython 3.11's multiprocessing/forkserver.py) start_shard_server
# fills in as ensure_running() would; with another layout it leaves the start to that. Only on
# the versions whose forkserver.py has 3.11's fields and main() (later ones change the
# server's protocol; they start it through ensure_running()).
_SERVER_FIELDS = ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid")
_KNOWN_LAYOUT = {(3, 11), (3, 12)}


def shard_context() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_shard_server() -> None:
    """Start the server now rather than at the first shard's start, which then finds it
    running. This does not wait for the server's imports: the first shard's start does.
    Call it while this process has no other thread (a fork copies only the calling one)."""
    shard_context()
    server: Any = multiprocessing.forkserver._forkserver   # type: ignore[attr-defined]
    if (threading.active_count() > 1 or sys.version_info[:2] not in _KNOWN_LAYOUT
            or not all(hasattr(server, f) for f in _SERVER_FIELDS)):
        multiprocessing.forkserver.ensure_running()
        return
    if server._forkserver_pid is not None:
        return
    # No lock: there is no other thread (and the server must not inherit a held one).
    resource_tracker.ensure_running()   # every shard gets its fd, as with ensure_running
    address = connection.arbitrary_address("AF_UNIX")   # type: ignore[attr-defined]
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        listener.listen()
        # Every shard holds the write end; the server ends once they and we are gone.
        alive_r, alive_w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(alive_r)
            os.close(alive_w)
            raise
        if pid == 0:   # the server: it must never return into the worker's code
            try:
                _serve(listener.fileno(), alive_r)
            finally:
                os._exit(1)
        os.close(alive_r)
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid


def _serve(listener_fd: int, alive_r: int) -> None:
    """The forked server's life: multiprocessing's fork server loop, then os._exit (never this
    process's atexit handlers nor its objects' finalizers: they belong to the worker)."""
    code = 1
    try:
        _leave_parents_fds(keep={0, 1, 2, listener_fd, alive_r})
        name_process(SERVER_NAME)
        # Killed with the worker (its shards die with it: worker/shard.py); otherwise it ends
        # as multiprocessing's does, once the worker and every shard closed `alive`.
        die_with_parent(signal.SIGKILL)
        # The worker's multiprocessing children (the capture child) are not this process's.
        multiprocessing.process._children.clear()   # type: ignore[attr-defined]
        util._finalizer_registry.clear()            # type: ignore[attr-defined]
        multiprocessing.forkserver.main(listener_fd, alive_r, PRELOAD)
        code = 0
    except SystemExit as stop:   # the loop's end: `alive` read EOF
        code = stop.code if isinstance(stop.code, int) else 0
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def _leave_parents_fds(keep: set[int]) -> None:
    """Let go of what the worker's descriptors point at (its API socket, the capture child's
    pipes): a shard must not keep the worker's port open nor its pipes from reading EOF. Each is
    made /dev/null rather than closed: objects of the worker's that this process inherited may
    still close their number, which must not be one this process opened since."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):
            if fd not in keep and fd != null:   # (the listing's own, closed since: harmless)
                os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)
