"""CPU seconds of the capture process's replay path over a capture, best of N, in-process:
what `python -m worker --pcap FILE`'s capture child does with the file (worker.capture's
_drain: FileSource.read_batch, SegmentWriter.append, and the writer's enforce() per turn), for
before/after comparisons on a loaded machine (CPU time, not wall time).

    .venv/bin/python tests/bench/bench_replay_store.py PCAP [--tree DIR] [--repeat 3] [--read-only]
        [--keep DIR]

Each run writes the store into a fresh temporary directory with the limit bench_protocols gives
the worker (4 GB: 64 MiB segments, nothing evicted); the printed digest is of the segment files
(names and bytes, in order), so two trees (`--tree` imports `worker` from another checkout)
that print the same digest wrote the same store. `--read-only` times FileSource.read_batch
alone (the digest is then of the packets read). `--keep DIR` leaves the last run's store there;
`--no-digest` leaves the digest out (under perf or py-spy).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

BATCH = 4096
BATCHES_PER_TURN = 16
LIMIT = 4 * 1000 * 1000 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pcap")
    parser.add_argument("--tree", help="a checkout whose worker/ is measured (default: this one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--read-only", action="store_true", help="time FileSource.read_batch alone")
    parser.add_argument("--keep", type=Path, help="copy the last run's store to this directory")
    parser.add_argument("--no-digest", action="store_true", help="no digest (under a profiler)")
    args = parser.parse_args()
    sys.path.insert(0, args.tree or str(Path(__file__).resolve().parents[2]))

    from worker import capture
    from worker.sources import open_file_source
    from worker.store.segments import SegmentWriter
    if hasattr(capture, "tune_gc_for_capture"):    # as the capture child (older trees: not)
        capture.tune_gc_for_capture()

    def replay(directory: Path) -> tuple[int, float, hashlib._Hash]:
        started = time.process_time()
        source = open_file_source(args.pcap)
        writer = None if args.read_only else SegmentWriter(directory, LIMIT)
        packets = 0
        digest = hashlib.sha256()
        outside = 0.0     # the read-only digest's time, not counted
        while not source.finished:
            if writer is not None:
                writer.enforce()
            for _ in range(BATCHES_PER_TURN):    # worker.capture._drain
                batch = source.read_batch(BATCH)
                packets += len(batch)
                if writer is not None:
                    writer.append(source.linktype, batch)
                elif not args.no_digest:
                    paused = time.process_time()
                    for ts_ns, data, wirelen in batch:
                        digest.update(b"%d %d " % (ts_ns, wirelen) + data)
                    outside += time.process_time() - paused
                if len(batch) < BATCH:
                    break
        source.close()
        if writer is not None:
            writer.close()
        used = time.process_time() - started - outside
        if error := source.stats().error:
            print(f"{Path(args.pcap).name}: {error}", file=sys.stderr)
        return packets, used, digest

    best = float("inf")
    packets, digest_text = 0, ""
    for _ in range(args.repeat):
        directory = Path(tempfile.mkdtemp(prefix="bench-capture-"))
        try:
            packets, used, digest = replay(directory)
            best = min(best, used)
            if args.no_digest:
                digest = hashlib.sha256()
            elif not args.read_only:
                digest = hashlib.sha256()
                for path in sorted((directory / "pcap").glob("*.pcap")):
                    digest.update(path.name.encode() + b"\n" + path.read_bytes())
            digest_text = digest.hexdigest()[:16]
            if args.keep is not None:
                shutil.rmtree(args.keep, ignore_errors=True)
                shutil.copytree(directory, args.keep)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    what = "read" if args.read_only else "stored"
    print(f"{Path(args.pcap).name}: packets {what} {packets}, digest {digest_text}, cpu best of "
          f"{args.repeat} {best:.3f} s ({best / max(packets, 1) * 1e6:.2f} us per packet)")


if __name__ == "__main__":
    main()
