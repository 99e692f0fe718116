"""Cross-check with tshark on the golden captures: TLS hellos and alerts, and the byte counts
of the generic tcp/udp entries.

tshark 4.0 quirks: a flow on a port it does not know needs `-d tcp.port==N,tls`; a
`tls.alert_message` filter also matches encrypted alerts (with empty fields), so only rows
with a level are compared; `-z conv,tcp` prints byte totals rounded to kB, so bytes are summed
from tcp.len / udp.length instead.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from support.golden import GOLDEN, dissect_capture

TLS = GOLDEN / "tls"
HANDSHAKES = ["tls13", "tls12", "python_https", "fail_version", "fail_unknown_ca"]
TLS13_ALPN_HIDDEN = {"tls13", "python_https"}   # the server's choice is encrypted in TLS 1.3


def tshark(path: Path, *args: str) -> list[list[str]]:
    out = subprocess.run(["tshark", "-r", str(path), *args], check=True, capture_output=True,
                         text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def fields(path: Path, port: int, display_filter: str, *names: str) -> list[list[str]]:
    argv = ["-d", f"tcp.port=={port},tls", "-Y", display_filter, "-T", "fields"]
    for name in names:
        argv += ["-e", name]
    return tshark(path, *argv)


@pytest.mark.parametrize("name", HANDSHAKES)
def test_hellos_match_tshark(name):
    (entry,) = dissect_capture(TLS / f"{name}.pcap")
    path, port = TLS / f"{name}.pcap", entry["dst"]["port"]
    (hello,) = fields(path, port, "tls.handshake.type==1", "tls.handshake.extensions_server_name",
                      "tls.handshake.extensions_alpn_str", "tls.handshake.ciphersuite",
                      "tls.handshake.extensions.supported_version")
    sni, alpn, suites, versions = hello
    request = entry["request"]
    assert request["sni"] == sni
    assert request["alpn"] == alpn.split(",")
    assert request["cipher_suites"] == len(suites.split(","))
    assert request["version"] == ("TLS 1.3" if "0x0304" in versions.split(",") else "TLS 1.2")
    servers = fields(path, port, "tls.handshake.type==2", "tls.handshake.ciphersuite",
                     "tls.handshake.extensions.supported_version",
                     "tls.handshake.extensions_alpn_str")
    if entry["response"]["cipher"] is None:
        assert servers == []
    else:
        ((suite, selected, server_alpn),) = servers
        assert entry["response"]["cipher"].endswith(_cipher_tail(suite))
        assert entry["response"]["version"] == ("TLS 1.3" if selected == "0x0304" else "TLS 1.2")
        assert (entry["response"]["alpn"] or "") == server_alpn
        if name in TLS13_ALPN_HIDDEN:
            assert server_alpn == ""
    alerts = [row for row in fields(path, port, "tls.alert_message", "tls.alert_message.level",
                                    "tls.alert_message.desc") if row[0]]
    if entry["status"] is None:
        assert alerts == []
    else:
        assert alerts == [["2", str(entry["status"])]]


def _cipher_tail(suite: str) -> str:
    from worker.dissectors.tls import CIPHERS
    return CIPHERS.get(int(suite, 16), suite)


def test_generic_tcp_bytes_match_tshark():
    (entry,) = dissect_capture(TLS / "generic_tcp.pcap")
    path = TLS / "generic_tcp.pcap"
    conversations = [line for line in tshark(path, "-q", "-z", "conv,tcp") if "<->" in line[0]]
    assert len(conversations) == 1
    sums: dict[str, int] = defaultdict(int)
    for sport, length in tshark(path, "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.len"):
        sums[sport] += int(length)
    assert sums[str(entry["src"]["port"])] == entry["size"]["request"]
    assert sums[str(entry["dst"]["port"])] == entry["size"]["response"]


def test_generic_udp_datagrams_match_tshark():
    (entry,) = dissect_capture(TLS / "generic_udp.pcap")
    rows = tshark(TLS / "generic_udp.pcap", "-T", "fields", "-e", "udp.srcport", "-e", "udp.length")
    sums: dict[str, list[int]] = defaultdict(list)
    for sport, length in rows:
        sums[sport].append(int(length) - 8)
    client, server = sums[str(entry["src"]["port"])], sums[str(entry["dst"]["port"])]
    assert (sum(client), len(client)) == (entry["size"]["request"], entry["request"]["datagrams"])
    assert (sum(server), len(server)) == (entry["size"]["response"], entry["response"]["datagrams"])
