"""DNS golden capture: dig against dnslib's DNSServer over UDP and TCP (capture_dns.py)."""

from __future__ import annotations

from support.golden import GOLDEN, assert_golden, dissect_capture


def test_dns_golden() -> None:
    entries = dissect_capture(GOLDEN / "dns" / "basic.pcap")
    assert [e["summary"] for e in entries] == [
        "A example.test", "AAAA example.test", "MX example.test", "TXT example.test",
        "A missing.example.test", "A mail.example.test", "TXT big.example.test",
        "TXT big.example.test", "A silent.example.test"]
    assert all(e["protocol"] == "dns" for e in entries)
    a, aaaa, mx, txt, nx, tcp, truncated, retried, silent = entries
    assert [x["data"] for x in a["response"]["answers"]] == ["192.0.2.10", "192.0.2.11"]
    assert aaaa["response"]["answers"][0]["data"] == "2001:db8::10"
    assert [x["data"] for x in mx["response"]["answers"]] == [
        "10 mail.example.test", "20 backup.example.test"]
    assert txt["response"]["answers"][0]["data"] == '"v=spf1 -all"'
    assert (nx["status"], nx["response"]["rcode"], nx["response"]["error"]) == (
        3, "NXDOMAIN", "NXDOMAIN")
    assert a["request"]["qtype"] == "A" and a["request"]["rd"] is True
    assert tcp["response"]["answers"][0]["data"] == "192.0.2.25"
    assert truncated["response"]["truncated"] is True
    assert retried["response"]["answer_count"] == 20 and not retried["response"]["truncated"]
    assert silent["response"] is None and silent["complete"] is False
    assert silent["status"] is None and silent["notes"] == ["no response"]
    assert all(e["complete"] for e in entries[:-1])
    assert_golden(GOLDEN / "dns" / "basic.json", entries)
