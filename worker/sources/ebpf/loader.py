"""Loading the bcc program: import bcc, compile, attach tracepoints, and uprobes on libssl,
on executables that link OpenSSL statically, and on Go's crypto/tls.

bcc comes from the distribution (python3-bpfcc), installed for the system Python. It is
imported from its directory without adding that directory to sys.path, so nothing else of
the system's dist-packages can shadow the project's own dependencies.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import logging
import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from worker.sources.ebpf.diagnosis import diagnose, host_facts
from worker.sources.ebpf.events import ConnKey
from worker.sources.ebpf.gobinary import GoTls
from worker.sources.ebpf.program import COUNTERS, ROLE_CLIENT, ROLE_SERVER, go_supported, render

log = logging.getLogger("shark.worker.ebpf")

BCC_DIST_PACKAGES = ("/usr/lib/python3/dist-packages",)

# (symbol, entry function, return function, required): the _ex variants exist since 1.1.1.
SSL_PROBES = (
    ("SSL_write", "enter_write", "exit_call_plain", True),
    ("SSL_read", "enter_read", "exit_call_plain", True),
    ("SSL_write_ex", "enter_write_ex", "exit_call_ex", False),
    ("SSL_read_ex", "enter_read_ex", "exit_call_ex", False),
)


# Each uprobe holds a perf event descriptor. bcc refuses more than 1000 probes unless told
# (BCC_PROBE_LIMIT); a Go binary takes about 9 (two calls and Read's RETs), so a node with many
# Go programs needs more, and the descriptors to match.
MAX_UPROBES = 8192


def _allow_probes(count: int) -> None:
    os.environ.setdefault("BCC_PROBE_LIMIT", str(count))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        except (ValueError, OSError) as error:
            log.info("cannot raise the descriptor limit to %d: %s", limit, error)


class EbpfUnavailable(Exception):
    """eBPF TLS capture cannot run here; the message says what is missing."""


def import_bcc() -> ModuleType:
    """The bcc package: already imported, importable as usual, or from the distribution's
    dist-packages (only bcc itself is loaded from there)."""
    if "bcc" in sys.modules:
        return sys.modules["bcc"]
    spec = importlib.util.find_spec("bcc")
    if spec is None:
        spec = importlib.machinery.PathFinder.find_spec("bcc", list(BCC_DIST_PACKAGES))
    if spec is None or spec.loader is None:
        raise ImportError(f"no bcc module in {', '.join(BCC_DIST_PACKAGES)} or on sys.path")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bcc"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["bcc"]
        raise
    return module


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _pack16(address: bytes) -> bytes:
    return address if len(address) == 16 else b"\x00" * 10 + b"\xff\xff" + address


class BccProgram:
    """The loaded program: its ring buffer, counters and maps, and the libraries hooked."""

    def __init__(self, on_record: Callable[[bytes], None], chunks_per_call: int,
                 ringbuf_pages: int, cache_dir: Path | None = None) -> None:
        try:
            bcc = import_bcc()
            bcc_error = None
        except Exception as error:   # ImportError, or libbcc.so failing to load (OSError)
            bcc, bcc_error = None, _first_line(error)
        facts = host_facts(bcc_error, cache_dir)
        problem = diagnose(facts)
        if problem is not None:
            raise EbpfUnavailable(problem)
        assert bcc is not None
        if facts.kernel_source and os.path.isdir(facts.kernel_source):
            os.environ["BCC_KERNEL_SOURCE"] = facts.kernel_source
        self.kernel_source = facts.kernel_source
        _allow_probes(MAX_UPROBES)
        self.go = go_supported()
        try:
            self._bpf = bcc.BPF(text=render(chunks_per_call, ringbuf_pages, go=self.go))
        except Exception as error:
            raise EbpfUnavailable(f"eBPF TLS capture is off: bcc could not load the probes "
                                  f"({_first_line(error)}); its compiler output is in the "
                                  "worker's log") from None
        self.tracepoints = self._bpf.num_open_tracepoints()

        def record(_ctx: Any, data: int, size: int) -> int:
            on_record(ctypes.string_at(data, size))
            return 0
        try:
            self._ring = self._bpf["events"]
            self._ring.open_ring_buffer(record)
        except Exception as error:
            self._bpf.cleanup()
            raise EbpfUnavailable(f"eBPF TLS capture is off: the ring buffer cannot be opened "
                                  f"({_first_line(error)})") from None
        self._counters = self._bpf["counters"]
        self._conns = self._bpf["conns"]
        self._go_hashes = self._bpf["go_tcpconn_hashes"] if self.go else None
        self.uprobes = 0

    @property
    def ring_fd(self) -> int:
        """Readable (select/poll) when events wait in the ring buffer."""
        return int(self._ring.map_fd)

    def consume(self) -> None:
        """Hand every waiting record to on_record, without blocking."""
        self._bpf.ring_buffer_consume()

    def attach_library(self, path: str) -> int:
        """Uprobes and uretprobes on the SSL read/write functions of one libssl file, or of an
        executable that links OpenSSL statically; returns how many were attached.
        RuntimeError with the reason when the file lacks SSL_read/SSL_write or the kernel
        refuses a probe."""
        attached = 0
        for symbol, enter, leave, required in SSL_PROBES:
            try:
                self._bpf.attach_uprobe(name=path, sym=symbol, fn_name=enter)
                attached += 1
                self._bpf.attach_uretprobe(name=path, sym=symbol, fn_name=leave)
                attached += 1
            except Exception as error:
                if required:
                    raise RuntimeError(f"{path}: cannot probe {symbol}: {_first_line(error)}") from None
                log.info("%s: no %s (%s)", path, symbol, _first_line(error))
        self.uprobes += attached
        return attached

    def attach_go(self, path: str, tls: GoTls) -> int:
        """Uprobes on a Go binary's crypto/tls: at the start of (*Conn).Write and .Read (past
        the stack check), and at each RET instruction of Read (never uretprobes: Go moves
        stacks; Write is reported at its call). Returns how many were attached;
        RuntimeError with the reason when the kernel refuses one (those attached stay: bcc
        detaches them all at close)."""
        if not self.go:
            raise RuntimeError(f"{path}: Go probes read amd64 registers; this machine is not amd64")
        if tls.tcpconn_hash is not None and self._go_hashes is not None:
            try:
                self._go_hashes[ctypes.c_uint32(tls.tcpconn_hash)] = ctypes.c_uint8(1)
            except Exception as error:   # a full map: that binary's sockets come from syscalls
                log.info("%s: cannot note its *net.TCPConn type: %s", path, _first_line(error))
        plan = [(tls.write.call, "go_enter_write"), (tls.read.call, "go_enter_read")]
        plan += [(address, "go_return") for address in tls.read.returns]
        attached = 0
        try:
            for address, function in plan:
                self._bpf.attach_uprobe(name=path, addr=address, fn_name=function)
                attached += 1
        except Exception as error:
            self.uprobes += attached
            raise RuntimeError(f"{path}: cannot probe {address:#x} ({function}): "
                               f"{_first_line(error)}") from None
        self.uprobes += attached
        return attached

    def counters(self) -> dict[str, int]:
        """The program's counters, summed over CPUs."""
        totals = {}
        for index, name in enumerate(COUNTERS):
            values = self._counters[ctypes.c_int(index)]
            totals[name] = int(sum(values))
        return totals

    def remember_connection(self, tgid: int, fd: int, key: ConnKey, fd_is_client: bool) -> None:
        """Tell the program a socket's connection found another way (/proc), so its next
        chunks carry it and its close() is reported."""
        client_ip, client_port, server_ip, server_port = key
        k = self._conns.Key(tgid, fd)
        v = self._conns.Leaf()
        v.family = 10 if len(client_ip) == 16 else 2
        v.role = ROLE_CLIENT if fd_is_client else ROLE_SERVER
        v.tls = 1
        local = (client_ip, client_port) if fd_is_client else (server_ip, server_port)
        remote = (server_ip, server_port) if fd_is_client else (client_ip, client_port)
        v.lport, v.rport = local[1], remote[1]
        ctypes.memmove(v.laddr, _pack16(local[0]), 16)
        ctypes.memmove(v.raddr, _pack16(remote[0]), 16)
        self._conns[k] = v

    def close(self) -> None:
        self._bpf.cleanup()
