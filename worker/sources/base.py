"""The interface every capture source implements: a thin adapter that yields raw packets."""

from __future__ import annotations

from typing import Protocol

import msgspec

from worker.packet import RawPacket


class CaptureError(Exception):
    """A source cannot start or go on; the message is one line naming the problem."""


class BpfError(CaptureError):
    """A BPF expression that libpcap refuses; the message carries libpcap's reason."""


class SourceStats(msgspec.Struct):
    name: str                 # e.g. "af_packet:any", "pcap:lo", "file:capture.pcap"
    kind: str                 # pcap | af_packet | file | ebpf
    received: int = 0         # packets handed to the worker
    dropped: int = 0          # dropped by the kernel (buffer full)
    if_dropped: int = 0       # dropped by the interface/driver
    skipped: int = 0          # packets left out: another link type than the capture's
    finished: bool = False    # a file source that has replayed all of its file
    error: str = ""           # e.g. where a damaged pcap file stopped being readable


class Source(Protocol):
    """A packet source. One thread calls read_batch in a loop; nothing here blocks for long."""

    name: str
    linktype: int
    snaplen: int

    def fileno(self) -> int | None:
        """A descriptor that select() reports readable when packets may be waiting, or None
        when read_batch never waits (a file)."""

    def read_batch(self, max_packets: int) -> list[RawPacket]:
        """Up to max_packets packets that are ready now, without blocking; [] if none."""

    @property
    def finished(self) -> bool:
        """True once a finite source (a file) has nothing more to give."""

    def set_filter(self, bpf: str) -> None:
        """Replace the BPF filter; raises BpfError for an expression libpcap refuses."""

    def stats(self) -> SourceStats: ...

    def close(self) -> None: ...
