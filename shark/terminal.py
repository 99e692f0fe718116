"""Text from captured traffic made safe to print on a terminal.

A summary, a header or a log line can carry bytes someone else sent: an ESC sequence that
moves the cursor, retitles the window or rewrites what was printed before, a CR that hides the
start of a line, a BEL. Every control character (C0, DEL, C1) and the bidirectional overrides
that reorder what is shown become visible escapes (`\\x1b`, `\\r`, `\\u202e`); everything else
prints as it is.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def printable(text: str) -> str:
    """`text` with its control characters as visible escapes."""
    return _UNSAFE.sub(_escape, text)
