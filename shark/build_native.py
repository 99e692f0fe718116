"""`python -m shark.build_native [--force] | clean | status`: the mypyc build of shark/compiled.py
(a module of its own: `python -m shark.compiled` would run a second copy of the module that
`import shark` already installed the guard from)."""

from __future__ import annotations

import sys

from shark import compiled


def main(argv: list[str]) -> int:
    if argv in ([], ["--force"]):
        return compiled.build(force=bool(argv))
    if argv == ["clean"]:
        compiled.remove_built()
        return 0
    if argv == ["status"]:
        # what the guard decided for this process (shark may not import the worker package,
        # tests/unit/test_layering.py): compiled when a build is there and it let it be used
        built = bool(compiled.built_files())
        state = "compiled" if built and not compiled.pure_reason else \
            f"pure Python ({compiled.pure_reason or 'not built'})"
        print(f"dissection hot path: {state}")
        return 0
    print("usage: python -m shark.build_native [--force] | clean | status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
