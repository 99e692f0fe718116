"""KFL evaluation rate (entries/s), on realistic entries (not in the suite).

    .venv/bin/python tests/bench/bench_kfl.py [--entries 100000] [--repeat 5]

Entries: every golden entry in tests/golden/*/*.json (real captures, all protocols present)
plus tests/unit/test_kfl.py's samples, cycled to --entries with varied ids, statuses, paths and
namespaces. For each query: the compile time, the rate of the compiled predicate over entry
dicts, and the rate of the worker's row predicate (worker.filters) over index rows, which
decodes each row's JSON first (rows of other protocols skipped undecoded when the query names
its protocols). Decoding alone is the baseline. Best of --repeat.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import msgspec  # noqa: E402

from shark import kfl  # noqa: E402
from worker.filters import compile_query, row_predicate  # noqa: E402
from worker.store.index import IndexRow  # noqa: E402

QUERIES = [
    "http",
    "http and response.status == 500",
    'redis and request.command == "GET"',
    'request.path.startsWith("/api")',
    'request.headers["content-type"].contains("json")',
    'dst.namespace != "kube-system" and elapsed_ms > 100',
    'request.method in ["POST", "PUT"] and status >= 500',
    'request.path == r"/api/v[0-9]+/.*"',
    '(http or http2) and not request.path.matches(r"^/(health|metrics)") and status >= 400',
]


def realistic(count: int, rng: random.Random) -> list[dict]:
    base: list[dict] = []
    for path in sorted((ROOT / "tests" / "golden").glob("*/*.json")):
        try:
            loaded = json.loads(path.read_text())
        except ValueError:
            continue
        base.extend(e for e in loaded if isinstance(e, dict) and "protocol" in e)
    from unit.test_kfl import SAMPLES  # noqa: PLC0415
    base.extend(SAMPLES.values())
    namespaces = ["shop", "kube-system", "payments", "default"]
    paths = ["/api/v1/orders", "/api/v2/users/42", "/health", "/metrics", "/static/app.js"]
    out = []
    for n in range(count):
        entry = json.loads(json.dumps(base[n % len(base)]))
        entry["id"] = f"node-a:{n}"
        entry["dst"]["namespace"] = rng.choice(namespaces)
        if entry.get("protocol") == "http" and isinstance(entry.get("request"), dict):
            entry["request"]["path"] = rng.choice(paths)
            status = rng.choice([200, 200, 200, 201, 404, 500])
            entry["status"] = status
            if isinstance(entry.get("response"), dict):
                entry["response"]["status"] = status
        entry["elapsed_ms"] = round(rng.expovariate(1 / 80), 3)
        out.append(entry)
    return out


def rows_of(entries: list[dict]) -> list[IndexRow]:
    encode = msgspec.json.encode
    return [IndexRow(seq=n, ts=e.get("ts", 0.0), protocol=e["protocol"], entry_json=encode(e),
                     first_seg=1, first_off=24, last_seg=1, last_off=24, transport="tcp",
                     client_ip="10.0.0.1", client_port=1, server_ip="10.0.0.2", server_port=2,
                     client_offset=0, server_offset=0, client_seq=None, server_seq=None)
            for n, e in enumerate(entries)]


def best(repeat: int, run) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(3)
    entries = realistic(args.entries, rng)
    rows = rows_of(entries)
    protocols = sorted({e["protocol"] for e in entries})
    n = len(entries)
    print(f"{n} entries, protocols: {', '.join(protocols)}; "
          f"mean entry JSON {sum(len(r.entry_json) for r in rows) / n:.0f} bytes")
    decode = msgspec.json.Decoder().decode

    def decode_all() -> None:
        for row in rows:
            decode(row.entry_json)
    decode_s = best(args.repeat, decode_all)
    print(f"decode only: {n / decode_s:,.0f} entries/s\n")
    print(f"{'query':<90} {'compile':>9} {'matches':>8} {'dicts/s':>12} {'rows/s':>12}")
    for text in QUERIES:
        started = time.perf_counter()
        for _ in range(100):
            kfl.compile(text)
        compile_ms = (time.perf_counter() - started) * 10
        query = kfl.compile(text)
        matched = sum(1 for e in entries if query(e))
        dict_s = best(args.repeat, lambda: [query(e) for e in entries])  # noqa: B023
        predicate = row_predicate(compile_query(text))
        assert sum(1 for r in rows if predicate(r)) == matched
        row_s = best(args.repeat, lambda: [predicate(r) for r in rows])  # noqa: B023
        print(f"{text:<90} {compile_ms:>7.2f}ms {matched:>8} {n / dict_s:>12,.0f} {n / row_s:>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
