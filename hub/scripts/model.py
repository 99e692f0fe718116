"""What a script is on disk and on the wire, and the rules for its name."""

from __future__ import annotations

import re

import msgspec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)
# Path segments under /scripts/ that are routes, not scripts.
RESERVED = frozenset({"logs", "snapshots", "actions"})
MAX_CODE_BYTES = 512 * 1024


class StoredScript(msgspec.Struct, kw_only=True):
    """A script as the store keeps it (a JSON file locally, a ConfigMap key in cluster)."""
    name: str
    code: str
    enabled: bool = True
    disabled_reason: str | None = None   # set when the hub disabled it (repeated failures)
    created: float
    updated: float


def name_problem(name: object) -> str | None:
    """Why `name` cannot name a script, or None."""
    if not isinstance(name, str) or not _NAME.match(name):
        return (f"{name!r} is not a script name: 1-63 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit")
    if name in RESERVED:
        return f"{name!r} is reserved (a route under /scripts); choose another name"
    return None
