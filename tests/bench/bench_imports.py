"""What each of the worker's processes imports, and what that costs: `python -X importtime`
of the imports a process makes, run N times in fresh interpreters, each module's best time.

    .venv/bin/python tests/bench/bench_imports.py [--runs 5] [--top 25] [--repo DIR]

Processes: api (`python -m worker` up to serving: worker.__main__, then what serve() imports),
forkserver (the shards' fork server: worker.shard_server.PRELOAD), shard (what a shard imports
after its fork: worker.dissectors.registry(), made after the fork server's preload). Times
are wall microseconds of the import (compiling the module included: the project's modules
have no .pyc where PYTHONDONTWRITEBYTECODE is set). Run on demand, never part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, ROOT, table  # noqa: E402

# Each process as code a fresh interpreter runs; what comes after `#measure` is timed alone.
PROCESSES = {
    "api": "import worker.__main__, worker.broadcast, worker.dissection, worker.pipeline, "
           "worker.redact, worker.sharded, worker.store.index, worker.api.runtime, uvicorn, "
           "worker.api.app",
    "forkserver": "import worker.shard_server as s, importlib\nfor name in s.PRELOAD: importlib.import_module(name)",
    "shard": "import worker.shard_server as s, importlib\nfor name in s.PRELOAD: importlib.import_module(name)\n"
             "#measure\nimport worker.dissectors as d\nd.registry()",
}
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def one(code: str, repo: Path) -> dict[str, tuple[int, int]]:
    """module -> (self us, cumulative us) of one fresh interpreter; with #measure, only what
    is imported after it."""
    before, _, after = code.partition("#measure\n")
    program = f"{before}\nimport sys\nsys.stderr.write('#measure\\n')\n{after}" if after else code
    result = subprocess.run([PYTHON, "-X", "importtime", "-c", program], cwd=repo, text=True,
                            capture_output=True, env={**os.environ, "PYTHONPATH": str(repo)}, check=True)
    lines = result.stderr.splitlines()
    if after:
        lines = lines[lines.index("#measure") + 1:]
    times: dict[str, tuple[int, int]] = {}
    for line in lines:
        if (match := LINE.match(line)) and match.group(4) not in times:
            times[match.group(4)] = (int(match.group(1)), int(match.group(2)))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--process", choices=list(PROCESSES), action="append")
    args = parser.parse_args()
    for name in args.process or list(PROCESSES):
        best: dict[str, list[int]] = {}
        totals = []
        for _ in range(args.runs):
            times = one(PROCESSES[name], args.repo.resolve())
            totals.append(sum(own for own, _ in times.values()))
            for module, (own, cumulative) in times.items():
                kept = best.setdefault(module, [own, cumulative])
                kept[0], kept[1] = min(kept[0], own), min(kept[1], cumulative)
        rows = sorted(best.items(), key=lambda item: -item[1][0])[:args.top]
        print(f"{name}: {len(best)} modules, all imports {min(totals) / 1e3:.0f} ms (best of {args.runs}); "
              f"load {os.getloadavg()[0]:.1f}")
        print(table(["module", "self ms", "cumulative ms"],
                    [[module, own / 1e3, cumulative / 1e3] for module, (own, cumulative) in rows]))


if __name__ == "__main__":
    main()
