"""The worker's settings, parsed and validated once at start (python -m worker)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from worker.store.private import SharedDirectoryError, refuse_shared, tighten_store

DEFAULT_LISTEN = "127.0.0.1:8897"
DEFAULT_STORAGE_LIMIT = 200 * 1000 * 1000
DEFAULT_SNAPLEN = 262144
DEFAULT_BUFFER_SIZE = 32 * 1024 * 1024
# The detail view keeps at most this many decoded body bytes per message (docs/API.md).
DEFAULT_BODY_LIMIT = 1024 * 1024
# What all dissection sessions may hold together (Session.held_bytes; docs/OPERATIONS.md,
# "Faults and bounds"): 8x the most one session may hold under its own caps (HTTP/1's 128
# pending heads of up to 64 KiB), 256 HTTP/2 header blocks at their cap, 1,000 flows each
# holding a 64 KiB partial head; and with the 141-251 MB the worker used in the soak
# (docs/BENCHMARKS.md), where sessions held little, well under the DaemonSet's 1 GiB limit.
DEFAULT_DISSECT_MEMORY = 64 * 1024 * 1024


# The most dissection shards --dissect-shards takes (each is a process reading every packet).
MAX_DISSECT_SHARDS = 64
# /stream clients served at once (each holds a queue of up to 4096 rows). A hub opens one stream
# per distinct live query per worker: at most its --max-live-queries (100) plus the feed of every
# entry its scripts and edge metrics follow, so 256 leaves room for a second hub during a rollout
# (2 x 101) and a few direct clients.
DEFAULT_MAX_STREAM_CLIENTS = 256


def default_dissect_shards(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """One dissection shard per CPU this process may use: the CPUs of its affinity, fewer
    under a cgroup v2 CPU quota (a pod's CPU limit: "100000 100000" is one CPU), rounded up."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass   # no cgroup v2 here, or no quota
    return max(1, min(MAX_DISSECT_SHARDS, cpus))


def default_storage_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "shark" / "worker"


@dataclass(slots=True)
class WorkerOptions:
    ifaces: list[str] = field(default_factory=list)
    pcap_file: Path | None = None
    bpf: str = ""
    source: str = "auto"                  # auto | pcap | af_packet
    snaplen: int = DEFAULT_SNAPLEN
    buffer_size: int = DEFAULT_BUFFER_SIZE
    storage_dir: Path = field(default_factory=default_storage_dir)
    storage_limit: int = DEFAULT_STORAGE_LIMIT
    host: str = "127.0.0.1"
    port: int = 8897
    node: str = field(default_factory=socket.gethostname)
    body_limit: int = DEFAULT_BODY_LIMIT
    dissect_memory: int = DEFAULT_DISSECT_MEMORY   # --dissect-memory: the sessions' budget
    tls: bool = False                     # eBPF TLS cleartext from libssl (docs/TLS.md)
    token: str | None = None              # the installation's token (shark/token.py), from SHARK_TOKEN
    redact: bool = True                   # credentials become [redacted:HASH] (worker/redact.py)
    redact_headers: list[str] = field(default_factory=list)   # besides redact.DEFAULT_HEADERS
    redact_fields: list[str] = field(default_factory=list)    # besides redact.DEFAULT_FIELDS
    max_storage_limit: int | None = None  # the operator's cap on the storage limit (PUT /config too)
    dissect_shards: int = 1               # dissection processes, by flow; 1: in a thread (worker.sharded)
    max_stream_clients: int = DEFAULT_MAX_STREAM_CLIENTS   # /stream clients at once; more get a 503


class OptionError(ValueError):
    """An option with a bad value; the message names the option."""


def parse_listen(text: str, option: str = "--listen") -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise OptionError(f"{option}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:8897)")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise OptionError(f"{option}: port {port_text!r} in {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise OptionError(f"{option}: port {port} in {text!r} is outside 0-65535")
    return host, port


def check_storage_dir(path: Path) -> list[str]:
    """Create the directory if needed (0700; an existing store is made private too) and prove
    it is writable, with one clear error if not. Returns notes about what stays readable
    beyond its owner."""
    try:
        refuse_shared(path)
    except SharedDirectoryError as error:
        raise OptionError(f"--storage-dir: {error}") from None
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        notes = tighten_store(path)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OptionError(f"--storage-dir: {path} is not writable: {error.strerror or error}") from None
    return notes
