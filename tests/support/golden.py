"""Golden files: real captures kept in tests/golden/, dissected through the worker's own path.

    entries = dissect_capture(GOLDEN / "redis" / "pipeline.pcap")
    assert_golden(GOLDEN / "redis" / "pipeline.json", entries)

`UPDATE_GOLDEN=1 ./dev test tests/...` rewrites the .json files from what the code produces
now (read the diff before committing it). Captures themselves are made by the scripts in
tests/golden/ (record() below runs tcpdump around a real client talking to a real server).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.dissection import Dissection
from worker.sources import open_file_source

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def dissect_capture(path: Path, node: str = "golden") -> list[dict[str, Any]]:
    """Entries (as JSON objects, in the order they were made) for a pcap/pcapng file, through
    the path live packets take: decode, assembler, dissector selection, Entry."""
    source = open_file_source(path)
    dissection = Dissection(node)
    number = 0
    try:
        while not source.finished:
            batch = source.read_batch(4096)
            stored = []
            for ts_ns, data, wirelen in batch:
                stored.append(((0, number), source.linktype, ts_ns, data, wirelen))
                number += 1
            dissection.feed(stored)
    finally:
        source.close()
    dissection.close_all()
    return [json.loads(row.entry_json) for row in dissection.take_rows()]


def assert_golden(path: Path, entries: list[dict[str, Any]]) -> None:
    text = json.dumps(entries, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        path.write_text(text)
        if os.environ.get("UPDATE_GOLDEN") != "1":
            raise AssertionError(f"{path} did not exist; written now: review and commit it")
        return
    expected = json.loads(path.read_text())
    assert entries == expected, f"entries differ from {path} (UPDATE_GOLDEN=1 to rewrite)"


@dataclass(frozen=True)
class Scenario:
    """One golden capture's traffic: a real client against a real server, replayable. The
    capture scripts record it into `golden`; the live protocol tests run it again under a live
    worker (tests/integration/test_protocols_live.py)."""
    golden: Path                     # the .pcap it made; its entries are in the .json beside it
    bpf: str                         # only this traffic (the server's port)
    traffic: Callable[[], None]


Scenarios = Callable[[], AbstractContextManager[list[Scenario]]]


@contextmanager
def fixed(*scenarios: Scenario) -> Iterator[list[Scenario]]:
    """Scenarios whose server runs on the machine already (nothing to start or stop)."""
    yield list(scenarios)


def record_all(scenarios: Scenarios) -> None:
    """What a capture script's main does: record each of its scenarios, servers started first."""
    with scenarios() as each:
        for scenario in each:
            record(scenario.golden, scenario.bpf, scenario.traffic)


def record(path: Path, bpf: str, action: Callable[[], None], iface: str = "lo",
           netns: str | None = None) -> None:
    """Capture what `action` does (a real client against a real server) into `path`; on
    `iface` of the named network namespace when `netns` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = ["ip", "netns", "exec", netns] if netns else []
    tcpdump = subprocess.Popen([*prefix, "tcpdump", "-i", iface, "-U", "--immediate-mode", "-s", "0",
                                "-w", str(path), bpf], stderr=subprocess.PIPE, text=True)
    assert tcpdump.stderr is not None
    line = tcpdump.stderr.readline()   # "listening on lo ..." once capture has started
    if "listening" not in line:
        tcpdump.kill()
        raise RuntimeError(f"tcpdump did not start: {line}")
    try:
        action()
        sizes: list[int] = []
        while len(sizes) < 4 or sizes[-1] != sizes[-4]:   # until the file stops growing
            time.sleep(0.1)
            sizes.append(path.stat().st_size)
    finally:
        tcpdump.send_signal(signal.SIGINT)
        tcpdump.wait(10)
        tcpdump.stderr.close()
