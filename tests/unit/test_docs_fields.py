"""docs/KFL.md carries every protocol's fields page (docs/fields/*.md) in its appendix."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def as_appendix(page: str) -> str:
    text = re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", page.strip(),
                  flags=re.M)
    return re.sub(r"\]\((?!http)([^)]+\.md)\)", r"](fields/\1)", text)


def test_kfl_appendix_matches_the_fields_pages() -> None:
    kfl = (DOCS / "KFL.md").read_text()
    pages = sorted((DOCS / "fields").glob("*.md"))
    assert len(pages) >= 12
    for page in pages:
        assert as_appendix(page.read_text()) in kfl, f"{page.name} changed: copy it into KFL.md"
