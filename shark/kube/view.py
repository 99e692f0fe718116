"""The rollout as the user watches it: the hub and one line per node.

On a terminal, a table redrawn in place (rich); elsewhere (a pipe, a CI log), one line each
time a pod's state changes, so the log tells the same story without redraws.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shark.kube.rollout import PodState, RolloutState

STYLES = {"ready": "green", "not ready": "yellow", "ContainerCreating": "cyan", "Pending": "cyan",
          "PodInitializing": "cyan", "ErrImagePull": "yellow"}


def _cell(pod: PodState | None) -> tuple[str, str, str]:
    if pod is None:
        return "—", "waiting for a pod", "dim"
    style = STYLES.get(pod.reason, "red" if pod.fatal else "yellow")
    return pod.name, pod.describe(), style


def rows(state: RolloutState) -> list[tuple[str, str, str, str]]:
    """(what, pod, state, style) for the hub and each node, in display order."""
    out = [("hub", *_cell(p)) for p in state.hub] or [("hub", *_cell(None))]
    for node, pod in sorted(state.workers.items()):
        out.append((node, *_cell(pod)))
    return out


class LiveView:
    """A table on the terminal, redrawn as the state changes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.console = Console(file=stream or sys.stderr)
        self.live = Live(Text("waiting for the API …"), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def __call__(self, state: RolloutState) -> None:
        table = Table(box=None, pad_edge=False, show_edge=False)
        table.add_column("NODE")
        table.add_column("POD")
        table.add_column("STATE")
        for what, pod, text, style in rows(state):
            table.add_row(what, pod, Text(text, style=style))
        ready = sum(p.ready for p in state.pods())
        table.caption = f"{ready} of {len(rows(state))} ready"
        self.live.update(table)

    def close(self) -> None:
        self.live.stop()


class LineView:
    """One line per change: `node-a  shark-worker-x2k9  ready`."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.seen: dict[str, tuple[str, str]] = {}

    def __call__(self, state: RolloutState) -> None:
        for what, pod, text, _ in rows(state):
            if self.seen.get(what) != (pod, text):
                self.seen[what] = (pod, text)
                self.say(f"  {what:<20} {pod:<32} {text}")

    def close(self) -> None:
        pass


def make_view(say: Callable[[str], None], stream: TextIO | None = None) -> LiveView | LineView:
    stream = stream or sys.stderr
    return LiveView(stream) if stream.isatty() else LineView(say)
