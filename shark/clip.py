"""Bounded text in error messages: a refused value can be huge (60k target IPs make a 1.2 MB
BPF filter), and an error that echoes it whole floods logs, answers and the UI. Errors say its
length and how it starts instead."""

from __future__ import annotations

KEEP = 200        # characters of a long value a message shows (`shown`)
CLIP_KEEP = 1000  # characters of an error message, at most, passed on (`clip`)


def clip(text: str, keep: int = CLIP_KEEP) -> str:
    """`text` as it is when short; else its first `keep` characters and its length."""
    if len(text) <= keep:
        return text
    return f"{text[:keep]}… ({len(text)} characters in all)"


def shown(value: str, keep: int = KEEP) -> str:
    """`value` quoted (repr) for a message when short; else its length and how it starts."""
    if len(value) <= keep:
        return repr(value)
    return f"of {len(value)} characters starting {value[:keep]!r}…"
