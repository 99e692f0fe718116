"""Cross-check with tshark on the Redis golden captures: the commands (name and element
count, connection by connection, in order), the error replies and the simple-string replies.

tshark 4.0 has a RESP dissector ("resp") for RESP2 only: it does not know the RESP3 types
(map "%", push ">", null "_", double ",", boolean "#", ...), so on resp3.pcap only the client
side (commands are RESP2 arrays under RESP3 too) is compared. Quirks: `-T fields` joins the
values of all messages of a frame with commas (several commands in one segment when
pipelining) and prints bulk strings as hex (FT_BYTES).
"""

from __future__ import annotations

import subprocess
from collections import Counter, defaultdict

import pytest

from support.golden import GOLDEN, dissect_capture



def tshark_rows(pcap: str, display_filter: str, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", pcap, "-Y", display_filter, "-T", "fields"]
    for field in fields:
        argv += ["-e", field]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def tshark_commands(pcap: str) -> dict[int, list[tuple[str, int]]]:
    """Per client port, the (command word, element count) of each request, in order."""
    commands: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for port, lengths, values in tshark_rows(pcap, "resp && tcp.dstport == 6379", "tcp.srcport",
                                             "resp.array.length", "resp.bulk_string.value"):
        words = [bytes.fromhex(v).decode() for v in values.split(",")]
        for length in (int(n) for n in lengths.split(",")):
            commands[int(port)].append((words[0].upper(), length))
            words = words[length:]
    return commands


def our_commands(entries: list[dict]) -> dict[int, list[tuple[str, int]]]:
    commands: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for e in entries:
        if e["request"]:
            words = e["request"]["command"].split(" ")
            commands[e["src"]["port"]].append((words[0], e["request"]["args"] + len(words)))
    return commands


@pytest.mark.parametrize("version", [2, 3])
def test_commands_match_tshark(version: int) -> None:
    pcap = GOLDEN / "redis" / f"resp{version}.pcap"
    entries = dissect_capture(pcap)
    theirs = tshark_commands(str(pcap))
    assert sum(len(c) for c in theirs.values()) == sum(1 for e in entries if e["request"])
    assert our_commands(entries) == theirs


def test_replies_match_tshark() -> None:
    pcap = GOLDEN / "redis" / "resp2.pcap"
    entries = dissect_capture(pcap)
    rows = tshark_rows(str(pcap), "resp && tcp.srcport == 6379", "resp.error", "resp.string")
    their_errors = Counter(v for error, _ in rows if error for v in error.split(","))
    their_strings = Counter(v for _, text in rows if text for v in text.split(","))
    responses = [e["response"] for e in entries if e["response"]]
    assert Counter(r["error"] for r in responses if r["error"]) == their_errors
    assert Counter(r["value"] for r in responses if r["type"] == "simple_string") == \
        their_strings
    assert their_errors["ERR value is not an integer or out of range"] == 1
    assert their_strings["QUEUED"] == 3
