"""The msgspec Structs of worker.dissection (which re-exports them): kept out of it because it is
compiled with mypyc (shark/compiled.py), which does not compile msgspec's class bodies (a
`msgspec.field(...)` default is checked against the field's type there)."""

from __future__ import annotations

from typing import Any

import msgspec

from shark.model import Size

# Over the budget, sessions are cut, largest first, until all hold at most this share of it
# (so the next check does not cut again at once).
LOW_WATER = 0.75


class DissectionCounters(msgspec.Struct):
    """The counters of one dissection as /status shows them (dissection.*): the in-thread
    pipeline's (worker.pipeline.DissectionStats) and each shard's (worker.shard.ShardStats)."""

    packets: int = 0
    not_tcp_udp: int = 0
    entries: int = 0
    lag_bytes: int = 0
    lag_seconds: float = 0.0
    shed_segments: int = 0
    shed_bytes: int = 0
    discontinuities: int = 0
    cut: dict[str, int] = msgspec.field(default_factory=dict)   # entries a per-session cap cut, by cap
    # bytes sessions passed over looking for a message start, by protocol (when flows end)
    skipped: dict[str, int] = msgspec.field(default_factory=dict)
    # the sessions' memory budget (--dissect-memory): what they held, what was cut for it
    memory: MemoryBudget | None = None
    errors: int = 0
    last_error: str = ""
    caught_up: bool = False       # everything stored so far has been dissected


class MemoryBudget(msgspec.Struct):
    """What the sessions of one Dissection may hold together (Session.held_bytes), and what
    keeping to it cost. A worker divided into shards gives each its share."""

    limit: int
    held: int = 0              # what all sessions held at the last check (after cutting)
    peak: int = 0              # the most they were found holding at a check (before cutting)
    sessions: int = 0          # live sessions at the last check
    checks: int = 0
    cut_sessions: int = 0      # sessions cut: each emitted what it had and read on
    cut_bytes: int = 0         # what those sessions held when cut

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"memory budget {self.limit}: expected at least 1 byte")

    @property
    def low_water(self) -> int:
        return int(self.limit * LOW_WATER)


class IndexedEntry(msgspec.Struct, gc=False):
    """A shark.model.Entry as dissection encodes it for the index: the same fields in the same
    order (the same JSON), with the parts every entry of a flow shares (its endpoints, its
    TCP or UDP facts) spliced in pre-encoded. What the redactor reads and changes (protocol,
    summary, request, response) is as in Entry.

    Not tracked by the garbage collector (gc=False): one is made and dropped per entry, and
    nothing refers to it but the dissection while it is encoded, so it is in no cycle;
    tracked, it counted towards every young collection."""

    id: str
    node: str
    protocol: str
    ts: float
    src: msgspec.Raw
    dst: msgspec.Raw
    summary: str
    elapsed_ms: float | None
    status: int | None
    request: dict[str, Any] | msgspec.Raw    # (or its JSON: Exchange.request_json)
    response: dict[str, Any] | msgspec.Raw | None    # (or Exchange.response_json)
    size: Size
    tls: bool
    tags: tuple[str, ...]
    complete: bool
    notes: list[str]
    tcp: msgspec.Raw | None
    udp: msgspec.Raw | None
