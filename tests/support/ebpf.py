"""What the eBPF TLS tests share: the node's own diagnosis (asked in a child, so that bcc and
LLVM stay out of the test process), certificates, and a probe loaded on chosen files only,
whose raw events a test reads per process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from support.processes import ROOT, Proc, Worker, wait_for

PROBE_SCRIPT = """
import json, sys, time
from worker.sources.ebpf.events import parse_event
from worker.sources.ebpf.executables import inspect_executable
from worker.sources.ebpf.loader import BccProgram
from worker.sources.ebpf.program import KIND_READ, KIND_WRITE
records = []
program = BccProgram(records.append, 16, 2048)
probes = 0
for path in sys.argv[1:]:
    code = inspect_executable(path)
    if code is None:
        raise SystemExit(f"{path}: no TLS code to hook")
    if code.openssl:
        probes += program.attach_library(path)
    if code.go is not None:
        probes += program.attach_go(path, code.go)
print("hooked", probes, flush=True)
for line in sys.stdin:
    program.consume()
    events = [parse_event(raw) for raw in records]
    records.clear()
    print(json.dumps({"counters": program.counters(), "events": [
        {"tgid": e.tgid, "kind": e.kind, "fd": e.fd, "role": e.role, "lport": e.lport,
         "rport": e.rport, "offset": e.offset, "data": e.data.decode("latin-1")}
        for e in events if e.kind in (KIND_READ, KIND_WRITE)]}), flush=True)
program.close()
"""


def ebpf_problem() -> str | None:
    """What this machine lacks for eBPF TLS capture (the worker's own diagnosis), or None."""
    script = ("from worker.sources.ebpf.loader import import_bcc\n"
              "from worker.sources.ebpf.diagnosis import diagnose, host_facts\n"
              "try:\n    import_bcc(); error = None\n"
              "except Exception as e:\n    error = str(e).splitlines()[0]\n"
              "print(diagnose(host_facts(error)) or '')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"the eBPF diagnosis itself failed:\n{done.stderr}")
    return done.stdout.strip() or None


def make_certs(where: Path) -> tuple[str, str]:
    """A self-signed certificate for localhost and its key: (cert.pem, key.pem)."""
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


def tls_entries(worker: Worker, port: int, count: int, q: str = "",
                timeout: float = 30) -> list[dict]:
    """Entries from eBPF cleartext to `port` (waits until there are `count`), oldest first."""
    query = f"dst.port == {port}" + (f" and ({q})" if q else "")

    def found() -> list[dict] | None:
        entries = [e for e in worker.entries(q=query, limit=1000) if e["tls"]]
        return entries if len(entries) >= count else None
    try:
        entries = wait_for(found, timeout, f"{count} tls entries to port {port}")
    except AssertionError as timeout_error:
        raise AssertionError(f"{timeout_error}\n{what_the_worker_saw(worker, port, query)}") from None
    return sorted(entries, key=lambda e: e["ts"])


def what_the_worker_saw(worker: Worker, port: int, query: str) -> str:
    """For a timeout's message: the entries the query and the port find, the eBPF counters and
    the worker's last lines, so a failure in CI (where nothing else is kept) says where the
    entries stopped."""
    matching = worker.entries(q=query, limit=1000)
    to_port = worker.entries(q=f"dst.port == {port}", limit=1000)
    kinds = Counter((e["protocol"], e["tls"], e["complete"], e["src"]["port"]) for e in to_port)
    status = worker.status()
    ebpf = {key: value for key, value in status.get("ebpf", {}).items() if key != "libraries"}
    return "\n".join([
        f"the query finds {len(matching)} ({sum(e['tls'] for e in matching)} tls): "
        f"{sorted(e.get('request', {}).get('path', '?') for e in matching)[:60]}",
        f"to port {port}: {len(to_port)} entries by (protocol, tls, complete, client port): "
        f"{dict(kinds)}",
        "incomplete ones: " + "; ".join(json.dumps(e)[:400] for e in to_port
                                         if not e["complete"])[:4000],
        f"ebpf: {ebpf}",
        f"dissection: {status.get('dissection')}",
        "the worker's last lines:", *list(worker.lines)[-40:]])


class ProbedFiles:
    """The bcc program hooked on `files` only, in a child process: events() returns the
    read/write events since the last call (data as latin-1 text) and the counters."""

    def __init__(self, *files: str | Path) -> None:
        self._proc = Proc([sys.executable, "-c", PROBE_SCRIPT, *map(str, files)], stdin=True)
        self._proc.wait_line(r"^hooked \d+", timeout=180)
        self._answers = 0

    def events(self) -> tuple[list[dict], dict[str, int]]:
        self._proc.send("dump\n")
        wanted = self._answers + 1

        def answer() -> str | None:
            answers = [line for line in list(self._proc.lines) if line.startswith("{")]
            return answers[wanted - 1] if len(answers) >= wanted else None
        line = wait_for(answer, 30, "the probe's events")
        self._answers = wanted
        report = json.loads(line)
        return report["events"], report["counters"]

    def close(self) -> None:
        self._proc.stop()
