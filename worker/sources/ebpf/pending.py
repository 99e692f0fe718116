"""Chunks whose socket is not known yet, held until a later call on the same TLS object names
it.

A call served from the library's buffer makes no syscall, so when the socket cannot be read
from the TLS object itself (OpenSSL always; Go when its net.Conn is a wrapper the probe cannot
see through) the first calls on a connection may come without one: Go's server reads the
first request into its buffer during the handshake, which it makes outside Read. The program
keeps those calls' stream offsets and adopts the socket the next call names, so the held
chunks slot in before it. Bounded per TLS object and in total; what expires or overflows is
counted as unresolved.

Pure: events and times in, events out.
"""

from __future__ import annotations

from collections import OrderedDict

from worker.sources.ebpf.events import TlsEvent

MAX_PER_OWNER = 64
MAX_BYTES = 4 << 20
HOLD_NS = 30_000_000_000

Owner = tuple[int, int]   # (process, TLS object)


class PendingChunks:
    def __init__(self, max_per_owner: int = MAX_PER_OWNER, max_bytes: int = MAX_BYTES,
                 hold_ns: int = HOLD_NS) -> None:
        self._max_per_owner = max_per_owner
        self._max_bytes = max_bytes
        self._hold_ns = hold_ns
        self._held: OrderedDict[Owner, list[tuple[TlsEvent, int]]] = OrderedDict()
        self._bytes = 0

    def __bool__(self) -> bool:
        return bool(self._held)

    def __len__(self) -> int:
        return sum(len(chunks) for chunks in self._held.values())

    def hold(self, event: TlsEvent, wall_ns: int) -> int:
        """Keep a chunk of an unknown socket; returns how many chunks were dropped to make
        room (this one, when its object already holds the most allowed)."""
        owner = (event.tgid, event.ssl)
        chunks = self._held.setdefault(owner, [])
        if len(chunks) >= self._max_per_owner:
            return 1
        chunks.append((event, wall_ns))
        self._bytes += len(event.data)
        dropped = 0
        while self._bytes > self._max_bytes and self._held:
            oldest_owner, oldest = next(iter(self._held.items()))
            gone, _ = oldest.pop(0)
            self._bytes -= len(gone.data)
            dropped += 1
            if not oldest:
                del self._held[oldest_owner]
        return dropped

    def take(self, tgid: int, ssl: int) -> list[tuple[TlsEvent, int]]:
        """The chunks held for this TLS object, oldest first (and forgotten here)."""
        chunks = self._held.pop((tgid, ssl), [])
        self._bytes -= sum(len(event.data) for event, _ in chunks)
        return chunks

    def forget_process(self, tgid: int) -> int:
        """A process exited: its held chunks will never be placed; returns how many."""
        dropped = 0
        for owner in [o for o in self._held if o[0] == tgid]:
            dropped += len(self.take(*owner))
        return dropped

    def expire(self, wall_ns: int) -> int:
        """Drop chunks held longer than hold_ns; returns how many."""
        dropped = 0
        for owner in list(self._held):
            chunks = self._held[owner]
            kept = [(event, ts) for event, ts in chunks if wall_ns - ts <= self._hold_ns]
            if len(kept) != len(chunks):
                dropped += len(chunks) - len(kept)
                self._bytes -= sum(len(e.data) for e, ts in chunks if wall_ns - ts > self._hold_ns)
                if kept:
                    self._held[owner] = kept
                else:
                    del self._held[owner]
        return dropped
