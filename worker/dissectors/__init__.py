"""Protocol dissectors: one module per protocol behind the interface of base.py.

A new protocol is a module with a Dissector (a detect function, and a session that reads each
direction through worker.dissectors.stream) and one line in builtin.py's list: docs/DISSECTORS.md.
"""

from __future__ import annotations

from worker.dissectors.base import Dissector


def registry() -> list[Dissector]:
    """The built-in dissectors, in the order they are tried (after port hints)."""
    # Imported on first use: the API process needs them only for the detail view (or with
    # one shard), and the fork server imports them before any shard forks.
    from worker.dissectors.builtin import builtin

    return builtin()


def fallback() -> Dissector:
    """The dissector for flows no registered one claims: a generic tcp/udp entry per flow."""
    from worker.dissectors.generic import GenericDissector

    return GenericDissector()
