"""Golden captures of real TLS clients and servers, and of unknown TCP/UDP traffic."""

from __future__ import annotations

import pytest

from support.golden import GOLDEN, assert_golden, dissect_capture

TLS = GOLDEN / "tls"


@pytest.mark.parametrize("name, summary, request_version, cipher", [
    ("tls13", "TLS 1.3 shark.test (offered h2,http/1.1)", "TLS 1.3", "TLS_AES_256_GCM_SHA384"),
    ("tls12", "TLS 1.2 shark.test (h2)", "TLS 1.2", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    ("python_https", "TLS 1.3 shark.test (offered http/1.1)", "TLS 1.3",
     "TLS_AES_256_GCM_SHA384"),
])
def test_tls_handshakes(name, summary, request_version, cipher):
    entries = dissect_capture(TLS / f"{name}.pcap")
    (entry,) = entries
    assert entry["protocol"] == "tls" and entry["summary"] == summary
    assert entry["request"]["sni"] == "shark.test"
    assert entry["request"]["version"] == request_version
    assert entry["response"]["cipher"] == cipher and entry["response"]["error"] is None
    assert entry["complete"] and entry["notes"] == [] and entry["status"] is None
    assert entry["size"]["request"] > 200 and entry["size"]["response"] > 1000
    assert_golden(TLS / f"{name}.json", entries)


def test_tls_failures():
    (version,) = dissect_capture(TLS / "fail_version.pcap")
    assert version["status"] == 70
    assert version["response"]["error"] == "fatal alert from server: protocol_version"
    (unknown_ca,) = dissect_capture(TLS / "fail_unknown_ca.pcap")
    assert unknown_ca["status"] == 48
    assert unknown_ca["response"]["alert"]["from"] == "client"
    assert unknown_ca["summary"] == "TLS 1.2 shark.test (h2) alert unknown_ca"
    assert_golden(TLS / "fail_version.json", [version])
    assert_golden(TLS / "fail_unknown_ca.json", [unknown_ca])


def test_generic_tcp_and_udp():
    (tcp,) = dissect_capture(TLS / "generic_tcp.pcap")
    assert tcp["protocol"] == "tcp" and tcp["complete"]
    assert tcp["size"] == {"request": 1048, "response": 33800}
    assert tcp["summary"].endswith(" 1.0 KB / 34 KB")
    assert tcp["request"]["first_bytes_hex"].startswith("deadbeef00010203")
    (udp,) = dissect_capture(TLS / "generic_udp.pcap")
    assert udp["protocol"] == "udp"
    assert udp["request"]["datagrams"] == udp["response"]["datagrams"] == 3
    assert udp["size"] == {"request": 144, "response": 459}
    assert_golden(TLS / "generic_tcp.json", [tcp])
    assert_golden(TLS / "generic_udp.json", [udp])
