"""Cross-check with tshark on the DNS golden capture: the same queries, ids, names, types,
rcodes and answer counts; tshark's unanswered queries are ours too."""

from __future__ import annotations

import subprocess


from support.golden import GOLDEN, dissect_capture

PCAP = GOLDEN / "dns" / "basic.pcap"



def tshark_rows(port: int) -> list[list[str]]:
    argv = ["tshark", "-r", str(PCAP), "-d", f"udp.port=={port},dns", "-d",
            f"tcp.port=={port},dns", "-Y", "dns", "-T", "fields", "-e", "dns.id", "-e",
            "dns.flags.response", "-e", "dns.qry.name", "-e", "dns.qry.type", "-e",
            "dns.flags.rcode", "-e", "dns.count.answers", "-e", "dns.flags.truncated"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def test_dns_matches_tshark() -> None:
    entries = dissect_capture(PCAP)
    port = entries[0]["dst"]["port"]
    rows = tshark_rows(port)
    queries = {int(r[0], 16): r for r in rows if r[1] == "0"}
    responses = {int(r[0], 16): r for r in rows if r[1] == "1"}
    assert len(queries) == len(entries) == 9
    for entry in entries:
        request, response = entry["request"], entry["response"]
        query = queries[request["id"]]
        assert query[2] == request["qname"]
        assert int(query[3]) == {"A": 1, "AAAA": 28, "MX": 15, "TXT": 16}[request["qtype"]]
        if response is None:
            assert request["id"] not in responses
            continue
        answer = responses[request["id"]]
        assert int(answer[4]) == entry["status"]
        assert int(answer[5]) == response["answer_count"]
        assert (answer[6] in ("1", "True")) == response["truncated"]
    assert len(responses) == sum(e["response"] is not None for e in entries)
