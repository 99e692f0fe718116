"""How many entries per second a worker's live /stream carries to one client, and what it loses.

    .venv/bin/python tests/bench/bench_live.py --pcap FILE [--clients 1] [--hub] [--json-out FILE]

The worker replays FILE (`--pcap`) as fast as it dissects; each client (curl) subscribes to
/stream as soon as the worker serves, without Last-Event-ID, so everything indexed after its
`hello` comes live. Per client: entries received, the `lost` the worker reported, and the
entries the index holds after the hello's head (what a lossless stream delivers). The rate is
the dissection's: what the stream had to carry. With --hub the clients read a hub's /stream
(`python -m hub --worker ...`) instead: the hub's hello does not name the worker's head, so a
client is counted from its first entry on (its event ids carry the worker's seq). Captures of busy servers: bench_protocols.py
makes them (e.g. its redis capture: 200k commands).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, Child, Worker, machine, table, write_json  # noqa: E402


class Reader:
    """One /stream client: curl writing the raw stream to a file (a client in C, so the
    worker is what is measured; a Python reader per thread falls behind first), read after."""

    def __init__(self, url: str, out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(["curl", "-sN", "-o", str(out), url + "/stream"])

    def stop(self) -> dict[str, int | None]:
        self.process.terminate()
        self.process.wait(10)
        head, entries, lost, seqs = None, 0, 0, []
        for event in self.out.read_bytes().replace(b"\r\n", b"\n").split(b"\n\n"):
            if b"event: entry\n" in event:
                entries += 1
                if event.startswith(b"id: "):     # the worker's SEQ, or the hub's NODE@STORE:SEQ
                    seqs.append(int(event[4:event.index(b"\n")].rpartition(b":")[2]))
            elif b"event: hello\n" in event:
                head = json.loads(event.split(b"data: ", 1)[1])["head"]
            elif b"event: lost\n" in event:
                lost += json.loads(event.split(b"data: ", 1)[1])["lost"]
        if head is None and seqs:
            head = min(seqs) - 1
        return {"head": head, "entries": entries, "lost": lost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pcap", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--hub", action="store_true", help="read a hub's /stream in front of the worker")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if not args.pcap.is_file():
        parser.error(f"--pcap: {args.pcap} is not a file")
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    worker = Worker(["--pcap", str(args.pcap), "--storage-limit", "4GB"], work / "store", work, "worker")
    hub: Child | None = None
    try:
        url = worker.url
        if args.hub:
            hub = Child([PYTHON, "-m", "hub", "--worker", worker.url.removesuffix("/api/v1"),
                         "--listen", "127.0.0.1:0"], work, "hub")
            url = hub.wait_stderr(r"hub serving on (http://[^\s]+)").group(1) + "/api/v1"
        readers = [Reader(url, work / f"client-{n}.sse") for n in range(args.clients)]
        started = time.monotonic()
        last, same, done_at = -1, 0, started
        while same < 3:                       # caught up, and the count held for 3 polls
            time.sleep(0.5)
            status = worker.status()
            done = all(s["finished"] for s in status["capture"]["sources"]) and status["dissection"]["caught_up"]
            entries = status["index"]["entries"]
            if done and entries == last:
                same += 1
            else:
                same, done_at = 0, time.monotonic()
            last = entries
        time.sleep(1.0)                       # the last batch on its way
        rate = last / (done_at - started)
        rows, results = [], []
        for n, reader in enumerate(readers):
            got = reader.stop()
            expected = last - (got["head"] or 0)
            missing = expected - got["entries"]
            results.append({"client": n, **got, "expected": expected, "missing": missing})
            rows.append([n, got["entries"], expected, got["lost"], missing])
        print(f"{last:,} entries indexed at {rate:,.0f}/s (the rate the stream had to carry)")
        print(table(["client", "received", "expected", "lost (reported)", "missing"], rows))
        write_json(args.json_out, {"machine": machine(), "pcap": str(args.pcap), "entries_per_s": rate,
                                   "results": results})
    finally:
        if hub is not None:
            hub.stop()
        worker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
