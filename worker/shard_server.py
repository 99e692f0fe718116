"""The fork server the dissection shards (worker.sharded) are started from.

It is one process that imported the dissection once: a shard starts (and restarts) in
milliseconds and shares those pages, and is never forked from the API process, whose other
threads may hold locks. This module imports nothing of the worker, so `python -m worker` can
start the server first thing and let its interpreter and imports run beside its own.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
from multiprocessing.context import ForkServerContext

# What the server imports before it forks any shard: its signal dispositions, then the
# shard's entry point and all it uses, the dissectors included (a shard makes them first
# thing: imported here once, they cost no shard, nor a shard's restart, any time).
PRELOAD = ["worker.shard_server_signals", "worker.shard", "worker.dissectors.builtin"]


def shard_context() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_shard_server() -> None:
    """Start the server now rather than at the first shard's start, which then finds it
    running. This does not wait for the server's imports: the first shard's start does."""
    shard_context()
    multiprocessing.forkserver.ensure_running()
