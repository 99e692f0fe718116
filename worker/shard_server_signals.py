"""Imported by the shards' fork server first (worker.shard_server.PRELOAD), and only there.

Ctrl-C or a SIGTERM to the worker's process group reaches the fork server too. Dead, it could
no longer report its shards' exits, which the API process would then read as failures (exit
code 255) and answer by starting a new server and new shards during the shutdown. The server
ends when the API process does (it reads EOF on its pipe), and the shards it forks inherit
these dispositions: they stop when the API process tells them to.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
