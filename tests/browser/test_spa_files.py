"""The SPA's files as shipped: no build step, nothing fetched from elsewhere, every module
import resolves, every example filter is valid KFL (the hub serving them: test_ui_views.py)."""

from __future__ import annotations

import re
from pathlib import Path

from shark import kfl

SPA = Path(__file__).resolve().parents[2] / "spa"
IMPORT = re.compile(r'^\s*import\s[^;]*?from\s+"([^"]+)"|^\s*import\s+"([^"]+)"', re.M)


def spa_files(suffix: str) -> list[Path]:
    return sorted(SPA.rglob(f"*{suffix}"))


def test_every_module_import_is_a_relative_file_that_exists():
    modules = spa_files(".js")
    assert modules, "spa/js is empty"
    for module in modules:
        for match in IMPORT.finditer(module.read_text()):
            target = match.group(1) or match.group(2)
            assert target.startswith("./"), f"{module.name}: {target!r} is not a relative import (no bundler here)"
            assert (module.parent / target).is_file(), f"{module.name}: imports {target}, which does not exist"


def test_the_page_loads_nothing_from_other_hosts():
    for path in [*spa_files(".html"), *spa_files(".js"), *spa_files(".css")]:
        text = path.read_text()
        for url in re.findall(r"""(?:src|href)\s*=\s*["'](https?:)?//""", text):
            raise AssertionError(f"{path.name} loads from another host")
        assert "cdn" not in text.lower(), path.name
    html = (SPA / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="([^"#?]+)"', html):
        if ref.startswith(("api/", "./")) or ref == "./":
            continue
        assert (SPA / ref).is_file(), f"index.html refers to {ref}, which is not in spa/"


def test_every_example_filter_is_valid_kfl():
    source = (SPA / "js" / "filterbox.js").read_text()
    block = source[source.index("export const EXAMPLES"):source.index("];", source.index("export const EXAMPLES"))]
    examples = re.findall(r"""\[\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\s*,""", block)
    queries = [double.encode().decode("unicode_escape") if double else single for double, single in examples]
    assert len(queries) >= 10, queries
    for query in queries:
        kfl.compile(query)   # raises KflError with the column when an example is wrong
