"""CPU of one dissection shard per packet of the store, in-process: for before/after comparisons
of what a shard pays for the packets of the other shards' flows (issue 17: N shards should
index close to N times what one does).

    .venv/bin/python tests/bench/bench_shard.py PCAP [--shards 2] [--tree DIR] [--repeat 3]
        [--segment-mb 25] [--profile]

The capture is copied into a store directory (pcap segments of --segment-mb, as the capture
child writes them). Then, timed with time.process_time(), the loop worker.shard's process runs
(worker.shard._Shard._step and _report): SegmentTail.read -> Dissection.feed -> the rows made,
encoded as a ShardReport (msgpack) -- once as one dissection of everything (what the
in-thread Pipeline does with --dissect-shards 1) and once as each of the --shards shards; the
shards' sum over the one is what sharding costs. Printed per run: CPU s, µs per packet of the store, entries, and a digest of
the rows' bytes of each shard, which must not change between trees (`--tree` imports `worker` from another checkout, e.g. `git worktree add /tmp/old main`).
--profile prints cProfile's top functions of shard 0 of --shards.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def make_store(pcap: Path, directory: Path, segment_bytes: int) -> int:
    """pcap's records in segments of about segment_bytes under directory/pcap; its packets."""
    from shark.pcap import HEADER_SIZE, PcapReader, encode_header, encode_record
    (directory / "pcap").mkdir(parents=True)
    packets, segment, out = 0, 0, None
    with pcap.open("rb") as file:
        reader = PcapReader(file)
        header = encode_header(reader.header.linktype, reader.header.snaplen)
        size = segment_bytes
        for ts_ns, data, wirelen in _records(reader):
            if size >= segment_bytes:
                if out is not None:
                    out.close()
                segment += 1
                out = (directory / "pcap" / f"{segment:012d}.pcap").open("wb")
                out.write(header)
                size = HEADER_SIZE
            record = encode_record(ts_ns, data, wirelen)
            out.write(record)   # type: ignore[union-attr]
            size += len(record)
            packets += 1
    if out is not None:
        out.close()
    return packets


def _records(reader: Any) -> Any:
    while True:
        batch = reader.read(4096)
        if not batch:
            return
        for _offset, ts_ns, data, wirelen in batch:
            yield ts_ns, data, wirelen


# A shard count with more shards than the benchmark captures have flows (--dissect-shards' most).
IDLE_OF = 64


def idle_shard(pcap: Path, count: int) -> int | None:
    """A shard of `count` that owns none of the capture's packets, if there is one."""
    from shark.pcap import PcapReader
    try:   # this tree's balanced flow table (worker.flow_table) ...
        from worker.flow_table import FlowTable
        owner = FlowTable(count).owner
    except ImportError:   # ... or an older tree's hash of the flow
        from worker.packet import flow_shard

        def owner(linktype: int, buf: bytes, start: int, stop: int) -> int:
            return flow_shard(linktype, buf[start:stop], count)
    owners = set()
    with pcap.open("rb") as file:
        reader = PcapReader(file)
        for _offset, _ts, data, _wirelen in _records_with_offsets(reader):
            owners.add(owner(reader.header.linktype, data, 0, len(data)))
    free = sorted(set(range(count)) - owners)
    return free[0] if free else None


def _records_with_offsets(reader: Any) -> Any:
    while batch := reader.read(4096):
        yield from batch


def run_shard(store: Path, index: int, count: int, read_batch: int) -> tuple[float, int, int, str]:
    """One shard's loop over the whole store: (CPU s, packets, rows, digest of the rows)."""
    import msgspec

    from worker.dissection import DONE, IDLE, Dissection
    from worker.shard import ShardReport, ShardStats
    try:   # an older tree's shards send (OrderKey, row) pairs made from IndexRows
        from worker.shard import wire_row
    except ImportError:
        wire_row = None
    from worker.store.segments import SegmentTail
    try:   # this tree's shards read through a filter (worker.shard_filter) ...
        from worker.shard_filter import ShardFilter
    except ImportError:   # ... or an older tree's, which route in Dissection.feed
        ShardFilter = None
    encoder = msgspec.msgpack.Encoder()
    digest, rows = hashlib.sha256(), 0
    started = time.process_time()
    tail = SegmentTail(store)
    if count == 1:   # one shard is the in-thread Pipeline's Dissection: no routing
        dissection, keep = Dissection("bench"), ()
    elif ShardFilter is None:
        dissection, keep = Dissection("bench", shard=(index, count)), ()
    else:
        try:   # trees from mqtt-path on made rows as exchanges were emitted when asked to ...
            dissection = Dissection("bench", wire_rows=True)
        except TypeError:   # ... this one always does, older ones never did
            dissection = Dissection("bench")
        keep = (ShardFilter(index, count),)
    stats = ShardStats()
    position, phase = (0, 0), IDLE
    while True:
        batch = tail.read(read_batch, *keep)
        if batch:
            dissection.feed(batch)
            position = batch[-1][0]
        else:
            dissection.close_all()
            phase = DONE
        flows = None
        if hasattr(dissection, "take_wire_report"):   # this tree's rows and their flows' table
            flows, wire = dissection.take_wire_report()
        elif wire_row is None:   # an older tree's flat rows (worker.dissection.WireRow)
            wire = dissection.take_wire_rows()
        else:
            wire = [(key, wire_row(row)) for key, row in dissection.take_keyed_rows(numbered=False)]
        rows += len(wire)
        stats.packets = tail.packets_read
        report = encoder.encode(ShardReport((*position, phase, 0), wire, stats) if flows is None
                                else ShardReport((*position, phase, 0), flows, wire, stats))
        for row in wire:   # the entry JSON after its id, in either form
            digest.update(row[3] if wire_row is None else row[1][3])
        del report
        if not batch:
            break
    tail.close()
    return time.process_time() - started, tail.packets_read, rows, digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pcap", type=Path)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--tree", help="a checkout whose worker/ is measured (default: this one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--segment-mb", type=float, default=25.0)
    parser.add_argument("--read-batch", type=int, default=2048)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, args.tree or str(ROOT))
    from worker.dissection import tune_gc_for_dissection
    with tempfile.TemporaryDirectory(prefix="bench-shard-") as tmp:
        store = Path(tmp) / "store"
        packets = make_store(args.pcap, store, int(args.segment_mb * 1024 * 1024))
        tune_gc_for_dissection()
        print(f"{args.pcap.name}: {packets} packets, worker from {sys.modules['worker'].__file__}")
        total = {}
        for index, count in [(0, 1), *((i, args.shards) for i in range(args.shards))]:
            times, result = [], None
            for _ in range(args.repeat):
                cpu, seen, rows, digest = run_shard(store, index, count, args.read_batch)
                times.append(cpu)
                result = (seen, rows, digest)
            assert result is not None
            seen, rows, digest = result
            best = min(times)
            print(f"  shard {index} of {count}: cpu best {best:.3f} s (runs "
                  f"{' '.join(f'{t:.2f}' for t in times)}), {best / seen * 1e6:.2f} µs per packet "
                  f"of the store, {rows} entries, digest {digest}")
            total[count] = total.get(count, 0.0) + best
        idle = idle_shard(args.pcap, IDLE_OF)
        if idle is not None:   # every packet is another shard's: what those alone cost
            times = [run_shard(store, idle, IDLE_OF, args.read_batch)[0] for _ in range(args.repeat)]
            print(f"  shard {idle} of {IDLE_OF} (owns no flow): cpu best {min(times):.3f} s (runs "
                  f"{' '.join(f'{t:.2f}' for t in times)}), {min(times) / packets * 1e6:.2f} µs "
                  f"per packet of the store")
        extra = total[args.shards] - total[1]
        print(f"  {args.shards} shards together: cpu {total[args.shards]:.3f} s, "
              f"{extra:+.3f} s over one ({extra / packets * 1e6:+.2f} µs per packet of the store)")
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(run_shard, store, 0, args.shards, args.read_batch)
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
            print(text.getvalue())
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
