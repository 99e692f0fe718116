"""Errors about a huge value say its length and how it starts, not the value: 60k target IPs
made a 1.2 MB BPF filter, and the worker's refusal echoed it whole into its answer, the hub's
/targets view and every log line on the way."""

from __future__ import annotations

import asyncio

import httpx
import respx

from hub.workers import WorkerClient, WorkerError
from worker.sources.base import BpfError
from worker.sources.bpf import compile_bpf

IPS = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(60_000)]


def host_chain(ips: list[str]) -> str:
    """A long BPF expression (what PUT /targets built before it merged addresses into networks)."""
    return " or ".join(f"host {ip}" for ip in ips)


def test_a_refused_huge_filter_is_named_by_its_length_and_start() -> None:
    expression = host_chain(IPS)
    assert len(expression) > 1_000_000
    try:
        compile_bpf(expression + " or nonsense(", 1, 262144)
    except BpfError as error:
        message = str(error)
    else:
        raise AssertionError("libpcap compiled a broken filter")
    assert len(message) < 600, len(message)
    assert f"of {len(expression) + 13} characters starting 'host 10.0.0.0 or host 10.0.0.1" in message
    short = ""
    try:
        compile_bpf("tcp port", 1, 262144)
    except BpfError as error:
        short = str(error)
    assert short.startswith("bad BPF filter 'tcp port': ")     # a short one is shown whole


@respx.mock
def test_the_hub_passes_on_a_bounded_worker_error() -> None:
    """A worker (an older one, or any) that answers with a huge detail: the hub's error for it
    keeps its first 1000 characters and says how long it was."""
    huge = "bad BPF filter " + host_chain(IPS[:5000])
    respx.get("http://w1:8897/api/v1/status").mock(return_value=httpx.Response(
        400, json={"error": "bad request", "detail": huge}))

    async def ask() -> WorkerError:
        client = WorkerClient("http://w1:8897", retries=0)
        try:
            await client.get("/status")
        except WorkerError as error:
            return error
        finally:
            await client.aclose()
        raise AssertionError("no error")
    message = str(asyncio.run(ask()))
    assert message.startswith("HTTP 400: bad BPF filter host 10.0.0.0 or")
    assert len(message) < 1100 and f"({len(huge)} characters in all)" in message
