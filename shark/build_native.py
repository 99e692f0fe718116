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
        import worker.packet
        state = "compiled" if compiled.is_compiled(worker.packet) else \
            f"pure Python ({compiled.pure_reason or 'not built'})"
        print(f"dissection hot path: {state}")
        return 0
    print("usage: python -m shark.build_native [--force] | clean | status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
