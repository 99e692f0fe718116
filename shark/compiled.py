"""The dissection hot path compiled with mypyc, and the guard that keeps a stale build out.

`./dev setup|run|test` runs `python -m shark.build_native`: the modules in COMPILED are
compiled by mypyc (part of mypy) into extension modules next to their .py files, one shared
library worker/_native__mypyc*.so for all of them, skipped when the sources' hash is that of
the last build. A failed build leaves pure Python, with a warning.

CPython imports an extension module before the .py of the same name, so an edited .py would
be shadowed by the .so built from its old text. The guard (install_guard, called by the
`shark` and `worker` packages before any of these modules can be imported) compares the hash
recorded at build time with the sources' hash now; when they differ, or SHARK_PURE_PYTHON=1
is set (debugging: tracebacks, pdb, coverage), every module in COMPILED is imported from its
.py. All or none: compiled modules call each other's code directly in the shared library, so a
compiled caller would keep running the old text of an edited callee. A module taken out of
COMPILED changes the hash too: until the next build (which deletes the .so it left) it is
imported from its .py as well (stray_files).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Per-packet code only (docs/BENCHMARKS.md, "Compiled hot path"): decode, reassembly, the
# dissection loop, the stream readers, the selector and the dissectors that were measured; the
# capture process's record loops (worker.records).
COMPILED: tuple[str, ...] = (
    "worker.packet",
    "worker.connections",
    "worker.assembler.tcp",
    "worker.assembler.flows",
    "worker.assembler.assembler",
    "worker.dissection",
    "worker.redact_scan",
    "worker.flow_table",
    "worker.shard_filter",
    "worker.dissectors.base",
    "worker.dissectors.ways",
    "worker.dissectors.stream",
    "worker.dissectors.dns",
    "worker.dissectors.redis",
    "worker.dissectors.postgres",
    "worker.dissectors.mysql",
    "worker.dissectors.http1",
    "worker.dissectors.mqtt",
    "worker.dissectors.websocket",
    "worker.dissectors.kafka",
    "worker.dissectors.hpack_decode",
    "worker.dissectors.http2",
    "worker.records",
)
GROUP = "worker._native"           # the shared library: worker/_native__mypyc<suffix>
HASH_FILE = ROOT / "worker" / "_native.hash"   # the sources' hash of the installed build
PURE_ENV = "SHARK_PURE_PYTHON"


def source_path(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def sources_hash(modules: tuple[str, ...] = COMPILED, root: Path = ROOT) -> str:
    """Of the compiled modules' text, the module list and the Python that imports them."""
    digest = hashlib.sha256(f"{sys.implementation.cache_tag}\n".encode())
    for module in modules:
        digest.update(f"{module}\n".encode())
        digest.update(source_path(module, root).read_bytes())
    return digest.hexdigest()


def built_files() -> list[Path]:
    """The extension modules a build left (whether or not they are current)."""
    found = []
    for module in (*COMPILED, GROUP + "__mypyc"):
        base = ROOT.joinpath(*module.split("."))
        found += [base.with_name(base.name + suffix) for suffix in EXTENSION_SUFFIXES
                  if base.with_name(base.name + suffix).exists()]
    return found


def stray_files(root: Path = ROOT, modules: tuple[str, ...] = COMPILED) -> dict[str, Path]:
    """Extension modules beside a .py of the project's packages whose module is not in
    `modules` (nor the shared library), by module: left by a build from before the module
    left COMPILED. CPython would import one ahead of its .py, and it calls into a shared
    library that no longer has its code. A walk of the packages: only for a stale build."""
    known = {*modules, GROUP + "__mypyc"}
    found: dict[str, Path] = {}
    for package in ("worker", "shark", "hub"):
        for suffix in EXTENSION_SUFFIXES:
            for path in (root / package).rglob("*" + suffix):
                source = path.with_name(path.name[:-len(suffix)] + ".py")
                module = ".".join(source.relative_to(root).with_suffix("").parts)
                if module not in known and source.exists():
                    found[module] = path
    return found


def recorded_hash() -> str | None:
    try:
        return HASH_FILE.read_text().strip()
    except OSError:
        return None


class SourceFirst:
    """Imports the named modules from their .py files under `root`, ahead of the path
    finders (which would take an extension module of the same name first). A meta path
    finder by its find_spec: not a subclass of importlib.abc.MetaPathFinder, whose module
    (with importlib.resources) cost every process ~12 ms of CPU at start (docs/BENCHMARKS.md,
    "Worker start, third round")."""

    def __init__(self, modules: tuple[str, ...] = COMPILED, root: Path = ROOT,
                 warning: str = "") -> None:
        self.modules = frozenset(modules)
        self.root = root
        self.warning = warning     # printed once, when the first of them is imported

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> ModuleSpec | None:
        if fullname not in self.modules:
            return None
        if self.warning:
            print(self.warning, file=sys.stderr)
            self.warning = ""
        return importlib.util.spec_from_file_location(fullname, source_path(fullname, self.root))


def pure_python_reason(env: str | None, recorded: str | None, current: str) -> str:
    """Why built extension modules must not be imported: "" when they may."""
    if env not in (None, "", "0"):
        return f"{PURE_ENV} is set"
    if recorded != current:
        return ("the compiled modules are stale (their .py changed since the build); "
                "`./dev setup` rebuilds them")
    return ""


_guard: SourceFirst | None = None
# Why the compiled modules are not used ("" while they are, or when none were built).
pure_reason = ""


def install_guard() -> None:
    """Once per process: keep stale or unwanted extension modules from being imported."""
    global _guard, pure_reason
    if _guard is not None or not built_files():
        return
    pure_reason = pure_python_reason(os.environ.get(PURE_ENV), recorded_hash(), sources_hash())
    if pure_reason:
        warning = "" if pure_reason.startswith(PURE_ENV) else \
            f"kubectl-shark: pure Python dissection: {pure_reason}"
        _guard = SourceFirst((*COMPILED, *stray_files()), warning=warning)
        sys.meta_path.insert(0, _guard)


def is_compiled(module: object) -> bool:
    """Whether a module was imported from an extension module."""
    return str(getattr(module, "__file__", "")).endswith(tuple(EXTENSION_SUFFIXES))


def remove_built() -> None:
    for path in (*built_files(), *stray_files().values()):
        path.unlink()
    HASH_FILE.unlink(missing_ok=True)


def build(force: bool = False) -> int:
    """Compile COMPILED unless the last build is of the same sources; 0 also when it failed
    (pure Python then: a warning says so), 1 only for a usage error."""
    import subprocess
    import tempfile
    import time

    want = sources_hash()
    if not force and recorded_hash() == want and len(built_files()) == len(COMPILED) + 1:
        return 0
    remove_built()
    started = time.monotonic()
    # build_ext without setup(), which would read pyproject.toml as this package's metadata.
    script = (
        "import sys\n"
        "from setuptools import Distribution\n"
        "from mypyc.build import mypycify\n"
        f"paths = {[str(source_path(m).relative_to(ROOT)) for m in COMPILED]!r}\n"
        f"dist = Distribution({{'name': 'shark-native', 'ext_modules': mypycify(paths, "
        f"opt_level='3', group_name={GROUP!r}, target_dir=sys.argv[1])}})\n"
        "build_ext = dist.get_command_obj('build_ext')\n"
        "build_ext.inplace, build_ext.build_temp = True, sys.argv[1]\n"
        "dist.run_command('build_ext')\n"
    )
    with tempfile.TemporaryDirectory(prefix="shark-mypyc-") as temp:
        print(f"dev: compiling {len(COMPILED)} modules with mypyc ...", file=sys.stderr)
        done = subprocess.run([sys.executable, "-c", script, temp], cwd=ROOT,
                              capture_output=True, text=True)
    if done.returncode != 0 or len(built_files()) != len(COMPILED) + 1:
        remove_built()
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        print(f"{tail}\ndev: WARNING: mypyc failed: the dissection runs as pure Python "
              "(slower; see docs/BENCHMARKS.md)", file=sys.stderr)
        return 0
    HASH_FILE.write_text(want + "\n")
    print(f"dev: compiled in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0
