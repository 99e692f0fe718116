"""The import graph ARCHITECTURE.md draws: shark/ is shared by everyone and imports neither the
worker nor the hub; the worker and the hub never import each other (they talk over HTTP in
shark/model.py's Structs); and no module imports, at load time, a module that imports it back
(a cycle makes the order of imports matter and hides a missing cut between two concepts)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shark", "worker", "hub")
MAY_IMPORT = {"shark": {"shark"}, "worker": {"worker", "shark"}, "hub": {"hub", "shark"}}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path], load_time_only: bool) -> set[str]:
    """The project modules `path` imports: all of them, or only those imported while it loads
    (not inside functions or `if TYPE_CHECKING:`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(module: str) -> None:
        while module and module not in known:
            module = module.rpartition(".")[0]
        if module and module != name:
            found.add(module)

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    resolve(alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - (node.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    resolve(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
            elif isinstance(node, ast.If) and load_time_only and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and load_time_only:
                continue
            else:
                visit([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)])

    visit(ast.parse(path.read_text()).body)
    return found


def wrong_imports() -> list[str]:
    known = modules()
    return [f"{name} imports {target}" for name, path in known.items()
            for target in sorted(imports(path, name, known, load_time_only=False))
            if target.split(".")[0] not in MAY_IMPORT[name.split(".")[0]]]


def load_time_cycles() -> list[list[str]]:
    known = modules()
    graph = {name: imports(path, name, known, load_time_only=True) for name, path in known.items()}
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def strong(node: str) -> None:           # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                strong(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            strong(name)
    return cycles


def test_no_package_imports_one_it_may_not():
    assert wrong_imports() == []


def test_no_import_cycle_at_load_time():
    assert load_time_cycles() == []


def test_the_checks_see_a_cycle_and_a_wrong_import(tmp_path, monkeypatch):
    # the two checks above on a made-up tree, so a broken checker cannot pass silently
    for package, body in {"shark": "from worker import a\n", "worker": "", "hub": ""}.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(body)
    (tmp_path / "worker" / "a.py").write_text("from worker import b\n")
    (tmp_path / "worker" / "b.py").write_text("import worker.a\n\ndef later():\n    import hub\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    known = modules()
    assert imports(known["worker.b"], "worker.b", known, load_time_only=False) == {"worker.a", "hub"}
    assert imports(known["worker.b"], "worker.b", known, load_time_only=True) == {"worker.a"}
    assert wrong_imports() == ["shark imports worker.a", "worker.b imports hub"]
    assert load_time_cycles() == [["worker.a", "worker.b"]]
