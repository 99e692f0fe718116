"""What eBPF TLS capture needs, and the one message that names what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.sources.ebpf.diagnosis import (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, HEADER_MARKERS,
                                           HostFacts, diagnose,
                                           find_kernel_source, header_candidates, host_facts,
                                           usable_header_tree)
from worker.sources.ebpf.headers import installed_arch_halves, merge_halves, split_halves
from worker.sources.ebpf.loader import BCC_DIST_PACKAGES

ROOT_CAPS = (1 << 41) - 1


def facts(**changes) -> HostFacts:
    base = dict(system="Linux", release="6.18.0", effective_caps=ROOT_CAPS, bcc_error=None,
                tracefs="/sys/kernel/tracing", uprobes=True, missing_tracepoints=[],
                kernel_source="/venv/kernel-headers", header_candidates=["/venv/kernel-headers"])
    base.update(changes)
    return HostFacts(**base)


def test_a_complete_host_has_nothing_missing():
    assert diagnose(facts()) is None


def test_cap_bpf_with_cap_perfmon_is_enough():
    assert diagnose(facts(effective_caps=(1 << CAP_BPF) | (1 << CAP_PERFMON))) is None
    assert diagnose(facts(effective_caps=1 << CAP_SYS_ADMIN)) is None


@pytest.mark.parametrize(("changes", "expected"), [
    ({"effective_caps": 1 << CAP_BPF},
     "the capabilities CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"),
    ({"bcc_error": "No module named 'bcc'"},
     "bcc (python3-bpfcc): No module named 'bcc'; on Debian: apt-get install bpfcc-tools python3-bpfcc"),
    ({"kernel_source": None, "header_candidates": ["/a", "/lib/modules/6.18.0/build"]},
     "kernel headers for bcc to compile its probes against (looked in /a, "
     "/lib/modules/6.18.0/build): install them (Debian: linux-headers-amd64"),
    ({"tracefs": None}, "tracefs (tracepoints and uprobes are found there): "
                        "mount -t tracefs nodev /sys/kernel/tracing"),
    ({"uprobes": False}, "uprobes: /sys/kernel/tracing/uprobe_events is missing"),
    ({"missing_tracepoints": ["sock/inet_sock_set_state"]},
     "the tracepoints sock/inet_sock_set_state (not in /sys/kernel/tracing/events)"),
])
def test_each_missing_piece_is_named_with_what_to_do(changes, expected):
    message = diagnose(facts(**changes))
    assert message is not None
    assert message.startswith("eBPF TLS capture is off, missing: ")
    assert expected in message
    assert "\n" not in message


def test_several_missing_pieces_make_one_message():
    message = diagnose(facts(bcc_error="no bcc", tracefs=None, kernel_source=None))
    assert message is not None
    assert message.count("; ") >= 2
    assert "bcc" in message and "tracefs" in message and "kernel headers" in message


def test_other_systems_are_told_ebpf_needs_linux():
    assert diagnose(facts(system="Darwin")) == "eBPF needs Linux; this is Darwin"


def test_header_candidates_prefer_the_environment_then_the_merged_tree():
    found = header_candidates("6.18.0", {"BCC_KERNEL_SOURCE": "/opt/headers"})
    assert found == ["/opt/headers", str(Path(sys.prefix) / "kernel-headers"),
                     "/lib/modules/6.18.0/build", "/lib/modules/6.18.0/source"]
    assert header_candidates("6.18.0", {})[0] == str(Path(sys.prefix) / "kernel-headers")


def test_a_header_tree_needs_kconfig_and_autoconf(tmp_path):
    assert not usable_header_tree(str(tmp_path))
    for marker in HEADER_MARKERS[:1]:       # the -amd64 package alone: no kconfig.h
        (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / marker).write_text("")
    assert not usable_header_tree(str(tmp_path))
    for marker in HEADER_MARKERS:
        (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / marker).write_text("")
    assert usable_header_tree(str(tmp_path))


def test_host_facts_read_this_machine():
    found = host_facts(bcc_error="stand-in for a failed import")
    assert found.system == "Linux"
    assert found.release == os.uname().release
    assert found.effective_caps is not None
    assert found.header_candidates[0] in (os.environ.get("BCC_KERNEL_SOURCE"),
                                          str(Path(sys.prefix) / "kernel-headers"))
    message = diagnose(found)
    assert message is not None and "stand-in for a failed import" in message


def test_bcc_is_imported_without_touching_sys_path():
    # In a child: libbcc (and LLVM with it) stays out of the test process.
    script = ("import sys; before = list(sys.path); "
              "from worker.sources.ebpf.loader import BCC_DIST_PACKAGES, import_bcc; "
              "bcc = import_bcc(); assert sys.path == before, sys.path; "
              "assert not set(BCC_DIST_PACKAGES) & set(sys.path); "
              "import importlib.util; assert importlib.util.find_spec('netaddr') is None "
              "or 'dist-packages' not in importlib.util.find_spec('netaddr').origin; "
              "print(bcc.BPF.__name__, bcc.__file__)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "BPF"
    assert done.stdout.split()[1].startswith(BCC_DIST_PACKAGES[0])


# -- Debian's split kernel headers -----------------------------------------------------------

def split_tree(root: Path) -> tuple[Path, Path]:
    """A miniature of linux-headers-V-common and linux-headers-V-amd64."""
    common, arch = root / "linux-headers-6.1.0-9-common", root / "linux-headers-6.1.0-9-amd64"
    for path, text in [(common / "include/linux/kconfig.h", "common"),
                       (common / "include/linux/types.h", "common"),
                       (common / "Makefile", "the real makefile"),
                       (arch / "include/generated/autoconf.h", "arch"),
                       (arch / "include/linux/types.h", "arch wins"),
                       (root / "kbuild/scripts/run.sh", "script"),
                       (arch / "Makefile", f"include {common}/Makefile\n")]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (arch / "scripts").symlink_to(root / "kbuild/scripts")
    return arch, common


def test_the_arch_half_names_its_common_half(tmp_path):
    arch, common = split_tree(tmp_path)
    assert split_halves(arch) == (arch, common)
    assert split_halves(common) is None         # its Makefile includes nothing
    assert split_halves(tmp_path / "nowhere") is None


def test_merged_halves_are_one_tree_with_the_arch_half_on_top(tmp_path):
    arch, common = split_tree(tmp_path)
    assert not usable_header_tree(str(arch))
    merged = merge_halves(arch, common, tmp_path / "cache" / "kernel-headers")
    assert usable_header_tree(str(merged))
    assert (merged / "include/linux/types.h").read_text() == "arch wins"
    assert (merged / "include/linux/kconfig.h").read_text() == "common"
    assert (merged / "Makefile").read_text().startswith("include ")
    assert (merged / "scripts").is_symlink() and (merged / "scripts/run.sh").read_text() == "script"
    stamp = (merged / ".merged-from").stat().st_mtime_ns
    assert merge_halves(arch, common, merged) == merged           # unchanged halves: kept
    assert (merged / ".merged-from").stat().st_mtime_ns == stamp


def test_find_kernel_source_merges_a_split_candidate(tmp_path):
    arch, _common = split_tree(tmp_path)
    found = find_kernel_source([str(tmp_path / "missing"), str(arch)], tmp_path / "cache")
    assert found == str(tmp_path / "cache" / "kernel-headers")
    assert find_kernel_source([str(found)], None) == found        # usable as it is


def test_the_installed_headers_merge_into_a_tree_bcc_can_use(tmp_path):
    halves = [h for tree in installed_arch_halves() if (h := split_halves(tree))]
    assert halves, "./dev installs linux-headers-amd64"
    merged = merge_halves(*halves[0], tmp_path / "kernel-headers")
    assert usable_header_tree(str(merged))
    assert installed_arch_halves(str(tmp_path), machine="x86_64") == []
    assert installed_arch_halves(machine="sparc") == []
