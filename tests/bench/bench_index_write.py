"""The in-thread pipeline's index writes alone: IndexWriter.write_values over a capture's rows.

    .venv/bin/python tests/bench/bench_index_write.py record PCAP OUT [--work-dir DIR]
    .venv/bin/python tests/bench/bench_index_write.py replay OUT [--tree DIR] [--repeat 3]
        [--index-dir DIR] [--no-budget] [--chunks]

`record` imports PCAP into a store under --work-dir (as bench_merge.py does, reused when there)
and runs the one-shard `Pipeline`'s steps over it in this thread (READ_BATCH packets a step, as
the worker on one CPU), keeping each `write_values` call's arguments (the rows' values, the
cursor, the segment read) in OUT with the store's path (pickle: the values' types, bytes or bytearray, None or
NO_VALUE, are kept as the dissection made them). `replay` makes those calls again, in order,
into a fresh index in --index-dir (on disk by default, as the worker's) through the IndexWriter
of the tree (--tree: another checkout's worker), with a storage budget as the worker's for
bench_protocols' 4 GB limit (every request for room granted at once; --no-budget: none), and
prints the writer's CPU per row (`thread_time` of the calls), the process's (the checkpoint
thread's included), the transactions and checkpoints made and a digest of every stored row: two trees must
print the same digest. `--chunks` hands the writer the rows' flat_chunks as the sharded merge
does (made outside the timed call). `--join N` makes every N consecutive writes one (their rows
in order, the last cursor and segment), as the sharded write thread joins the releases put
while it is busy (worker/write_thread.py): the rows' digest is the same, the cursor's too.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import index_rows_digest

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 4 * 1024 ** 3      # bench_protocols' --storage-limit: nothing is evicted


def record(pcap: Path, out: Path, work_dir: Path) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests" / "bench"))
    from bench_merge import make_store

    from worker.broadcast import Broadcaster
    from worker.pipeline import Pipeline, read_batch_for
    from worker.store.index import EntryIndex

    store = work_dir / f"{pcap.stem}-store"
    if not store.exists():
        make_store(pcap, store)
    calls = []
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        index = EntryIndex(Path(scratch) / "index.sqlite")
        pipeline = Pipeline(store, index, "bench", Broadcaster(), lambda: True, replay=True)
        pipeline.read_batch = read_batch_for(LIMIT)
        writer = pipeline._writer
        write_values = writer.write_values

        def kept(values, cursor, segment, chunks=None):  # type: ignore[no-untyped-def]
            calls.append((values, cursor, segment))
            write_values(values, cursor, segment, chunks)

        writer.write_values = kept  # type: ignore[method-assign]
        while pipeline._step() or not pipeline.ended:
            pass
        index.close()
    out.write_bytes(pickle.dumps((str(store), calls), protocol=pickle.HIGHEST_PROTOCOL))
    rows = sum(len(values) for values, _cursor, _segment in calls)
    print(f"{pcap.name}: {len(calls)} writes, {rows} rows -> {out}")


def replay(recording: Path, tree: Path, index_dir: Path, budget: bool, chunks: bool,
           join: int = 1) -> dict[str, float | int | str]:
    sys.path.insert(0, str(tree))
    sys.path.insert(0, str(ROOT / "tests" / "bench"))
    from bench_merge import _granter

    from worker.broadcast import Broadcaster
    from worker.pipeline import DissectionStats, IndexWriter
    from worker.store import index as index_module

    store, calls = pickle.loads(recording.read_bytes())
    if join > 1:
        calls = [_joined(calls[at:at + join]) for at in range(0, len(calls), join)]
    # the collector as the dissection thread sets it (the recording's rows frozen, as the
    # worker's start-up objects are: a young collection would walk them all)
    from worker.dissection import tune_gc_for_dissection
    tune_gc_for_dissection()
    flat = getattr(index_module, "flat_chunks", None) if chunks else None
    made = [flat(values) if flat is not None else None for values, _c, _s in calls]
    index_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=index_dir) as scratch:
        index = index_module.EntryIndex(Path(scratch) / "index.sqlite",
                                        index_module.wal_limit_for(LIMIT))
        stop = threading.Event()
        granter = _granter(index, stop) if budget else None
        # the recorded store's segments (read only): none evicted
        writer = IndexWriter(Path(store), index, Broadcaster(), DissectionStats(), stop)
        thread, process = time.thread_time(), time.process_time()
        for (values, cursor, segment), these in zip(calls, made):
            if these is None:
                writer.write_values(values, cursor, segment)
            else:
                writer.write_values(values, cursor, segment, these)
        thread, process = time.thread_time() - thread, time.process_time() - process
        stop.set()
        if granter is not None:
            granter.join()
        digest, count = index_rows_digest(index)
        digest.update(repr(index.cursor()).encode())
        transactions = index.transactions
        checkpoints = f"{index.background_checkpoints}/{index.writer_checkpoints}"
        index.close()
    return {"rows": count, "writer_us": round(thread / count * 1e6, 3),
            "process_us": round(process / count * 1e6, 3), "transactions": transactions,
            "checkpoints_thread/writer": checkpoints,
            "digest": digest.hexdigest()[:16]}


def _joined(calls: list[tuple[Any, Any, int]]) -> tuple[Any, Any, int]:
    cursors = [cursor for _values, cursor, _segment in calls if cursor is not None]
    return ([value for values, _c, _s in calls for value in values],
            cursors[-1] if cursors else None, calls[-1][2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    recorder = commands.add_parser("record")
    recorder.add_argument("pcap", type=Path)
    recorder.add_argument("out", type=Path)
    recorder.add_argument("--work-dir", type=Path,
                          default=Path(tempfile.gettempdir()) / "bench-index-write")
    player = commands.add_parser("replay")
    player.add_argument("recording", type=Path)
    player.add_argument("--tree", type=Path, default=ROOT)
    player.add_argument("--repeat", type=int, default=3)
    player.add_argument("--index-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "bench-index-write")
    player.add_argument("--no-budget", action="store_true")
    player.add_argument("--chunks", action="store_true")
    player.add_argument("--join", type=int, default=1, help="every N writes made one")
    args = parser.parse_args()
    if args.command == "record":
        args.work_dir.mkdir(parents=True, exist_ok=True)
        record(args.pcap, args.out, args.work_dir)
        return
    for _ in range(args.repeat):
        print(replay(args.recording, args.tree, args.index_dir, not args.no_budget, args.chunks,
                     args.join),
              flush=True)


if __name__ == "__main__":
    main()
