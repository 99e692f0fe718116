"""Cross-check with tshark on the golden MySQL capture: commands, query texts, error codes.

tshark 4.0 puts the values of all messages of one frame in one row, joined by the aggregator
(',' by default, but queries hold commas: the record separator 0x1e is used here, tshark takes
a single character; str.splitlines would split at it too, hence split("\\n")).
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path


from support.golden import GOLDEN, dissect_capture
from worker.dissectors.mysql import COMMANDS

CODES = {name: code for code, name in COMMANDS.items()}


def tshark(path: Path, *fields: str) -> list[list[list[str]]]:
    argv = ["tshark", "-r", str(path), "-Y", "mysql", "-T", "fields", "-E", "aggregator=\x1e"]
    for field in fields:
        argv += ["-e", field]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return [[value.split("\x1e") if value else [] for value in line.split("\t")]
            for line in out.split("\n") if line]


def test_mysql_matches_tshark() -> None:
    path = GOLDEN / "mysql" / "session.pcap"
    rows = tshark(path, "mysql.command", "mysql.query", "mysql.error_code")
    commands = Counter(int(c) for row in rows for c in row[0])
    queries = Counter(q for row in rows for q in row[1])
    errors = Counter(int(c) for row in rows for c in row[2])
    entries = dissect_capture(path)
    commanded = [e for e in entries if e["request"]["command"] != "handshake"]
    assert commands == Counter(CODES[e["request"]["command"]] for e in commanded)
    # tshark shows the text of COM_QUERY and COM_STMT_PREPARE
    assert queries == Counter(e["request"]["query"] for e in commanded
                              if e["request"]["command"] in ("COM_QUERY", "COM_STMT_PREPARE"))
    assert errors == Counter(e["response"]["error"]["code"] for e in entries
                             if e["response"] and e["response"].get("error"))
