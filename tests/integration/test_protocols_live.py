"""Every protocol live: the golden captures' real clients run again against the real servers
(PostgreSQL, MariaDB, Redis, RabbitMQ and Mosquitto of this machine; hypercorn, grpcio,
websockets, dnslib and the test HTTP server started here), with a live worker capturing lo.

The goldens pin what the dissectors make of one recorded session; these pin that the servers
as installed today still speak what the dissectors understand: a server upgrade that changes
the wire shows here as entries that differ from the golden's in kind, summary or status. What
varies from run to run (ports, ids, timings, what the server chooses) is not compared. The
servers are shared with whatever else runs on this machine: run it alone (as CI does).
"""

from __future__ import annotations

import importlib
import json
import re
from collections import Counter
from typing import Any

import pytest

from support.golden import Scenario, Scenarios
from support.processes import Worker, wait_for

pytestmark = pytest.mark.root

CAPTURES = ["redis", "postgres", "mysql", "amqp", "mqtt", "http1", "http2", "websocket", "dns"]

# what differs between two runs of the same client: the run's unique names and random ids
VARYING = [
    (re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"), "UUID"),   # AMQP's per-run names
    (re.compile(r"\b[0-9a-f]{8,32}\b"), "HEX"),                         # MQTT client ids, topics
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),                # an h2 authority
    (re.compile(r"\b\d{4,}\b"), "N"),                                    # pids, ids, sizes of names
]
# what the server chooses: the order Redis's SCAN walks its keys in (so the cursor, and the first
# key of the DEL that cleans up after it), MariaDB's prepared statement ids
SERVER_CHOSEN = [
    (re.compile(r"^SCAN \d+"), "SCAN CURSOR"),
    (re.compile(r"^DEL \S+"), "DEL KEY"),
    (re.compile(r"^(COM_STMT_\w+) \d+"), r"\1 ID"),
]


def scenarios_of(name: str) -> Scenarios:
    return importlib.import_module(f"golden.capture_{name}").scenarios


def normal(text: str) -> str:
    for pattern, replacement in VARYING + SERVER_CHOSEN:
        text = pattern.sub(replacement, text)
    return text


def shape(entry: dict[str, Any]) -> tuple[str, str, str, bool]:
    """What the client did and what the server answered, without what varies per run."""
    return entry["protocol"], normal(entry["summary"]), normal(json.dumps(entry["status"])), entry["complete"]


def live_entries(worker: Worker, want: int) -> list[dict[str, Any]]:
    """The worker's entries once it has indexed `want` of them and no more come."""
    seen: list[int] = []

    def settled() -> list[dict[str, Any]] | None:
        entries = worker.entries(limit=10_000)
        seen.append(len(entries))
        return entries if len(entries) >= want and seen[-3:] == [len(entries)] * 3 else None
    return wait_for(settled, timeout=60, interval=0.3, what=f"{want} entries, then no more")


@pytest.mark.parametrize("capture", CAPTURES)
def test_live_capture_gives_the_golden_entries(capture: str, start_worker) -> None:
    with scenarios_of(capture)() as scenarios:
        for scenario in scenarios:
            check(scenario, start_worker)


def check(scenario: Scenario, start_worker) -> None:  # noqa: ANN001 (the fixture's function)
    golden = json.loads(scenario.golden.with_suffix(".json").read_text())
    worker = start_worker("--iface", "lo", "--bpf", scenario.bpf, node=scenario.golden.stem)
    scenario.traffic()
    live = live_entries(worker, len(golden))
    expected, got = Counter(map(shape, golden)), Counter(map(shape, live))
    assert got == expected, (f"{scenario.golden.name}: live entries differ from the golden's; "
                             f"only live: {got - expected}; only golden: {expected - got}")
    worker.stop()
