"""Captured text printed on a terminal: control characters become visible escapes."""

from __future__ import annotations

import time

from test_cli import entry
from shark.cli import format_row
from shark.scripts_cli import format_line
from shark.terminal import printable

HOSTILE = "GET /\x1b]0;owned\x07\x1b[2J\r\x9b31m\u202egnp.exe\x00\x7f"


def test_controls_become_visible_escapes() -> None:
    assert printable(HOSTILE) == "GET /\\x1b]0;owned\\x07\\x1b[2J\\r\\x9b31m\\u202egnp.exe\\x00\\x7f"
    assert printable("tab\there\nnext") == "tab\\there\\nnext"
    assert printable("plain ünïcode → ok …") == "plain ünïcode → ok …"


def test_query_table_rows_hold_no_control_characters() -> None:
    row = format_row(entry(1, time.time(), summary=HOSTILE * 2))
    assert not any(ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f for ch in row)
    assert "GET /\\x1b]0;owned\\x07\\x1b[2J\\r" in row
    assert printable(HOSTILE * 2)[:59] + "…" in row      # escaped first, then cut to the column


def test_script_log_lines_hold_no_control_characters() -> None:
    line = format_line({"ts": 1764150000.0, "script": "s", "level": "info", "text": f"saw {HOSTILE}"})
    assert line.endswith("saw " + printable(HOSTILE))
