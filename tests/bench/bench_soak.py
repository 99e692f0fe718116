"""The soak: a worker and a hub under steady HTTP/1 + Redis + DNS traffic on lo for minutes,
memory, disk and loss sampled every second (tests/support/soak.py).

    .venv/bin/python tests/bench/bench_soak.py [--minutes 10] [--storage-limit 16MB]
        [--clients 1] [--json-out FILE]

Prints every sample as it comes, then min/median/max of each series and the totals, and the
peak of the storage dir's `du -sb` sampled every 50 ms (what --storage-limit bounds). The
suite's short version (tests/integration/test_soak_short.py) asserts the bounds; this one is
for the numbers in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table, write_json  # noqa: E402
from support.procstat import DirSampler  # noqa: E402
from support.soak import soak  # noqa: E402
from shark.units import parse_size  # noqa: E402

SERIES = ["worker_rss_mb", "hub_rss_mb", "store_bytes", "entries", "kernel_dropped", "shed_bytes", "live_lost"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--storage-limit", default="16MB")
    parser.add_argument("--clients", type=int, default=1, help="client threads per protocol")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if args.minutes <= 0 or args.clients < 1:
        parser.error("--minutes must be > 0 and --clients >= 1")
    with tempfile.TemporaryDirectory(prefix="shark-soak-") as tmp:
        sampler = DirSampler(str(Path(tmp) / "soak-store"), parse_size(args.storage_limit, "--storage-limit"))
        sampler.start()
        try:
            result = soak(args.minutes * 60, Path(tmp), args.storage_limit, args.clients,
                          on_sample=lambda s: print(s, file=sys.stderr, flush=True))
        finally:
            sampler.stop()
    rows = [[name, *(f"{v:,.1f}" for v in result.spread(name))] for name in SERIES]
    print(table(["series", "min", "median", "max"], rows))
    print(f"storage limit {result.storage_limit:,} bytes; exchanges made {result.requests}; client errors "
          f"{result.errors}; entries streamed to the hub's live client {result.streamed:,}")
    print(f"storage dir (du -sb every 50 ms): peak {sampler.largest:,} bytes "
          f"({sampler.largest / result.storage_limit:.1%} of the limit); {sampler.above} of "
          f"{sampler.samples} samples above the limit")
    final = result.final_status
    print(f"final: index {final['index']}, store evicted_for_other "
          f"{final['store'].get('evicted_for_other')}, dissection shed_bytes "
          f"{final['dissection'].get('shed_bytes')}, unindexed_evicted "
          f"{final['dissection'].get('unindexed_evicted')}")
    write_json(args.json_out, {"machine": machine(), "samples": [dataclasses.asdict(s) for s in result.samples],
                               "requests": result.requests, "errors": result.errors, "streamed": result.streamed,
                               "storage_limit": result.storage_limit,
                               "dir_peak_bytes": sampler.largest, "dir_samples": sampler.samples,
                               "dir_samples_above_limit": sampler.above})


if __name__ == "__main__":
    main()
