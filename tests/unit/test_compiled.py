"""The guard that keeps a stale mypyc build from shadowing edited sources (shark/compiled.py)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from shark import compiled

ROOT = Path(__file__).resolve().parents[2]


def test_every_compiled_module_exists_and_the_hash_follows_its_text(tmp_path: Path) -> None:
    for module in compiled.COMPILED:
        assert compiled.source_path(module).is_file(), module
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("X = 1\n")
    (tmp_path / "pkg" / "b.py").write_text("Y = 2\n")
    before = compiled.sources_hash(("pkg.a", "pkg.b"), tmp_path)
    assert compiled.sources_hash(("pkg.a", "pkg.b"), tmp_path) == before
    (tmp_path / "pkg" / "b.py").write_text("Y = 3\n")
    assert compiled.sources_hash(("pkg.a", "pkg.b"), tmp_path) != before


def test_pure_python_reason() -> None:
    assert compiled.pure_python_reason(None, "h", "h") == ""
    assert compiled.pure_python_reason("0", "h", "h") == ""
    assert "SHARK_PURE_PYTHON" in compiled.pure_python_reason("1", "h", "h")
    assert "stale" in compiled.pure_python_reason(None, "old", "new")
    assert "stale" in compiled.pure_python_reason(None, None, "new")    # no record of a build


def test_source_first_finder_wins_over_what_the_path_finder_would_take(tmp_path: Path) -> None:
    # The path finder takes a package directory before a .py of the same name, as it takes an
    # extension module before it: the finder must still give the .py.
    pkg = tmp_path / "guardpkg"
    (pkg / "mod").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("WHERE = 'py'\n")
    (pkg / "mod" / "__init__.py").write_text("WHERE = 'shadow'\n")
    sys.path.insert(0, str(tmp_path))
    finder = compiled.SourceFirst(("guardpkg.mod",), tmp_path)
    try:
        assert importlib.import_module("guardpkg.mod").WHERE == "shadow"
        del sys.modules["guardpkg.mod"]
        sys.meta_path.insert(0, finder)
        assert importlib.import_module("guardpkg.mod").WHERE == "py"
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        sys.path.remove(str(tmp_path))
        for name in ("guardpkg.mod", "guardpkg"):
            sys.modules.pop(name, None)


def _where(env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-c", "import worker.packet, worker.dissection as d; "
         "print(worker.packet.__file__.rsplit('.', 1)[-1], d.__file__.rsplit('.', 1)[-1])"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=True,
    ).stdout.split()


@pytest.mark.skipif(not compiled.built_files() or compiled.recorded_hash() != compiled.sources_hash(),
                    reason="no current mypyc build in this checkout (./dev setup makes one)")
def test_a_current_build_is_imported_unless_pure_python_is_asked_for() -> None:
    assert _where({"SHARK_PURE_PYTHON": "0"}) == ["so", "so"]
    assert _where({"SHARK_PURE_PYTHON": "1"}) == ["py", "py"]


FAST_PATH_TESTS = ["tests/unit/test_redis_fast_path.py", "tests/unit/test_postgres_fast_path.py",
                   "tests/unit/test_mysql_fast_path.py", "tests/unit/test_mqtt_fast_path.py"]


@pytest.mark.skipif(not compiled.built_files() or compiled.recorded_hash() != compiled.sources_hash(),
                    reason="no current mypyc build: the fast-path tests run in this process")
def test_fast_path_tests_in_pure_python() -> None:
    # They switch a reader's _whole off by patching its class, which a compiled class ignores
    # (tests/support/sessions.py skips them there): in a pure-Python process they run.
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *FAST_PATH_TESTS], cwd=ROOT, env={**os.environ, "SHARK_PURE_PYTHON": "1"},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " skipped" not in done.stdout.splitlines()[-1], done.stdout[-1000:]


def test_an_extension_module_an_older_build_left_is_found(tmp_path: Path) -> None:
    """A module taken out of COMPILED keeps the .so its last build left beside its .py, which
    CPython would import first: remove_built deletes it and a stale build's guard imports its
    .py (an extension module without a .py, or one still compiled, is not such a one)."""
    suffix = EXTENSION_SUFFIXES[0]
    (tmp_path / "worker" / "sub").mkdir(parents=True)
    (tmp_path / "hub").mkdir()
    for name in ("worker/kept", "worker/sub/gone", "worker/alone", "worker/_native__mypyc", "hub/old"):
        (tmp_path / (name + suffix)).write_bytes(b"")
    for name in ("worker/kept", "worker/sub/gone", "hub/old"):
        (tmp_path / (name + ".py")).write_text("")
    assert compiled.stray_files(tmp_path, ("worker.kept",)) == {
        "worker.sub.gone": tmp_path / ("worker/sub/gone" + suffix),
        "hub.old": tmp_path / ("hub/old" + suffix)}
    assert compiled.stray_files(tmp_path, ("worker.kept", "worker.sub.gone", "hub.old")) == {}
