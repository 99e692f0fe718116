"""Typical /entries queries against a big index: CPU per query, before and after a change.

    .venv/bin/python tests/bench/bench_index_query.py INDEX [--tree DIR] [--repeat 5]

INDEX is an index file (bench_merge.py --keep-index makes one; it is copied, never changed).
Each query runs as the worker's /entries does (worker.api.app._entries_page: rows newest first,
a page at a time, filtered by the KFL predicate, until `limit` match), in this process with
the tree's worker/ (--tree: another checkout, to compare before and after). Prints the best
CPU time (process_time) per query, the rows it returned, and a digest of them, which must be
the same for every tree; then the file's bytes per row.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# (name, KFL, window: None, or a share (from, to) of the index's time span, limit)
QUERIES = [
    ("newest 100", "", None, 100),
    ("protocol: redis, 100", "redis", None, 100),
    ("protocol: http (no row matches)", "http", None, 100),
    ("command == SET, 100", 'request.command == "SET"', None, 100),
    ("status / elapsed: elapsed_ms > 50 (rare)", "elapsed_ms > 50", None, 100),
    ("name: dst.name == \"redis\" (none)", 'dst.name == "redis"', None, 100),
    ("time window 10% in the middle, 1000", "", (0.45, 0.55), 1000),
    ("time window + command == GET, 100", 'request.command == "GET"', (0.45, 0.55), 100),
]


def run_query(index, page, predicate_of, text, window, limit, span) -> list[bytes]:  # type: ignore[no-untyped-def]
    since = until = None
    if window is not None:
        since, until = span[0] + window[0] * (span[1] - span[0]), span[0] + window[1] * (span[1] - span[0])
    predicate = predicate_of(text)
    found: list[bytes] = []
    after = None
    while len(found) < limit:
        lines, after, finished = page(index, predicate, 0, since, until, after, min(500, limit - len(found)))
        found.extend(lines)
        if finished:
            break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    import worker
    from worker.api.app import _entries_page
    from worker.filters import compile_query, row_predicate
    from worker.store.index import EntryIndex
    print(f"worker from {Path(worker.__file__).parent}")

    def predicate_of(text: str):  # type: ignore[no-untyped-def]
        return row_predicate(compile_query(text))

    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        path = Path(scratch) / "index.sqlite"
        shutil.copy(args.index, path)
        index = EntryIndex(path)      # an older version is migrated here, outside the timing
        try:
            connection = index._connection()
            rows, first, last = connection.execute("SELECT count(*), min(ts), max(ts) FROM entries").fetchone()
            version = index.get_meta("schema_version")
            for name, text, window, limit in QUERIES:
                best = float("inf")
                for _ in range(args.repeat):
                    cpu = time.process_time()
                    found = run_query(index, _entries_page, predicate_of, text, window, limit, (first, last))
                    best = min(best, time.process_time() - cpu)
                digest = hashlib.sha256(b"".join(found)).hexdigest()[:12]
                print(f"{name:44s} {best * 1e3:9.2f} ms  {len(found):5d} rows  {digest}")
            seqs = random.Random(1).sample(range(1, rows + 1), 2000)
            best = float("inf")
            for _ in range(args.repeat):
                cpu = time.process_time()
                for seq in seqs:
                    index.get(seq)
                best = min(best, time.process_time() - cpu)
            print(f"{'get(seq) x 2000':44s} {best * 1e3:9.2f} ms")
            index.keep_small()
        finally:
            index.close()
        size = path.stat().st_size
        print(f"schema {version}: {rows} rows, {size} bytes, {size / rows:.1f} bytes per row")


if __name__ == "__main__":
    main()
