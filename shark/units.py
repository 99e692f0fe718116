"""Sizes ("200MB", "1GiB", "500Mi"), durations ("5m", "1h30m") and times (epoch seconds or a
duration ago) parsed in one place."""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


# Sizes and times end up in int64s (sqlite, the pcap's nanosecond timestamps): past these a
# value would overflow somewhere downstream, so it is refused here with the reason.
MAX_SIZE = 2**63 - 1
MAX_EPOCH = (2**63 - 1) // 10**9        # 9223372036: the last second whose nanoseconds fit (2262)


class UnitError(ValueError):
    """A size or duration that cannot be parsed; the message says what was expected."""


def parse_size(text: str | int, field: str = "size") -> int:
    """Bytes from "200MB" (SI), "1GiB"/"500Mi" (binary) or a plain number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise UnitError(f"{field}: {text} is negative; expected a size such as 200MB")
        if text > MAX_SIZE:
            raise UnitError(f"{field}: {text} is too large; at most {MAX_SIZE} bytes (8EiB)")
        return text
    if not isinstance(text, str):
        raise UnitError(f"{field}: expected a size such as 200MB, 1GiB or 500Mi, got {text!r}")
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise UnitError(f"{field}: {text!r} is not a size; expected a number with an optional "
                        "unit such as 200MB, 1GiB or 500Mi")
    number, unit = match.groups()
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise UnitError(f"{field}: unknown unit {unit!r} in {text!r}; expected one of "
                        "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB (Ki, Mi, Gi also accepted)")
    size = float(number) * factor
    if not size <= MAX_SIZE:           # also inf, from a number of hundreds of digits
        raise UnitError(f"{field}: {text!r} is too large; at most {MAX_SIZE} bytes (8EiB)")
    return int(size)


def parse_duration(text: str | float | int, field: str = "duration") -> float:
    """Seconds from "5m", "90s", "1h30m", "250ms" or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not math.isfinite(text) or text < 0:
            raise UnitError(f"{field}: {text} is negative; expected a duration such as 5m")
        return float(text)
    if not isinstance(text, str):
        raise UnitError(f"{field}: expected a duration such as 5m, 90s or 1h30m, got {text!r}")
    stripped = text.strip()
    try:
        seconds = float(stripped)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise UnitError(f"{field}: {text!r} is not a duration; expected a non-negative "
                            "number of seconds or a number with a unit, e.g. 5m")
        return seconds
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(stripped):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(stripped):
        raise UnitError(f"{field}: {text!r} is not a duration (at character {position + 1}); "
                        "expected a number with a unit: ms, s, m, h or d, e.g. 5m or 1h30m")
    return total


def parse_time(text: str | float | int, field: str, now: float) -> float:
    """Epoch seconds from epoch seconds, or from a duration ago ("5m", "1h30m") taken from
    `now` (at least 0: "100000d" is everything); finite and between 0 and MAX_EPOCH, else a
    UnitError naming the field."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UnitError(f"{field}: expected epoch seconds or a duration ago (10m), got {text!r}")
    try:
        when = float(text)
    except ValueError:
        # its error says what a duration is; one that reaches before 1970 means from the start
        return max(0.0, now - parse_duration(text, field))
    if not 0 <= when <= MAX_EPOCH:                    # also nan and inf
        raise UnitError(f"{field}: {text!r} is not a time; expected epoch seconds from 0 to "
                        f"{MAX_EPOCH} or a duration ago (10m, 1h30m)")
    return when


def check_window(since: float | None, until: float | None) -> None:
    """A window [since, until] that ends before it starts is a mistake, not an empty answer."""
    if since is not None and until is not None and until < since:
        raise UnitError(f"until: {until:.3f} is before since {since:.3f}; the window ends before it starts "
                        "(since is the start, until the end, each epoch seconds or a duration ago)")


def format_size(size: int) -> str:
    """A short human form: 209715200 -> "200MiB", 200000000 -> "200MB"."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if size >= factor:
            return f"{size / factor:g}{unit}"
    return f"{size}B"
