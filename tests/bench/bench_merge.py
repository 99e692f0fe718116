"""The API process's share of a sharded dissection: merge, number and index the shards' rows.

    .venv/bin/python tests/bench/bench_merge.py PCAP [--work-dir DIR] [--shards 2]
        [--repeat 3] [--tree DIR] [--index-dir DIR] [--tag NAME] [--keep-index FILE]
        [--page-size BYTES] [--budget]

The first run imports PCAP into a store under --work-dir and records what the shards of
`python -m worker --dissect-shards N` send the merge thread (their reports, raw, and when the
merge released rows), once; later runs reuse both. Then it replays the recording --repeat
times through ShardedPipeline's _take / _release and IndexWriter into a fresh index (in
--index-dir: the same disk as the store unless told, so checkpoints' fsyncs count), with no
shard processes: the merge thread's work alone, without the machine's other load on the
shards. It prints CPU and wall time per row, the parts spent decoding the shards' reports and
in IndexWriter (sqlite), and a digest of every indexed row, which must be the same for every
tree (--tree: import the worker from another checkout, to compare before and after on the same
recording). --budget gives the index a storage budget as the worker does (each write then has
its bound computed and may be cut into several transactions; the grant answers at once).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import index_rows_digest

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 4 * 1024 ** 3      # bench_protocols' --storage-limit: nothing is evicted
NODE = "bench"
TIMEOUT_S = 1800.0


def make_store(pcap: Path, store: Path) -> None:
    from worker.sources import open_file_source
    from worker.store.segments import SegmentWriter

    source = open_file_source(str(pcap))
    writer = SegmentWriter(store, LIMIT)
    try:
        while not source.finished:
            batch = source.read_batch(4096)
            if batch:
                writer.append(source.linktype, batch)
    finally:
        writer.close()
        source.close()


def record(store: Path, shards: int, out: Path) -> int:
    """Run the shards over the store; keep every report (shard, bytes) and every release
    (None) in the order the merge thread saw them."""
    import msgspec

    from worker.broadcast import Broadcaster
    from worker.shard import decode_report
    from worker.sharded import ShardedPipeline
    from worker.store.index import EntryIndex

    events: list[tuple[int, bytes] | None] = []

    class Recording(ShardedPipeline):
        def _drain(self, shard):  # type: ignore[no-untyped-def]
            conn = shard.conn
            if conn is None:
                return
            try:
                while conn.poll():
                    data = conn.recv_bytes()
                    events.append((shard.state.shard, data))
                    self._take(shard, decode_report(data))
            except (EOFError, OSError):
                pass

        def _release(self) -> None:
            events.append(None)
            super()._release()

    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        index = EntryIndex(Path(scratch) / "index.sqlite")
        pipeline = Recording(store, index, NODE, Broadcaster(), lambda: True, shards=shards)
        pipeline.start()
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while not pipeline.ended:
                if time.monotonic() > deadline:
                    raise SystemExit("the shards did not finish in time")
                time.sleep(0.1)
            rows = index.count()
        finally:
            pipeline.stop()
            index.close()
    out.write_bytes(msgspec.msgpack.encode(events))
    return rows


def _granter(index, stop):  # type: ignore[no-untyped-def]
    """As the worker's segment writer for the index's budget (--budget): every request for room
    is granted at once (nothing to evict: LIMIT holds the whole capture)."""
    import select
    import threading

    from worker.store.grant import IndexBudget, IndexGrant

    grant = IndexGrant()
    index.budget = IndexBudget(grant, LIMIT)

    def answer() -> None:
        answered = 0
        while not stop.is_set():
            select.select([grant.asked_fd], [], [], 0.05)
            grant.drain_asked()
            seq, size = grant.asked()
            if seq != answered:
                grant.give(seq, size)
                answered = seq

    thread = threading.Thread(target=answer, name="granter", daemon=True)
    thread.start()
    return thread


def replay(store: Path, recording: Path, shards: int, index_dir: Path,
           keep: Path | None = None, page_size: int | None = None,
           budget: bool = False) -> dict[str, float | int | str]:
    import msgspec

    from worker.broadcast import Broadcaster
    from worker.shard import decode_report
    from worker.sharded import ShardedPipeline
    from worker.store.index import EntryIndex

    from worker.store import index as index_module

    events = msgspec.msgpack.decode(recording.read_bytes())
    if page_size is not None:   # a new index's page size (trees that set one: PAGE_SIZE)
        index_module.PAGE_SIZE = page_size
    with tempfile.TemporaryDirectory(dir=index_dir) as scratch:
        # as the worker opens it for --storage-limit LIMIT (where the tree says how)
        wal_limit_for = getattr(index_module, "wal_limit_for", None)
        index = EntryIndex(Path(scratch) / "index.sqlite",
                           *([wal_limit_for(LIMIT)] if wal_limit_for else []))
        import threading
        stop = threading.Event()
        granter = _granter(index, stop) if budget else None
        pipeline = ShardedPipeline(store, index, NODE, Broadcaster(), lambda: True, shards=shards)
        # A tree whose merge writes in a thread of its own (worker/write_thread.py): the replay
        # writes in line, as before, so that the writer's CPU is timed alone.
        writes = getattr(pipeline, "_writes", None)
        writer = pipeline._writer if writes is None else writes._writer
        write_values = writer.write_values
        in_writer = [0.0, 0.0]

        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            cpu, wall = time.thread_time(), time.perf_counter()
            write_values(*args, **kwargs)
            in_writer[0] += time.thread_time() - cpu
            in_writer[1] += time.perf_counter() - wall

        writer.write_values = timed  # type: ignore[method-assign]
        if writes is not None:
            # the merge thread makes the append statements' parameters where the tree does
            chunks = getattr(index_module, "flat_chunks", None)
            writes.put = (
                (lambda values, cursor, segment, _ended: timed(values, cursor, segment))
                if chunks is None else
                (lambda values, cursor, segment, _ended: timed(values, cursor, segment,
                                                               chunks(values))))
        take, release, states = pipeline._take, pipeline._release, pipeline._shards
        cpu, wall, thread = time.process_time(), time.perf_counter(), time.thread_time()
        decoding = 0.0
        for event in events:
            if event is None:
                release()
            else:
                start = time.thread_time()
                report = decode_report(event[1])
                decoding += time.thread_time() - start
                take(states[event[0]], report)
        cpu, wall, thread = (time.process_time() - cpu, time.perf_counter() - wall,
                             time.thread_time() - thread)
        stop.set()
        if granter is not None:
            granter.join()
        digest, count = index_rows_digest(index)
        size = index.size_bytes()
        checkpoints = (f"{getattr(index, 'background_checkpoints', '-')}"
                       f"/{getattr(index, 'writer_checkpoints', '-')}")
        index.close()   # the last connection's close copies the WAL in
        if keep is not None:
            shutil.copy(Path(scratch) / "index.sqlite", keep)
    # per row: the merge thread's CPU, the process's (a checkpoint thread's included), wall
    return {"rows": count, "wall_s": wall,
            "thread_us": thread / count * 1e6, "process_us": cpu / count * 1e6,
            "wall_us": wall / count * 1e6,
            "decode_thread_us": decoding / count * 1e6,
            "writer_thread_us": in_writer[0] / count * 1e6,
            "writer_wall_us": in_writer[1] / count * 1e6,
            "index_mb": size / 1e6, "checkpoints_thread/writer": checkpoints,
            "transactions": getattr(index, "transactions", "-"),
            "digest": digest.hexdigest()[:16]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pcap", type=Path)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-merge")
    parser.add_argument("--index-dir", type=Path, help="where the replay's index goes (default: --work-dir)")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose worker/ to import")
    parser.add_argument("--keep-index", type=Path, help="copy the last run's index here")
    parser.add_argument("--page-size", type=int, help="the new index's page size, for trees that set one")
    parser.add_argument("--budget", action="store_true", help="give the index a storage budget as the "
                        "worker does (its writes then bound each transaction; every request granted at once)")
    parser.add_argument("--tag", default="", help="names the recording: shards of another wire "
                        "format need their own (record with that tree)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    import worker
    print(f"worker from {Path(worker.__file__).parent}")

    base = args.work_dir / f"merge-{args.pcap.stem}"
    store = base / "store"
    recording = base / f"shards-{args.shards}{'-' + args.tag if args.tag else ''}.msgpack"
    if not recording.exists():
        if not store.exists():
            base.mkdir(parents=True, exist_ok=True)
            make_store(args.pcap, store)
        rows = record(store, args.shards, recording)
        print(f"recorded {rows} rows from {args.shards} shards in {recording}")
    for run in range(args.repeat):
        result = replay(store, recording, args.shards, args.index_dir or base, args.keep_index,
                        args.page_size, args.budget)
        print(f"run {run + 1}: " + "  ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
