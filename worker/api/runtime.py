"""What the worker's API serves from: the capture child, the index, the dissection pipeline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from worker.broadcast import Broadcaster
from worker.capture import CaptureProcess, CaptureStats
from worker.options import WorkerOptions
from worker.pipeline import Pipeline
from worker.sharded import ShardedPipeline
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
    return all(source.finished for source in stats.sources)


# A write or loop error keeps capture "degraded" this long after it happened.
DEGRADED_WINDOW_S = 60.0


def degraded_reasons(capture: CaptureStats | None, exitcode: int | None,
                     now: float) -> list[str]:
    """One line per reason capture is not whole right now (empty: it is)."""
    if capture is None:
        code = "" if exitcode is None else f" (exit code {exitcode})"
        return [f"the capture process is not running{code}: nothing is captured"]
    reasons = []
    store = capture.store
    refused_at = store.last_write_error_ts
    if refused_at is not None and now - refused_at < DEGRADED_WINDOW_S:
        reasons.append(
            f"the disk refused {store.write_errors} writes, the last {now - refused_at:.0f}s "
            f"ago ({store.last_write_error}); {store.evicted_for_space} segments were "
            f"evicted to make room and {capture.dropped_on_write} packets were not stored")
    failed_at = capture.last_write_error_ts
    if failed_at is not None and now - failed_at < DEGRADED_WINDOW_S and refused_at is None:
        reasons.append(f"{capture.dropped_on_write} packets could not be stored, the last "
                       f"{now - failed_at:.0f}s ago ({capture.last_write_error})")
    loop_at = capture.last_loop_error_ts
    if loop_at is not None and now - loop_at < DEGRADED_WINDOW_S:
        reasons.append(f"the capture loop failed {capture.loop_errors} times, the last "
                       f"{now - loop_at:.0f}s ago ({capture.last_loop_error})")
    return reasons


@dataclass
class WorkerRuntime:
    options: WorkerOptions
    capture: CaptureProcess
    index: EntryIndex
    pipeline: Pipeline | ShardedPipeline
    broadcaster: Broadcaster
    started: float = field(default_factory=time.time)
    target_ips: list[str] = field(default_factory=list)
    target_idle: bool = False      # the hub's targets match nothing on this node: capture nothing
    notes: list[str] = field(default_factory=list)
    redactor: Redactor | None = None   # None with --no-redact
    stream_clients: int = 0        # /stream clients being served (--max-stream-clients)
    stream_refused: int = 0        # /stream clients turned away: that many were served

    def capture_stats(self) -> CaptureStats | None:
        try:
            return self.capture.ask("stats", timeout=5.0)
        except CaptureError:
            return None

    def capture_finished(self) -> bool:
        return replay_finished(self.options, self.capture)

    def _index_status(self) -> dict[str, Any]:
        index, budget = self.index, self.index.budget
        return {"entries": index.count(), "bytes": index.size_bytes(),
                # its share of --storage-limit (worker/store/grant.py): what the segment writer
                # granted, the writes that waited for more, those that found none in time
                "granted": budget.granted() if budget else None,
                "room_waits": budget.waits if budget else 0,
                "room_refused": budget.refused if budget else 0,
                "over_estimate": index.over_estimate,
                # transactions that wrote rows or the cursor: more than the writes of rows
                # when a write's bound passed one budget step (it is cut to fit)
                "transactions": index.transactions}

    def status(self) -> dict[str, Any]:
        capture = self.capture_stats()
        sources = capture.sources if capture else []
        reasons = degraded_reasons(capture, self.capture.exitcode, time.time())
        return {
            "node": self.options.node,
            "uptime_s": round(time.time() - self.started, 3),
            "capture": {
                "running": capture is not None,
                "degraded": bool(reasons),
                "degraded_reasons": reasons,
                "sources": msgspec.to_builtins(sources),
                "received": sum(s.received for s in sources),
                "dropped": sum(s.dropped for s in sources),
                "if_dropped": sum(s.if_dropped for s in sources),
                "write_errors": capture.write_errors if capture else 0,
                "dropped_on_write": capture.dropped_on_write if capture else 0,
                "last_write_error": capture.last_write_error if capture else "",
                "loop_errors": capture.loop_errors if capture else 0,
                "last_loop_error": capture.last_loop_error if capture else "",
                "target_left_out": capture.target_left_out if capture else 0,
            },
            "store": msgspec.to_builtins(capture.store) if capture else None,
            "ebpf": msgspec.to_builtins(capture.ebpf) if capture else None,
            "index": self._index_status(),
            "dissection": msgspec.to_builtins(self.pipeline.stats),
            "assembler": self.pipeline.assembler_stats(),
            "stream": {"subscribers": self.broadcaster.count, "lost": self.broadcaster.lost_total,
                       "clients": self.stream_clients, "max_clients": self.options.max_stream_clients,
                       "refused": self.stream_refused},
            "targets": {"ips": self.target_ips, "idle": self.target_idle, "names": len(self.pipeline.names)},
            "redaction": self.redactor.describe() if self.redactor else describe_off(),
            "notes": self.notes,
        }
