"""The service map (GET /api/v1/servicemap): who talks to whom, from the merged entries.

A node is an endpoint: its `name` when the resolver set one, else its IP (the destination
with `:port`, since a server is known by its port; a client's ephemeral port is left out).
An edge is src -> dst with the number of entries, their protocols, errors, error rate and the
p50/p99 of `elapsed_ms` over the entries that have one.

An entry is an error when:
- http, http2, websocket: `status >= 500`;
- grpc: `status` (grpc-status) is set and not 0;
- postgres, mysql, redis: `status` is set and not 0 (an error reply: ErrorResponse, ERR, `-ERR`);
- any protocol: `response.error` is set (a Redis error reply, a DNS rcode other than 0, a gRPC
  error, a Kafka/AMQP/... error the dissector reported).
- any protocol: `tcp.failure` is set (a refused, reset or timed-out connection;
  worker/connections.py).
An entry without a response (`elapsed_ms` null) is not an error; edges count it in
`unanswered`. Edges also count failed connections by kind in `failed` ({refused, reset,
timeout, abandoned}).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

HTTP_LIKE = frozenset({"http", "http2", "websocket"})
# Protocols whose status is 0 for success and non-zero for an error (worker.dissectors.base).
ZERO_IS_OK = frozenset({"grpc", "postgres", "mysql", "redis"})


def is_error(entry: dict[str, Any]) -> bool:
    protocol = entry.get("protocol")
    status = entry.get("status")
    if protocol in HTTP_LIKE and isinstance(status, int) and status >= 500:
        return True
    if protocol in ZERO_IS_OK and isinstance(status, int) and status != 0:
        return True
    if failure(entry) is not None:
        return True
    response = entry.get("response")
    return isinstance(response, dict) and bool(response.get("error"))


def failure(entry: dict[str, Any]) -> str | None:
    """refused, reset, timeout or abandoned when the entry's TCP connection failed."""
    for transport in ("tcp", "udp"):
        facts = entry.get(transport)
        kind = facts.get("failure") if isinstance(facts, dict) else None
        if kind in FAILURES:
            return kind
    return None


FAILURES = ("refused", "reset", "timeout", "abandoned")


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted `values` (None when empty)."""
    if not values:
        return None
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


def endpoint_id(endpoint: dict[str, Any], server: bool) -> str:
    name = endpoint.get("name")
    if name:
        namespace = endpoint.get("namespace")
        return f"{namespace}/{name}" if namespace else str(name)
    address = str(endpoint.get("ip") or "?")
    if server and endpoint.get("port") is not None:
        host = f"[{address}]" if ":" in address else address
        return f"{host}:{endpoint['port']}"
    return address


class Builder:
    """The service map made one entry at a time: the hub folds each entry in as the workers'
    answers stream by and holds only nodes, edges and one latency per entry (it held every
    entry decoded: one limit=100000 request took the hub to 886 MB, over its 512Mi limit)."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[tuple[str, str], dict[str, Any]] = {}
        self.latencies: dict[tuple[str, str], list[float]] = {}
        self.entries = 0

    def add(self, entry: dict[str, Any]) -> None:
        nodes, edges, latencies = self.nodes, self.edges, self.latencies
        self.entries += 1
        ids = []
        for key, server in (("src", False), ("dst", True)):
            endpoint = entry.get(key) if isinstance(entry.get(key), dict) else {}
            node_id = endpoint_id(endpoint, server)
            ids.append(node_id)
            if node_id not in nodes:
                nodes[node_id] = {"id": node_id, "name": endpoint.get("name") or node_id,
                                  "namespace": endpoint.get("namespace") or "",
                                  "kind": endpoint.get("kind") or ""}
        key = (ids[0], ids[1])
        edge = edges.get(key)
        if edge is None:
            edge = edges[key] = {"source": ids[0], "target": ids[1], "protocols": [], "count": 0,
                                 "errors": 0, "unanswered": 0,
                                 "failed": dict.fromkeys(FAILURES, 0)}
            latencies[key] = []
        edge["count"] += 1
        protocol = entry.get("protocol")
        if protocol and protocol not in edge["protocols"]:
            edge["protocols"].append(protocol)
        if is_error(entry):
            edge["errors"] += 1
        kind = failure(entry)
        if kind is not None:
            edge["failed"][kind] += 1
        elapsed = entry.get("elapsed_ms")
        if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool):
            latencies[key].append(float(elapsed))
        else:
            edge["unanswered"] += 1

    def result(self) -> dict[str, Any]:
        out_edges = []
        for key, edge in self.edges.items():
            values = sorted(self.latencies[key])
            edge["protocols"].sort()
            edge["protocol"] = edge["protocols"][0] if len(edge["protocols"]) == 1 else "mixed"
            edge["error_rate"] = round(edge["errors"] / edge["count"], 4)
            edge["p50_ms"] = percentile(values, 50)
            edge["p99_ms"] = percentile(values, 99)
            out_edges.append(edge)
        out_edges.sort(key=lambda e: (-e["count"], e["source"], e["target"]))
        return {"nodes": sorted(self.nodes.values(), key=lambda n: n["id"]), "edges": out_edges}


def build(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    builder = Builder()
    for entry in entries:
        builder.add(entry)
    return builder.result()
