"""The eBPF TLS source: cleartext from libssl, static OpenSSL and Go's crypto/tls, as
synthesized packets for the PCAP store.

It runs in the capture process beside the live source, whose link type it adopts (the store
keeps one link type per segment; alternating would rotate segments at every batch). Its
fileno() is the ring buffer's: the capture loop selects on it like on a capture socket.
housekeeping() is called at least every 0.1 s: it looks for new libssl files and executables
to hook and ends connections whose close was never seen.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from worker.packet import RawPacket
from worker.sources.base import SourceStats
from worker.sources.bpf import UserFilter, compile_bpf
from worker.sources.ebpf.events import ConnKey, EventError, TlsEvent, event_connection, parse_event
from worker.sources.ebpf.executables import ExecutableError, inspect_executable
from worker.sources.ebpf.libraries import LIBSSL, Found, LibraryFile, LibraryScanner
from worker.sources.ebpf.loader import BccProgram, EbpfUnavailable
from worker.sources.ebpf.pending import PendingChunks
from worker.sources.ebpf.program import (DEFAULT_CHUNKS_PER_CALL, DEFAULT_RINGBUF_PAGES,
                                         KIND_CLOSE, KIND_EXIT, ROLE_CLIENT)
from worker.sources.ebpf.sockets import resolve_fd
from worker.sources.ebpf.status import EbpfStatus, LibraryStatus
from worker.sources.ebpf.streams import StreamSynthesizer
from worker.sources.ebpf.synth import MIN_USEFUL_PAYLOAD, mark_offset, max_payload

log = logging.getLogger("shark.worker.ebpf")

SCAN_EVERY_S = 1.0
EXPIRE_EVERY_S = 10.0
CLOCK_EVERY_S = 10.0
# How long a /proc lookup that found nothing is believed (the fd may be a pipe or unix socket).
NEGATIVE_RESOLVE_S = 5.0
# A found one is also written into the program's map (later chunks carry it); the copy here
# is for a full map, and goes with the socket's close or after this long.
POSITIVE_RESOLVE_S = 600.0


class EbpfTlsSource:
    kind = "ebpf"

    def __init__(self, linktype: int, snaplen: int, *,
                 chunks_per_call: int = DEFAULT_CHUNKS_PER_CALL,
                 ringbuf_pages: int = DEFAULT_RINGBUF_PAGES, proc: str = "/proc",
                 cache_dir: Path | None = None) -> None:
        if mark_offset(linktype) is None:
            raise EbpfUnavailable(
                f"eBPF TLS capture is off: the capture's link type {linktype} has no hardware "
                "address to mark synthesized packets with; capture on an Ethernet interface "
                "or on 'any'")
        smallest = min(max_payload(linktype, snaplen, ipv6=True),
                       max_payload(linktype, snaplen, ipv6=False))
        if smallest < MIN_USEFUL_PAYLOAD:
            raise EbpfUnavailable(f"eBPF TLS capture is off: --snaplen {snaplen} leaves "
                                  f"{max(smallest, 0)} bytes of cleartext per packet; give at "
                                  f"least {snaplen - smallest + MIN_USEFUL_PAYLOAD}")
        self.name = "ebpf:tls"
        self.linktype = linktype
        self.snaplen = snaplen
        self._proc = proc
        self._records: list[bytes] = []
        self._program = BccProgram(self._records.append, chunks_per_call, ringbuf_pages, cache_dir)
        self._synth = StreamSynthesizer(linktype, snaplen)
        self._pending = PendingChunks()
        self._scanner = LibraryScanner(proc)
        self._hooked: dict[LibraryFile, LibraryStatus] = {}
        self._refused: dict[LibraryFile, LibraryStatus] = {}   # TLS code that could not be probed
        self._resolved: dict[tuple[int, int], tuple[tuple[ConnKey, bool] | None, float]] = {}
        self._clock_offset = self._measure_clock()
        self._last_scan = self._last_expire = self._last_clock = float("-inf")
        self._status = EbpfStatus(enabled=True, loaded=True,
                                  kernel_headers=self._program.kernel_source or "",
                                  tracepoints=self._program.tracepoints)
        self._received = 0
        self._filtered = 0
        self._filter: UserFilter | None = None
        self._closed = False
        self.housekeeping(time.monotonic())

    # -- Source -------------------------------------------------------------------------
    def fileno(self) -> int | None:
        return self._program.ring_fd

    @property
    def finished(self) -> bool:
        return False

    def read_batch(self, max_packets: int) -> list[RawPacket]:
        """The packets for every event waiting in the ring buffer (a batch can exceed
        max_packets: the ring buffer is drained whole, and one chunk makes several packets
        when it opens a connection)."""
        self._program.consume()
        records = self._records[:]        # the ring buffer's callback appends to this list
        self._records.clear()
        packets: list[RawPacket] = []
        for raw in records:
            try:
                event = parse_event(raw)
            except EventError as error:
                self._status.bad_events += 1
                log.warning("ebpf: %s", error)
                continue
            packets += self._packets(event)
        if self._filter is not None:
            accepts = self._filter.accepts
            kept = [p for p in packets if accepts(p[1], p[2])]
            self._filtered += len(packets) - len(kept)
            packets = kept
        self._received += len(packets)
        return packets

    def set_filter(self, bpf: str) -> None:
        """The capture filter applies to synthesized packets as if they were on the wire
        (host and port filters keep or drop whole connections; the hub's idle filter drops
        all). BpfError for an expression libpcap refuses."""
        self._filter = UserFilter(compile_bpf(bpf, self.linktype, self.snaplen)) if bpf else None

    def stats(self) -> SourceStats:
        counters = self._program.counters()
        return SourceStats(name=self.name, kind=self.kind, received=self._received,
                           dropped=counters["lost_events"])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._program.close()

    # -- the rest -----------------------------------------------------------------------
    def housekeeping(self, now: float) -> None:
        """Hook new libssl files and executables, forget stale state, re-read the clocks;
        cheap when idle."""
        if now - self._last_scan >= SCAN_EVERY_S:
            self._last_scan = now
            for library, found in self._scanner.scan(now).items():
                self._hook(library, found)
            files = set(self._hooked)
            self._status.processes_hooked = self._scanner.processes_mapping(files)
            for library, status in [*self._hooked.items(), *self._refused.items()]:
                status.processes = self._scanner.processes_mapping({library})
        if now - self._last_expire >= EXPIRE_EVERY_S:
            self._last_expire = now
            self._synth.expire(time.time_ns())
            self._status.unresolved_chunks += self._pending.expire(time.time_ns())
            self._resolved = {k: v for k, v in self._resolved.items()
                              if now - v[1] < (NEGATIVE_RESOLVE_S if v[0] is None else POSITIVE_RESOLVE_S)}
        if now - self._last_clock >= CLOCK_EVERY_S:
            self._last_clock = now
            self._clock_offset = self._measure_clock()

    def status(self) -> EbpfStatus:
        status = self._status
        counters = self._program.counters()
        status.calls = counters["calls"]
        status.chunks = counters["chunks"]
        status.lost_events = counters["lost_events"]
        status.lost_bytes = counters["lost_bytes"]
        status.truncated_bytes = counters["truncated_bytes"]
        status.read_errors = counters["read_errors"]
        status.go_calls = counters["go_calls"]
        status.go_syscall_fds = counters["go_syscall_fds"]
        synth = self._synth.stats
        status.duplicate_chunks = synth.duplicate_chunks
        status.connections = synth.connections
        status.connections_active = synth.connections_active
        status.packets = synth.packets
        status.bytes = synth.bytes
        status.gaps = synth.gaps
        status.gap_bytes = synth.gap_bytes
        status.filtered = self._filtered
        status.probes_attached = self._program.uprobes
        status.libraries = sorted([*self._hooked.values(), *self._refused.values()],
                                  key=lambda lib: lib.path)
        return status

    def summary(self) -> str:
        """One line for the worker's log: what is hooked, by kind (5 files of each at most)."""
        status = self.status()
        groups: dict[str, list[str]] = {"libssl": [], "Go": [], "static OpenSSL": []}
        for lib in status.libraries:
            if not lib.probes:
                continue
            if lib.kind == LIBSSL:
                groups["libssl"].append(lib.path)
            if "go" in lib.kind:
                groups["Go"].append(f"{lib.path} ({lib.version})" if lib.version else lib.path)
            if "openssl-static" in lib.kind:
                groups["static OpenSSL"].append(lib.path)
        parts = [f"{kind}: " + ", ".join(paths[:5]) + (f" and {len(paths) - 5} more"
                                                       if len(paths) > 5 else "")
                 for kind, paths in groups.items() if paths]
        return (f"tls: eBPF probes loaded ({status.probes_attached} on "
                f"{'; '.join(parts) or 'nothing yet'}; {status.processes_hooked} processes)")

    def _hook(self, library: LibraryFile, found: Found) -> None:
        if found.kind == LIBSSL:
            try:
                probes = self._program.attach_library(found.path)
                self._hooked[library] = LibraryStatus(path=found.path, probes=probes, processes=0)
                log.info("ebpf: hooked %s (%d probes)", found.path, probes)
            except RuntimeError as error:
                self._refused[library] = LibraryStatus(path=found.path, probes=0, processes=0,
                                                       error=str(error))
                log.warning("ebpf: %s", error)
            return
        self._hook_executable(library, found.path)

    def _hook_executable(self, library: LibraryFile, path: str) -> None:
        """Go's crypto/tls and a static OpenSSL in an executable, when it has them."""
        try:
            code = inspect_executable(path)
        except ExecutableError as error:
            self._refused[library] = LibraryStatus(path=path, probes=0, processes=0, kind="go",
                                                   version=error.version, error=str(error))
            log.warning("ebpf: %s: %s", path, error)
            return
        except Exception:   # a file nothing was written for: capture must go on regardless
            log.exception("ebpf: cannot inspect %s", path)
            return
        if code is None:
            return
        status = LibraryStatus(path=path, probes=0, processes=0, kind=code.kind,
                               version=code.go.version if code.go else "", notes=code.notes)
        errors = []
        if code.openssl:
            try:
                status.probes += self._program.attach_library(path)
            except RuntimeError as error:
                errors.append(str(error))
        if code.go is not None:
            try:
                status.probes += self._program.attach_go(path, code.go)
            except RuntimeError as error:
                errors.append(str(error))
        status.error = "; ".join(errors)
        if status.probes:
            self._hooked[library] = status
            log.info("ebpf: hooked %s (%s, %d probes)%s", path,
                     " ".join(filter(None, (status.kind, status.version))), status.probes,
                     "".join(f"; {note}" for note in status.notes))
        else:
            self._refused[library] = status
        if errors:
            log.warning("ebpf: %s", status.error)

    def _packets(self, event: TlsEvent) -> list[RawPacket]:
        wall_ns = event.ts_ns + self._clock_offset
        if event.kind == KIND_EXIT:
            self._forget_process(event.tgid)
            self._status.unresolved_chunks += self._pending.forget_process(event.tgid)
            return self._synth.exit(event.tgid, wall_ns)
        if event.kind == KIND_CLOSE:
            self._resolved.pop((event.tgid, event.fd), None)
            return self._synth.close(event.tgid, event.fd, event_connection(event), wall_ns)
        key = event_connection(event)
        if key is not None:
            fd_is_client = event.role == ROLE_CLIENT
        else:
            found = self._resolve(event)
            if found is None:
                if event.fd < 0:    # served from a buffer: a later call may name the socket
                    self._status.unresolved_chunks += self._pending.hold(event, wall_ns)
                else:
                    self._status.unresolved_chunks += 1
                return []
            key, fd_is_client = found
        packets: list[RawPacket] = []
        if self._pending:
            for held, held_ns in self._pending.take(event.tgid, event.ssl):
                packets += self._synth.chunk(held, key, fd_is_client, held_ns)
        return packets + self._synth.chunk(event, key, fd_is_client, wall_ns)

    def _resolve(self, event: TlsEvent) -> tuple[ConnKey, bool] | None:
        """The connection of a chunk the program could not place, from /proc; remembered in
        the program so the socket's later chunks and its close carry it."""
        if event.fd < 0:
            return None
        cache_key = (event.tgid, event.fd)
        cached = self._resolved.get(cache_key)
        if cached is not None:
            return cached[0]
        found = resolve_fd(event.tgid, event.fd, self._proc)
        self._resolved[cache_key] = (found, time.monotonic())
        if found is not None:
            try:
                self._program.remember_connection(event.tgid, event.fd, *found)
            except Exception as error:   # a full map: the chunks still resolve from the cache
                log.debug("ebpf: cannot remember %s: %s", cache_key, error)
        return found

    def _forget_process(self, tgid: int) -> None:
        for key in [k for k in self._resolved if k[0] == tgid]:
            del self._resolved[key]

    @staticmethod
    def _measure_clock() -> int:
        """Epoch minus CLOCK_MONOTONIC (what bpf_ktime_get_ns counts), in ns."""
        return time.time_ns() - time.monotonic_ns()


def open_tls_source(linktype: int, snaplen: int, cache_dir: Path | None = None) -> EbpfTlsSource:
    """The eBPF TLS source for a capture of this link type; EbpfUnavailable says what is
    missing when it cannot load. cache_dir: where split kernel headers may be merged."""
    return EbpfTlsSource(linktype, snaplen, cache_dir=cache_dir)
