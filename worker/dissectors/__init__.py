"""Protocol dissectors: one module per protocol behind the interface of base.py.

A new protocol is a module with a Dissector and one line in registry().
"""

from __future__ import annotations

from worker.dissectors.base import Dissector


def registry() -> list[Dissector]:
    """The built-in dissectors, in the order they are tried (after port hints)."""
    from worker.dissectors.http1 import Http1Dissector

    return [
        Http1Dissector(),
    ]
