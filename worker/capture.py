"""The capture process: sources -> PCAP store, nothing else.

It runs apart from dissection (a child process with its own GIL), so a slow dissector can
never make capture wait: the store on disk is the bounded queue between the two, and the
dissection side sheds (counted) when the store evicts data it has not read yet.
The parent talks to it over a Pipe: (seq, "stats"|"filter"|"limit"|"stop", arg) ->
(seq, "ok"|"error", value); the seq lets the parent skip the late answer of a command it gave up
waiting for. Once open it sends ("ready", CaptureReady); "stats" answers a CaptureStats (Structs
pickle over the pipe like any value); "filter" takes a CaptureFilter or a BPF expression.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from shark.process import die_with_parent, exit_after_parent
from worker.options import WorkerOptions
from worker.sources import open_file_source, open_source
from worker.sources.base import BpfError, CaptureError, Source, SourceStats
from worker.sources.ebpf.status import EbpfStatus
from worker.sources.targets import CaptureFilter, TargetMatcher
from worker.store.grant import IndexGrant
from worker.store.index import INDEX_FILES
from worker.store.segments import SegmentWriter, StoreError, StoreStats, StoreWriteError

log = logging.getLogger("shark.worker.capture")

BATCH = 4096
# Bound the work between two looks at the control pipe, so stats and commands stay prompt.
BATCHES_PER_TURN = 16
# With nothing to read, the loop waits this long for a packet or a command. The index's
# requests for room wake it at once (IndexGrant.asked_fd): dissection waits for the answer.
IDLE_WAIT_S = 0.1
# Each packet read is a tuple, alive until its batch is stored: at CPython's default gen0
# threshold (700) the collector ran ~6 times per batch, and the tuples it found alive went on
# to the older generations and their collections. The child keeps no cyclic garbage of its own
# worth collecting sooner (as worker.dissection.GC_GEN0_THRESHOLD; docs/BENCHMARKS.md, "The
# capture process's replay").
GC_GEN0_THRESHOLD = 100_000


class CaptureReady(msgspec.Struct):
    """What the child says once its sources and store are open."""
    note: str                     # what it captures from
    repaired: list[str]           # what the store's recovery fixed at open
    tls: str = ""                 # with --tls: what loaded, or what is missing
    tls_ok: bool = False


class CaptureStats(msgspec.Struct):
    """The child's answer to "stats": /status (with its degraded reasons) and /config read it."""
    sources: list[SourceStats]
    store: StoreStats
    ebpf: EbpfStatus
    write_errors: int = 0         # see CaptureState
    last_write_error: str = ""
    last_write_error_ts: float | None = None
    dropped_on_write: int = 0
    loop_errors: int = 0
    last_loop_error: str = ""
    last_loop_error_ts: float | None = None
    target_left_out: int = 0      # packets the broad kernel filter of a long target list let through, dropped


@dataclass(slots=True)
class CaptureState:
    sources: list[Source]
    writer: SegmentWriter
    write_errors: int = 0         # batches of which some packets could not be stored
    last_write_error: str = ""
    last_write_error_ts: float | None = None
    dropped_on_write: int = 0     # packets not stored (the disk refused them, or malformed)
    loop_errors: int = 0          # anything else that went wrong in a turn of the loop
    last_loop_error: str = ""
    last_loop_error_ts: float | None = None
    tls: Any = None               # the EbpfTlsSource with --tls, when it loaded
    tls_status: EbpfStatus | None = None   # off, or why it could not load (None: tls.status())
    targets: TargetMatcher | None = None   # a long target list's exact check (worker.sources.targets)
    target_left_out: int = 0      # what earlier matchers dropped
    grant: IndexGrant | None = None        # the index's room, answered by the writer
    replay_end: int | None = None  # write end of the parent's replay_ended pipe, until the file ends


def _open(options: WorkerOptions) -> tuple[list[Source], str]:
    if options.pcap_file is not None:
        source = open_file_source(options.pcap_file)
        note = f"capture: replaying {options.pcap_file}"
    else:
        source, note = open_source(options.source, options.ifaces, options.bpf,
                                   options.snaplen, options.buffer_size)
    if options.pcap_file is not None and options.bpf:
        source.set_filter(options.bpf)
    return [source], note


def _open_tls(options: WorkerOptions, live: Source) -> tuple[Any, Any, str]:
    """(source, status, note) for eBPF TLS capture. Where it cannot load, the note says what
    is missing and capture goes on without it."""
    if not options.tls:
        return None, EbpfStatus(), ""
    # Only here: the eBPF source and its loader (ELF and Go readers) are --tls's alone.
    from worker.sources.ebpf.loader import EbpfUnavailable
    from worker.sources.ebpf.source import open_tls_source
    try:
        source = open_tls_source(live.linktype, options.snaplen, options.storage_dir)
    except EbpfUnavailable as error:
        return None, EbpfStatus(enabled=True, error=str(error)), str(error)
    except Exception as error:  # TLS is an extra: whatever breaks it, capture goes on
        log.exception("eBPF TLS capture failed to start")
        message = f"eBPF TLS capture is off: it failed to start ({type(error).__name__}: {error})"
        return None, EbpfStatus(enabled=True, error=message), message
    if options.bpf:   # libpcap already took it for the live source: it compiles here too
        source.set_filter(options.bpf)
    return source, None, source.summary()


def _stats(state: CaptureState) -> CaptureStats:
    tls_status = state.tls.status() if state.tls is not None else state.tls_status
    return CaptureStats(
        sources=[s.stats() for s in state.sources], store=state.writer.stats(), ebpf=tls_status,
        write_errors=state.write_errors, last_write_error=state.last_write_error,
        last_write_error_ts=state.last_write_error_ts, dropped_on_write=state.dropped_on_write,
        loop_errors=state.loop_errors, last_loop_error=state.last_loop_error,
        last_loop_error_ts=state.last_loop_error_ts,
        target_left_out=state.target_left_out + (state.targets.left_out if state.targets else 0))


def _handle(state: CaptureState, command: str, arg: Any) -> tuple[str, Any]:
    if command == "stats":
        return "ok", _stats(state)
    if command == "filter":
        wanted = arg if isinstance(arg, CaptureFilter) else CaptureFilter(str(arg))
        try:
            for source in state.sources:
                source.set_filter(wanted.bpf)
        except (BpfError, OSError) as error:   # OSError: the kernel refused the program
            return "error", str(error)
        if state.targets is not None:
            state.target_left_out += state.targets.left_out
        state.targets = None if wanted.addresses is None else TargetMatcher(wanted.addresses)
        return "ok", wanted.bpf
    if command == "limit":
        try:
            state.writer.set_limit(int(arg))
        except StoreError as error:
            return "error", str(error)
        return "ok", int(arg)
    return "error", f"unknown capture command {command!r}"


def _drain(state: CaptureState, source: Source) -> None:
    for _ in range(BATCHES_PER_TURN):
        batch = source.read_batch(BATCH)
        if not batch:
            return
        read = len(batch)
        if state.targets is not None:
            batch = state.targets.keep(source.linktype, batch)
        try:
            state.writer.append(source.linktype, batch)
        except (StoreError, OSError) as error:
            # A full or failing disk must not stop capture: the store freed what it could,
            # what it still could not write is counted, and the next batch tries again.
            state.write_errors += 1
            state.dropped_on_write += error.unwritten if isinstance(error, StoreWriteError) \
                else len(batch)
            state.last_write_error = f"{type(error).__name__}: {error}"
            state.last_write_error_ts = time.time()
        if read < BATCH:
            return


def tune_gc_for_capture() -> None:
    """What the child inherited and opened is never garbage: it leaves every collection
    (gc.freeze, which also keeps the collector from writing to the pages it shares with the
    parent), and young collections come after GC_GEN0_THRESHOLD allocations."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def capture_main(options: WorkerOptions, conn: Connection, parent_conn: Connection,
                 grant: IndexGrant | None = None, replay_end: int | None = None) -> None:
    """Entry point of the child process. `grant`: the index's share of the limit, shared with
    the API process (worker/store/grant.py). `replay_end`: a pipe's write end, closed once the
    replayed file is read to its end (CaptureProcess.replay_ended)."""
    parent_conn.close()  # else the pipe never reports EOF when the parent is gone
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and says stop
    stop = threading.Event()
    # The handler only flips a flag the loop reads: a handler runs between two bytecodes of the
    # main thread, possibly inside stop.set() itself, and Event.set takes a lock that is not
    # reentrant. With `lambda: stop.set()` a capture child whose parent was killed got SIGTERM
    # three times and deadlocked in the third handler, alive until killed by hand.
    terminated = [False]
    signal.signal(signal.SIGTERM, lambda *_: terminated.__setitem__(0, True))
    exit_after_parent(stop)
    try:
        sources, note = _open(options)
        writer = SegmentWriter(options.storage_dir, options.storage_limit, options.snaplen,
                               grant=grant, index_files=INDEX_FILES if grant is not None else ())
    except (CaptureError, StoreError) as error:
        conn.send(("error", str(error)))
        return
    except OSError as error:
        conn.send(("error", f"capture: {error}"))
        return
    tls, tls_status, tls_note = _open_tls(options, sources[0])
    if tls is not None:
        sources.append(tls)
    state = CaptureState(sources, writer, tls=tls, tls_status=tls_status, grant=grant,
                         replay_end=replay_end)
    tune_gc_for_capture()
    conn.send(("ready", CaptureReady(note, list(writer.stats().repaired), tls_note,
                                     tls is not None)))
    live = [s for s in sources if s.fileno() is not None]
    files = [s for s in sources if s.fileno() is None]
    by_fd = {s.fileno(): s for s in live}
    control = conn.fileno()
    try:
        while not stop.is_set() and not terminated[0]:
            try:
                if not _turn(state, conn, control, files, by_fd, tls):
                    return
            except (EOFError, BrokenPipeError):   # the parent is gone
                return
            except Exception as error:   # capture never stops on its own: count, wait, go on
                state.loop_errors += 1
                state.last_loop_error = f"{type(error).__name__}: {error}"
                state.last_loop_error_ts = time.time()
                if state.loop_errors <= 10 or state.loop_errors % 1000 == 0:
                    log.exception("capture: error %d in the capture loop", state.loop_errors)
                stop.wait(0.1)
    finally:
        for source in sources:
            if source is not tls:
                source.close()
        writer.close()
        if tls is not None:    # last: the kernel removes its probes one at a time, ~0.1 s each
            tls.close()


def _turn(state: CaptureState, conn: Connection, control: int, files: list[Source],
          by_fd: dict[int | None, Source], tls: Any) -> bool:
    """One look at every source and the control pipe; False once told to stop."""
    if tls is not None:
        tls.housekeeping(time.monotonic())
    state.writer.enforce()      # the index grew, or asks for room: keep the limit
    busy_files = [s for s in files if not s.finished]
    for source in busy_files:
        _drain(state, source)
    if state.replay_end is not None and all(s.finished for s in files):
        os.close(state.replay_end)    # the parent's end reads EOF: the replay is over
        state.replay_end = None
    asked = [state.grant.asked_fd] if state.grant is not None else []
    readable, _, _ = select.select([control, *by_fd, *asked], [], [], 0 if busy_files else IDLE_WAIT_S)
    for fd in readable:
        if asked and fd == asked[0]:
            state.grant.drain_asked()   # type: ignore[union-attr]
            state.writer.enforce()      # answers it (evicting for it first)
        elif fd == control:
            seq, command, arg = conn.recv()
            if command == "stop":
                conn.send((seq, "ok", None))
                return False
            conn.send((seq, *_handle(state, command, arg)))
        else:
            _drain(state, by_fd[fd])
    return True


class CaptureProcess:
    """The parent's handle on the capture child: start, ask, stop."""

    def __init__(self, options: WorkerOptions, grant: IndexGrant | None = None) -> None:
        self._options = options
        context = multiprocessing.get_context("fork")
        self._conn, child_conn = context.Pipe()
        # With --pcap: readable (EOF) once the file is read to its end or the child is gone, so
        # the dissection side can wait on it with its other pipes instead of asking every
        # quarter second whether the replay is over.
        self.replay_ended: int | None = None
        self._replay_end: int | None = None
        if options.pcap_file is not None:
            self.replay_ended, self._replay_end = os.pipe()
        self._process = context.Process(target=capture_main,
                                        args=(options, child_conn, self._conn, grant,
                                              self._replay_end),
                                        name="shark-capture", daemon=True)
        self._child_conn = child_conn
        self._lock = threading.Lock()
        self.note = ""
        self.repaired: list[str] = []
        self.tls_note = ""            # with --tls: what loaded, or what is missing
        self.tls_ok = False
        self.exited_at: float | None = None   # time.monotonic() when the child was seen to exit
        self._stopping = False
        self._seq = 0

    def start(self, timeout: float = 30.0) -> None:
        """Start the child and wait until its sources and store are open; CaptureError if not."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Fork the child (before this process starts any thread: a fork copies only the
        calling thread, and a lock another one held would stay held in the child forever)."""
        self._process.start()
        self._child_conn.close()
        if self._replay_end is not None:   # the child's copy alone keeps the pipe open now
            os.close(self._replay_end)
            self._replay_end = None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the launched child's sources and store are open; CaptureError if not.
        Nothing may ask it anything before: its first message is the answer to this."""
        if not self._conn.poll(timeout):
            self._process.kill()
            raise CaptureError(f"capture process did not start within {timeout:g}s")
        try:
            kind, value = self._conn.recv()
        except EOFError:
            self._process.join(1)
            raise CaptureError(f"capture process died at start (exit code {self._process.exitcode})") from None
        if kind == "error":
            self._process.join(5)
            raise CaptureError(value)
        ready: CaptureReady = value
        self.note, self.repaired = ready.note, ready.repaired
        threading.Thread(target=self._watch_exit, name="shark-capture-watch", daemon=True).start()
        self.tls_note, self.tls_ok = ready.tls, ready.tls_ok

    def ask(self, command: str, arg: Any = None, timeout: float = 10.0) -> Any:
        """Send a command; returns its value or raises CaptureError with the child's reason."""
        with self._lock:
            if not self._process.is_alive():
                raise CaptureError(f"capture process is not running (exit code {self._process.exitcode})")
            self._seq += 1
            self._conn.send((self._seq, command, arg))
            deadline = time.monotonic() + timeout
            while True:
                if not self._conn.poll(max(0.0, deadline - time.monotonic())):
                    raise CaptureError(f"capture process did not answer {command!r} within {timeout:g}s")
                seq, kind, value = self._conn.recv()
                if seq == self._seq:
                    break     # else the late answer to a command given up on: skip it
        if kind == "error":
            raise CaptureError(value)
        return value

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    def dead_for(self, now: float) -> float | None:
        """Seconds since the child exited unasked (time.monotonic() now), None while it runs
        or once it was told to stop."""
        if self.exited_at is None or self._stopping:
            return None
        return max(0.0, now - self.exited_at)

    def _watch_exit(self) -> None:
        multiprocessing.connection.wait([self._process.sentinel])
        self.exited_at = time.monotonic()
        if not self._stopping:
            log.error("the capture process exited (exit code %s): nothing is captured until "
                      "the worker is restarted", self._process.exitcode)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        if self._process.is_alive():
            try:
                self.ask("stop", timeout=timeout)
            except (CaptureError, OSError, EOFError):
                pass
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(2)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(2)
