"""Cross-check with tshark on the golden PostgreSQL captures: queries, Executes, error codes.

tshark 4.0 puts the values of all messages of one frame in one row, joined by the aggregator
(',' by default, but queries hold commas: the record separator 0x1e is used here, tshark takes
a single character; str.splitlines would split at it too, hence split("\\n")).
pgsql.code also carries the SQLSTATE of NoticeResponses (00000): only errors are compared.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from support.golden import GOLDEN, dissect_capture



def tshark(path: Path, *fields: str) -> list[list[list[str]]]:
    argv = ["tshark", "-r", str(path), "-Y", "pgsql", "-T", "fields", "-E", "aggregator=\x1e"]
    for field in fields:
        argv += ["-e", field]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return [[value.split("\x1e") if value else [] for value in line.split("\t")]
            for line in out.split("\n") if line]


@pytest.mark.parametrize("name", ["session", "ssl"])
def test_postgres_matches_tshark(name: str) -> None:
    path = GOLDEN / "postgres" / f"{name}.pcap"
    rows = tshark(path, "pgsql.type", "pgsql.query", "pgsql.code")
    types = [t for row in rows for t in row[0]]
    queries = [q for row in rows for q in row[1]]
    codes = [c for row in rows for c in row[2] if c != "00000"]   # notices
    entries = dissect_capture(path)
    ours = [e for e in entries if e["request"]["kind"] in ("simple", "extended")]
    # every query text tshark saw (Query and Parse messages) is in our entries, and back
    assert set(queries) == {e["request"]["query"] for e in ours}
    simple = Counter(e["request"]["query"] for e in ours if e["request"]["kind"] == "simple")
    assert sum(simple.values()) == types.count("Simple query")
    # one entry per Execute
    assert types.count("Execute") == sum(1 for e in ours if e["request"].get("execute"))
    assert Counter(codes) == Counter(e["response"]["error"]["code"] for e in entries
                                     if e["response"] and e["response"].get("error"))
    assert types.count("Startup message") == sum(
        1 for e in entries if e["request"]["kind"] == "startup")
    assert types.count("Notification") == sum(
        1 for e in entries if e["request"]["kind"] == "notification")
    data_rows = types.count("Data row")
    assert data_rows == sum(e["response"]["rows"] for e in ours
                            if e["response"] and str(e["response"]["command_tag"]).startswith("SELECT"))
