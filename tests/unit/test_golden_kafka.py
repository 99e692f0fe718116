from __future__ import annotations

import pytest

from support.golden import GOLDEN, assert_golden, dissect_capture


@pytest.mark.parametrize("profile, produce, fetch, metadata", [
    ("legacy", 8, 11, 8), ("flexible", 9, 12, 12)])
def test_kafka_golden(profile: str, produce: int, fetch: int, metadata: int) -> None:
    entries = dissect_capture(GOLDEN / "kafka" / f"{profile}.pcap")
    assert entries and all(e["protocol"] == "kafka" and e["complete"] for e in entries)
    summaries = [e["summary"] for e in entries]
    assert summaries.count("Produce orders") == 4
    assert summaries.count("Produce payments") == 1
    assert summaries.count("Fetch orders") == 2
    assert summaries.count("ListOffsets orders") == 1
    clients = {e["request"]["client_id"] for e in entries}
    assert clients == {"shark-producer", "shark-acks0", "shark-consumer", "shark-admin"}

    produces = [e for e in entries if e["request"]["api"] == "Produce"]
    assert {e["request"]["api_version"] for e in produces} == {produce}
    acks0 = [e for e in produces if e["request"]["acks"] == 0]
    assert len(acks0) == 1 and acks0[0]["response"] is None
    assert acks0[0]["notes"] == ["acks=0: no response expected"]
    assert all(e["status"] == 0 for e in produces if e["request"]["acks"] == 1)

    fetches = [e for e in entries if e["request"]["api"] == "Fetch"]
    assert {e["request"]["api_version"] for e in fetches} == {fetch}
    assert [e["status"] for e in fetches] == [1, 0]
    assert fetches[0]["response"]["error"] == "OFFSET_OUT_OF_RANGE"

    versions = [e for e in entries if e["request"]["api"] == "ApiVersions"]
    assert [e["status"] for e in versions].count(35) == 4      # the clients' v4 downgraded
    metadata_entries = [e for e in entries if e["request"]["api"] == "Metadata"]
    assert {e["request"]["api_version"] for e in metadata_entries} == {metadata}
    assert any(e["request"]["topics"] is None for e in metadata_entries)   # all topics
    assert ["orders", "payments"] in [e["response"]["topics"] for e in metadata_entries]
    for e in entries:
        if e["response"] is not None:
            assert e["response"]["correlation_id"] == e["request"]["correlation_id"]
    assert_golden(GOLDEN / "kafka" / f"{profile}.json", entries)
