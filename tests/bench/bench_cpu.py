"""CPU seconds of the dissection path over a capture, best of N: for before/after comparisons
on a loaded machine (CPU time, not wall time), the trees run back to back.

    .venv/bin/python tests/bench/bench_cpu.py PCAP [--tree DIR] [--repeat 3] [--gc-threshold N]
        [--redact] [--packets N]
    .venv/bin/python tests/bench/bench_cpu.py --golden-copies OUT COPIES GOLDEN.pcap...

The file is read into memory first; then, timed with time.process_time(), what the worker's
dissection process does before sqlite: worker.dissection.Dissection.feed (decode, assembler,
selection, dissectors) and the rows taken as the in-thread pipeline takes them for the index
(take_values; an older tree's take_rows as tuples). `--tree` imports
`worker` from another checkout (e.g. `git worktree add /tmp/old main`); the printed digest of
every entry's JSON says whether two trees produced the same entries. `--gc-threshold` sets
gen0's threshold (gc.set_threshold(N, 50, 100)) to show what the garbage collector costs.
`--redact` gives the dissection a Redactor as the worker's (on unless --no-redact);
`--packets N` reads only the capture's first N packets (a short run under callgrind).
`--golden-copies` writes a pcap of golden captures repeated COPIES times, each copy's ports
shifted (new flows) and its timestamps after the previous copy's (Kafka, WebSocket).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import struct
import sys
import time
from pathlib import Path


def golden_copies(out: Path, copies: int, inputs: list[Path]) -> None:
    header, packets = b"", []
    for path in inputs:
        data = path.read_bytes()
        header = header or data[:24]
        pos, these = 24, []
        while pos < len(data):
            sec, usec, incl, orig = struct.unpack_from("<IIII", data, pos)
            these.append((sec * 1_000_000 + usec, data[pos + 16:pos + 16 + incl], orig))
            pos += 16 + incl
        base = packets[-1][0] + 1000 if packets else 0
        packets += [(base + t - these[0][0], frame, orig) for t, frame, orig in these]
    span = packets[-1][0] - packets[0][0] + 1000
    with open(out, "wb") as w:
        w.write(header)
        for i in range(copies):
            for t, frame, orig in packets:
                frame = bytearray(frame)        # Ethernet + IPv4 (the goldens are)
                at = 14 + (frame[14] & 0x0F) * 4
                for off in (at, at + 2):
                    port = struct.unpack_from("!H", frame, off)[0]
                    if port != 53:
                        struct.pack_into("!H", frame, off, 20000 + (port + i * 13) % 40000)
                ts = t + i * span
                w.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(frame), orig))
                w.write(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pcap", nargs="?")
    parser.add_argument("--tree", help="a checkout whose worker/ is measured (default: this one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gc-threshold", type=int)
    parser.add_argument("--redact", action="store_true")
    parser.add_argument("--packets", type=int, default=0)
    parser.add_argument("--golden-copies", nargs="+", metavar="ARG")
    args = parser.parse_args()
    if args.golden_copies:
        out, copies, *inputs = args.golden_copies
        golden_copies(Path(out), int(copies), [Path(p) for p in inputs])
        return
    if not args.pcap:
        parser.error("a pcap is needed")
    sys.path.insert(0, args.tree or str(Path(__file__).resolve().parents[2]))
    import msgspec

    from worker.dissection import Dissection
    from worker.redact import Redactor
    from worker.sources import open_file_source
    source = open_file_source(args.pcap)
    batches, number = [], 0
    while not source.finished and not 0 < args.packets <= number:
        stored = []
        want = 4096 if not args.packets else min(4096, args.packets - number)
        for ts_ns, data, wirelen in source.read_batch(want):
            stored.append(((0, number), source.linktype, ts_ns, data, wirelen))
            number += 1
        batches.append(stored)
    source.close()
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, 50, 100)

    def once() -> tuple[int, str]:
        redactor = Redactor("bench-key") if args.redact else None
        try:    # numbered as the in-thread pipeline makes them (a tree with that option)
            dissection = Dissection("bench", redactor=redactor, numbered=True)
        except TypeError:
            dissection = Dissection("bench", redactor=redactor)
        digest, rows = hashlib.sha256(), 0
        # The rows as each tree's in-thread pipeline takes them for the index: its values, or
        # (older trees) IndexRows turned into tuples.
        take = getattr(dissection, "take_values", None) or (
            lambda: [msgspec.structs.astuple(row) for row in dissection.take_rows()])
        for batch in [*batches, None]:
            if batch is None:
                dissection.close_all()
            else:
                dissection.feed(batch)
            for value in take():
                rows += 1
                digest.update(value[3])
        return rows, digest.hexdigest()[:16]

    best = float("inf")
    for _ in range(args.repeat):
        started = time.process_time()
        rows, digest = once()
        best = min(best, time.process_time() - started)
    print(f"{Path(args.pcap).name}: packets {number}, entries {rows}, digest {digest}, "
          f"cpu best of {args.repeat} {best:.3f} s ({rows / best:,.0f} entries/s)")


if __name__ == "__main__":
    main()
