"""Kernel headers bcc can compile against, made from Debian's split header packages.

Debian ships a kernel's headers in two halves: linux-headers-<v>-<arch> (generated files, the
config, a Makefile that includes the other half's) and linux-headers-<v>-common (the rest,
include/linux/kconfig.h among it). bcc takes one tree (BCC_KERNEL_SOURCE) and fails on the
arch half alone ("kconfig.h not found"), so the two are merged into one tree of symlinks
that resolves like `cp -rs common/. T; cp -rsf arch/. T` (the arch half's files over the
common half's). The merged tree is rebuilt only when its halves change.
`python -m worker.sources.ebpf.prepare_headers TARGET` makes it from the newest installed halves
(./dev does, into .venv/kernel-headers).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
from pathlib import Path

_INCLUDE = re.compile(r"^include\s+(\S+)/Makefile\s*$", re.MULTILINE)
_STAMP = ".merged-from"
# Debian's name for the architecture in its header package names.
_DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armmp", "ppc64le": "powerpc64le",
                "s390x": "s390x"}


def split_halves(tree: str | Path) -> tuple[Path, Path] | None:
    """(arch half, common half) when `tree` is the arch half of a Debian split, else None."""
    tree = Path(tree)
    try:
        makefile = (tree / "Makefile").read_text(errors="replace")
    except OSError:
        return None
    match = _INCLUDE.search(makefile)
    if match is None:
        return None
    common = Path(match.group(1))
    if (common / "include/linux/kconfig.h").is_file() and (tree / "include/generated/autoconf.h").is_file():
        return tree.resolve(), common.resolve()
    return None


def installed_arch_halves(root: str = "/usr/src", machine: str | None = None) -> list[Path]:
    """Debian arch header trees under /usr/src, newest version first."""
    arch = _DEBIAN_ARCH.get(machine or platform.machine())
    if arch is None:
        return []
    try:
        names = [n for n in os.listdir(root) if n.startswith("linux-headers-") and n.endswith(f"-{arch}")]
    except OSError:
        return []

    def version(name: str) -> list[int]:
        return [int(part) for part in re.findall(r"\d+", name)]
    return [Path(root) / name for name in sorted(names, key=version, reverse=True)]


def merge_halves(arch: Path, common: Path, target: Path) -> Path:
    """The merged tree at `target` (built, or already there for these halves). What exists in
    one half only is linked whole (a directory as one symlink), so the tree holds a few dozen
    links instead of one per header file."""
    stamp = f"{arch}\n{common}\n"
    try:
        if (target / _STAMP).read_text() == stamp:
            return target
    except OSError:
        pass
    building = target.with_name(target.name + ".tmp")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    _merge_directory(common, arch, building)
    (building / _STAMP).write_text(stamp)
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    return target


def _real_directory(path: Path | None) -> bool:
    return path is not None and path.is_dir() and not path.is_symlink()


def _merge_directory(common: Path | None, arch: Path | None, out: Path) -> None:
    out.mkdir()
    names = set(os.listdir(common) if common else ()) | set(os.listdir(arch) if arch else ())
    for name in sorted(names):
        lower = common / name if common and os.path.lexists(common / name) else None
        upper = arch / name if arch and os.path.lexists(arch / name) else None
        if _real_directory(lower) and _real_directory(upper):
            _merge_directory(lower, upper, out / name)
        else:   # one half has it, or the arch half's entry wins
            (out / name).symlink_to(upper if upper is not None else lower)
