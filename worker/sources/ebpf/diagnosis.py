"""What eBPF TLS capture needs from the node, and one message naming what is missing.

host_facts() looks (reads /proc and /sys, tries the bcc import); diagnose() is pure, so every
message is tested without a broken machine.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from worker.sources.ebpf.headers import installed_arch_halves, merge_halves, split_halves

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
# What the bcc program attaches to, besides uprobes (relative to tracefs/events).
REQUIRED_TRACEPOINTS = (
    "syscalls/sys_enter_connect", "syscalls/sys_enter_accept4", "syscalls/sys_exit_accept4",
    "syscalls/sys_enter_close", "syscalls/sys_enter_write", "syscalls/sys_enter_read",
    "sock/inet_sock_set_state", "sched/sched_process_exit",
)
# A header tree bcc can compile against has both of these (the Debian -amd64 package alone
# lacks the first: "kconfig.h not found").
HEADER_MARKERS = ("include/linux/kconfig.h", "include/generated/autoconf.h")
KHEADERS_ARCHIVE = "/sys/kernel/kheaders.tar.xz"
MERGED_HEADERS_DIRNAME = "kernel-headers"


@dataclass(slots=True)
class HostFacts:
    system: str                           # platform.system()
    release: str                          # uname -r
    effective_caps: int | None            # CapEff of this process, None if unreadable
    bcc_error: str | None                 # why `import bcc` failed, None when it worked
    tracefs: str | None                   # mounted tracefs with events/, None if none
    uprobes: bool                         # tracefs has uprobe_events (CONFIG_UPROBE_EVENTS)
    missing_tracepoints: list[str] = field(default_factory=list)
    kernel_source: str | None = None      # a header tree bcc can use, None if none
    header_candidates: list[str] = field(default_factory=list)   # where we looked


def _has_cap(caps: int, number: int) -> bool:
    return bool(caps >> number & 1)


def diagnose(facts: HostFacts) -> str | None:
    """None when eBPF TLS capture can load; otherwise one message listing what is missing,
    each with what to do about it."""
    if facts.system != "Linux":
        return f"eBPF needs Linux; this is {facts.system}"
    missing: list[str] = []
    caps = facts.effective_caps
    if caps is not None and not _has_cap(caps, CAP_SYS_ADMIN) and not (
            _has_cap(caps, CAP_BPF) and _has_cap(caps, CAP_PERFMON)):
        missing.append("the capabilities CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): run as root, "
                       "or add them to the worker's securityContext")
    if facts.bcc_error is not None:
        missing.append(f"bcc (python3-bpfcc): {facts.bcc_error}; on Debian: "
                       "apt-get install bpfcc-tools python3-bpfcc")
    if facts.kernel_source is None:
        looked = ", ".join(facts.header_candidates) or "nowhere"
        missing.append(f"kernel headers for bcc to compile its probes against (looked in "
                       f"{looked}): install them (Debian: linux-headers-amd64, whose -common "
                       "and -amd64 halves the worker merges) or point BCC_KERNEL_SOURCE at a "
                       "header tree")
    if facts.tracefs is None:
        missing.append("tracefs (tracepoints and uprobes are found there): "
                       "mount -t tracefs nodev /sys/kernel/tracing")
    else:
        if not facts.uprobes:
            missing.append(f"uprobes: {facts.tracefs}/uprobe_events is missing "
                           "(a kernel built without CONFIG_UPROBE_EVENTS)")
        if facts.missing_tracepoints:
            missing.append("the tracepoints " + ", ".join(facts.missing_tracepoints)
                           + f" (not in {facts.tracefs}/events)")
    if not missing:
        return None
    return "eBPF TLS capture is off, missing: " + "; ".join(missing)


def header_candidates(release: str, environ: dict[str, str] | None = None) -> list[str]:
    """Where bcc may find kernel headers, in the order they are tried."""
    environ = dict(os.environ) if environ is None else environ
    candidates = []
    if environ.get("BCC_KERNEL_SOURCE"):
        candidates.append(environ["BCC_KERNEL_SOURCE"])
    candidates.append(str(Path(sys.prefix) / MERGED_HEADERS_DIRNAME))
    candidates += [f"/lib/modules/{release}/build", f"/lib/modules/{release}/source"]
    return candidates


def usable_header_tree(path: str) -> bool:
    return all((Path(path) / marker).is_file() for marker in HEADER_MARKERS)


def _effective_caps() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return None


def find_tracefs() -> str | None:
    for candidate in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(candidate, "events")):
            return candidate
    return None


def find_kernel_source(candidates: list[str], cache_dir: Path | None) -> str | None:
    """A header tree for bcc: a usable candidate; else Debian's split halves of a candidate,
    merged under cache_dir; else the kernel's own archive (CONFIG_IKHEADERS); else the
    newest split halves installed under /usr/src, merged (headers of another version work:
    the program reads no kernel struct)."""
    source = next((c for c in candidates if usable_header_tree(c)), None)
    if source is not None:
        return source
    merged = None if cache_dir is None else Path(cache_dir) / MERGED_HEADERS_DIRNAME
    if merged is not None:
        for tree in candidates:
            if (halves := split_halves(tree)) is not None:
                return _merge(halves, merged)
    if os.path.exists(KHEADERS_ARCHIVE):
        return KHEADERS_ARCHIVE        # bcc unpacks the kernel's own headers
    if merged is not None:
        for tree in installed_arch_halves():
            if (halves := split_halves(tree)) is not None:
                return _merge(halves, merged)
    return None


def _merge(halves: tuple[Path, Path], target: Path) -> str | None:
    try:
        return str(merge_halves(*halves, target))
    except OSError:
        return None


def host_facts(bcc_error: str | None, cache_dir: Path | None = None) -> HostFacts:
    """This machine, looked at. cache_dir: where Debian's split kernel headers may be merged."""
    release = platform.release()
    tracefs = find_tracefs()
    candidates = header_candidates(release)
    source = find_kernel_source(candidates, cache_dir)
    if source is None:
        candidates += [KHEADERS_ARCHIVE, "/usr/src/linux-headers-*"]
    missing_tracepoints = []
    if tracefs is not None:
        missing_tracepoints = [tp for tp in REQUIRED_TRACEPOINTS
                               if not os.path.isdir(os.path.join(tracefs, "events", tp))]
    return HostFacts(
        system=platform.system(), release=release, effective_caps=_effective_caps(),
        bcc_error=bcc_error, tracefs=tracefs,
        uprobes=tracefs is not None and os.path.exists(os.path.join(tracefs, "uprobe_events")),
        missing_tracepoints=missing_tracepoints, kernel_source=source,
        header_candidates=candidates)
