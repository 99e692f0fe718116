"""Cross-check with tshark on the Kafka golden captures: request headers (api key, version,
correlation id, client id) per connection, topics of requests and responses, and the first
error code of each response.

The broker listens on a random port, so tshark is told `-d tcp.port==PORT,kafka`. tshark 4.0
quirks: it decodes the flexible versions of flexible.pcap only partly (Metadata v12 topic
names come out as "[ Null ]", Produce v9 / Fetch v12 / Metadata v12 responses are not
decoded), so there only the headers are compared; `-T fields` joins repeated fields (topics,
partition errors) with commas; a response's fields have no kafka.api_version.
"""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from support.golden import GOLDEN, dissect_capture



def tshark_rows(pcap: str, port: int, display_filter: str, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", pcap, "-d", f"tcp.port=={port},kafka", "-Y", display_filter,
            "-T", "fields"]
    for field in fields:
        argv += ["-e", field]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    # One Kafka message per frame in these captures (no field of the headers is joined).
    assert all("," not in row[1] for row in rows)
    return rows


def load(profile: str) -> tuple[str, list[dict], int]:
    pcap = GOLDEN / "kafka" / f"{profile}.pcap"
    entries = dissect_capture(pcap)
    return str(pcap), entries, entries[0]["dst"]["port"]


@pytest.mark.parametrize("profile", ["legacy", "flexible"])
def test_request_headers_match_tshark(profile: str) -> None:
    pcap, entries, port = load(profile)
    rows = tshark_rows(pcap, port, "kafka.api_version", "tcp.srcport", "kafka.api_key",
                       "kafka.api_version", "kafka.correlation_id", "kafka.client_id")
    theirs = Counter((int(p), int(k), int(v), int(c), cid) for p, k, v, c, cid in rows)
    ours = Counter((e["src"]["port"], e["request"]["api_key"], e["request"]["api_version"],
                    e["request"]["correlation_id"], e["request"]["client_id"])
                   for e in entries)
    assert len(rows) == len(entries) == 28
    assert ours == theirs


@pytest.mark.parametrize("profile", ["legacy", "flexible"])
def test_responses_pair_like_tshark(profile: str) -> None:
    pcap, entries, port = load(profile)
    rows = tshark_rows(pcap, port, "kafka && !kafka.api_version", "tcp.dstport",
                       "kafka.correlation_id")
    theirs = Counter((int(p), int(c)) for p, c in rows)
    ours = Counter((e["src"]["port"], e["response"]["correlation_id"])
                   for e in entries if e["response"] is not None)
    assert ours == theirs
    assert sum(1 for e in entries if e["response"] is None) == 1    # the acks=0 Produce


def test_topics_and_errors_match_tshark() -> None:
    pcap, entries, port = load("legacy")
    by_key = {(e["src"]["port"], e["request"]["correlation_id"]): e for e in entries}
    requests = tshark_rows(pcap, port, "kafka.api_version", "tcp.srcport",
                           "kafka.correlation_id", "kafka.topic_name")
    for p, c, topics in requests:
        ours = by_key[(int(p), int(c))]["request"]["topics"] or []
        assert set(ours) == set(filter(None, topics.split(","))), (p, c)
    responses = tshark_rows(pcap, port, "kafka && !kafka.api_version", "tcp.dstport",
                            "kafka.correlation_id", "kafka.topic_name", "kafka.error")
    checked = Counter()
    for p, c, topics, errors in responses:
        entry = by_key[(int(p), int(c))]
        codes = [int(x) for x in errors.split(",") if x]
        if not codes:
            continue                # responses without an error field (ListOffsets v0 ...)
        first = next((x for x in codes if x), 0)
        assert entry["status"] == first, (p, c, codes)
        if entry["response"].get("topics") is not None:
            assert set(entry["response"]["topics"]) == set(filter(None, topics.split(",")))
        checked[entry["request"]["api"]] += 1
    assert checked["Produce"] == 4 and checked["Fetch"] == 2 and checked["ApiVersions"] == 12
    assert checked["Metadata"] >= 5
