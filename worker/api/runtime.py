"""What the worker's API serves from: the capture child, the index, the dissection pipeline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from worker.broadcast import Broadcaster
from worker.capture import CaptureProcess
from worker.options import WorkerOptions
from worker.pipeline import Pipeline
from worker.redact import Redactor, describe_off
from worker.sources.base import CaptureError
from worker.store.index import EntryIndex


def replay_finished(options: WorkerOptions, capture: CaptureProcess) -> bool:
    """True once a replayed file has been read to its end (never for live capture)."""
    if options.pcap_file is None:
        return False
    try:
        stats = capture.ask("stats", timeout=5.0)
    except CaptureError:
        return True
    return all(source["finished"] for source in stats["sources"])


@dataclass
class WorkerRuntime:
    options: WorkerOptions
    capture: CaptureProcess
    index: EntryIndex
    pipeline: Pipeline
    broadcaster: Broadcaster
    started: float = field(default_factory=time.time)
    target_ips: list[str] = field(default_factory=list)
    target_idle: bool = False      # the hub's targets match nothing on this node: capture nothing
    notes: list[str] = field(default_factory=list)
    redactor: Redactor | None = None   # None with --no-redact

    def capture_stats(self) -> dict[str, Any] | None:
        try:
            return self.capture.ask("stats", timeout=5.0)
        except CaptureError:
            return None

    def capture_finished(self) -> bool:
        return replay_finished(self.options, self.capture)

    def status(self) -> dict[str, Any]:
        capture = self.capture_stats()
        sources = capture["sources"] if capture else []
        store = capture["store"] if capture else None
        return {
            "node": self.options.node,
            "uptime_s": round(time.time() - self.started, 3),
            "capture": {
                "running": capture is not None,
                "sources": sources,
                "received": sum(s["received"] for s in sources),
                "dropped": sum(s["dropped"] for s in sources),
                "if_dropped": sum(s["if_dropped"] for s in sources),
                "write_errors": capture["write_errors"] if capture else 0,
                "dropped_on_write": capture["dropped_on_write"] if capture else 0,
                "last_write_error": capture["last_write_error"] if capture else "",
            },
            "store": store,
            "ebpf": capture.get("ebpf") if capture else None,
            "index": {"entries": self.index.count(), "bytes": self.index.size_bytes()},
            "dissection": msgspec.to_builtins(self.pipeline.stats),
            "assembler": self.pipeline.assembler_stats(),
            "stream": {"subscribers": self.broadcaster.count, "lost": self.broadcaster.lost_total},
            "targets": {"ips": self.target_ips, "idle": self.target_idle, "names": len(self.pipeline.names)},
            "redaction": self.redactor.describe() if self.redactor else describe_off(),
            "notes": self.notes,
        }
