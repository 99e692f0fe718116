"""The /status `ebpf` block: plain Structs, so the capture process and the API can carry it
without importing the eBPF source (its loader, ELF and Go readers) when --tls is off."""

from __future__ import annotations

import msgspec


class LibraryStatus(msgspec.Struct):
    """A file whose TLS functions are hooked, or could not be."""
    path: str
    probes: int
    processes: int                    # processes that map or run it
    error: str = ""                   # why it is not (fully) hooked, naming what is missing
    kind: str = "libssl"              # libssl | go | openssl-static | go+openssl-static
    version: str = ""                 # Go: the version it was built with
    notes: list[str] = msgspec.field(default_factory=list)   # how it was found


class EbpfStatus(msgspec.Struct):
    """The /status `ebpf` block."""
    enabled: bool = False             # --tls given
    loaded: bool = False              # the probes are in the kernel
    error: str = ""                   # why not, naming what is missing
    kernel_headers: str = ""          # the header tree bcc compiled against
    tracepoints: int = 0
    probes_attached: int = 0          # uprobes + uretprobes on TLS functions
    libraries: list[LibraryStatus] = msgspec.field(default_factory=list)
    processes_hooked: int = 0         # processes that map or run a hooked file
    calls: int = 0                    # TLS read/write calls that moved bytes
    go_calls: int = 0                 # of those, Go crypto/tls calls
    go_syscall_fds: int = 0           # Go calls whose socket came from syscalls, not the conn
    chunks: int = 0                   # chunks the probes sent (a call is 16 KiB per chunk)
    lost_events: int = 0              # ring buffer full: chunks (and closes) lost
    lost_bytes: int = 0
    truncated_bytes: int = 0          # beyond what one call copies (become gaps)
    read_errors: int = 0              # user buffers the probe could not read (gaps)
    bad_events: int = 0               # records that did not decode (never expected)
    unresolved_chunks: int = 0        # chunks whose socket or connection was never found
    duplicate_chunks: int = 0         # the other end of a connection already reported
    connections: int = 0
    connections_active: int = 0
    packets: int = 0                  # synthesized packets (before the capture filter)
    filtered: int = 0                 # of those, left out by the capture filter
    bytes: int = 0                    # cleartext bytes in them
    gaps: int = 0
    gap_bytes: int = 0
