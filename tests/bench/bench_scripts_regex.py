"""KFL regexes inside scripts: hub/scripts/re2.js against JavaScript's own RegExp (which kfl.js
used before it), in one quickjs context (not in the suite).

    .venv/bin/python tests/bench/bench_scripts_regex.py [--matches 20000] [--repeat 5]

Per pattern: the cost of one match over a 30-character path with each engine (best of
--repeat), then "(a|aa)+$" on runs of a's followed by '!', where RegExp backtracks
exponentially and re2.js stays linear. RegExp runs are skipped past --max-backtrack-ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

import quickjs  # noqa: E402

from hub.scripts.runtime import KFL_JS  # noqa: E402

PATH = "/api/v2/orders/12345/items?x=1"
PATTERNS = [   # (RE2 pattern, the same for RegExp)
    ("^/api/v[0-9]+/orders/[0-9]+", "^/api/v[0-9]+/orders/[0-9]+"),
    ("/api/.*/items.*", "^(?:/api/.*/items.*)$"),          # == r"...": a full match
    ("(?i)ITEMS", "ITEMS"),
    ("items", "items"),
    ("[0-9]{5}", "[0-9]{5}"),
    (r"\.(json|xml)$", r"\.(json|xml)$"),
]
TIMER = """(function (which, pattern, text, n) {
  var test;
  if (which === "re2") { var m = __re2.compile(pattern).search; test = function (t) { return m.test(t); }; }
  else { var r = new RegExp(pattern, pattern === "ITEMS" ? "i" : ""); test = function (t) { return r.test(t); }; }
  var hits = 0, t0 = Date.now();
  for (var i = 0; i < n; i++) if (test(text)) hits++;
  return (Date.now() - t0) / n;
})"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--matches", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-backtrack-ms", type=float, default=2000)
    args = parser.parse_args()
    context = quickjs.Context()
    context.eval(KFL_JS)
    timer = context.eval(TIMER)
    print(f"per match over {PATH!r} (us, best of {args.repeat}):")
    print(f"  {'pattern':36} {'RegExp':>8} {'re2.js':>8}")
    for re2_pattern, js_pattern in PATTERNS:
        native = min(timer("js", js_pattern, PATH, args.matches) for _ in range(args.repeat)) * 1000
        linear = min(timer("re2", re2_pattern, PATH, args.matches) for _ in range(args.repeat)) * 1000
        print(f"  {re2_pattern:36} {native:8.2f} {linear:8.2f}")
    print("(a|aa)+$ on n a's and '!' (ms, one match):")
    skip_native = False
    for n in (20, 24, 28, 32, 1000, 100_000):
        text = "a" * n + "!"
        native = "skipped"
        if not skip_native:
            started = time.perf_counter()
            timer("js", "(a|aa)+$", text, 1)
            took = (time.perf_counter() - started) * 1000
            native = f"{took:.1f}"
            skip_native = took > args.max_backtrack_ms / 3
        started = time.perf_counter()
        timer("re2", "(a|aa)+$", text, 1)
        print(f"  n={n:<7} RegExp {native:>8}   re2.js {(time.perf_counter() - started) * 1000:.2f}")


if __name__ == "__main__":
    main()
