"""python -m worker.sources.ebpf.prepare_headers TARGET

Merges the newest Debian kernel headers installed under /usr/src (linux-headers-V-common and
-ARCH) into one tree at TARGET that bcc compiles against; does nothing when TARGET already
holds those halves. ./dev runs it into .venv/kernel-headers, where the worker looks.
"""

from __future__ import annotations

import sys
from pathlib import Path

from worker.sources.ebpf.headers import installed_arch_halves, merge_halves, split_halves


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m worker.sources.ebpf.prepare_headers TARGET", file=sys.stderr)
        return 2
    for tree in installed_arch_halves():
        if (halves := split_halves(tree)) is not None:
            try:
                print(merge_halves(*halves, Path(argv[0])))
            except OSError as error:
                print(f"cannot merge {halves[0]} and {halves[1]} into {argv[0]}: "
                      f"{error.strerror or error}", file=sys.stderr)
                return 1
            return 0
    print("no Debian kernel headers (linux-headers-*) under /usr/src", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
