"""Regenerate tests/golden/dns/basic.pcap: dig against a real DNS server (dnslib's DNSServer,
UDP and TCP, on 127.0.0.1 and a free port) answering fixed records.

    .venv/bin/python tests/golden/capture_dns.py      (as root; needs dig: apt dnsutils)

Queries, each its own dig run (so its own UDP flow): A, AAAA, MX, TXT, a name that does not
exist (NXDOMAIN), an A over TCP (+tcp), a TXT too big for UDP (the server answers truncated,
dig retries over TCP), and a query the server never answers (silent.example.test).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, DNSError
from dnslib.server import DNSHandler, DNSLogger, DNSServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN, Scenario, record_all  # noqa: E402

ZONE = """
example.test.      60 IN A     192.0.2.10
example.test.      60 IN A     192.0.2.11
example.test.      60 IN AAAA  2001:db8::10
example.test.      60 IN MX    10 mail.example.test.
example.test.      60 IN MX    20 backup.example.test.
example.test.      60 IN TXT   "v=spf1 -all"
mail.example.test. 60 IN A     192.0.2.25
""" + "".join(f'big.example.test. 60 IN TXT "{"record %02d " % i}{"x" * 40}"\n' for i in range(20))


class FixedResolver:
    def __init__(self) -> None:
        self.records = RR.fromZone(ZONE)

    def resolve(self, request, handler):  # noqa: ANN001, ANN201 (dnslib's interface)
        qname, qtype = request.q.qname, request.q.qtype
        if str(qname).rstrip(".") == "silent.example.test":
            raise DNSError("never answered (golden capture)")
        reply = request.reply()
        found = [rr for rr in self.records if rr.rname == qname]
        if not found:
            reply.header.rcode = RCODE.NXDOMAIN
        for rr in found:
            if rr.rtype == qtype or qtype == QTYPE.ANY:
                reply.add_answer(rr)
        return reply


class SmallUdp(DNSHandler):
    udplen = 512      # larger UDP answers go out truncated (TC), so dig retries over TCP


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


@contextmanager
def scenarios() -> Iterator[list[Scenario]]:
    port = free_port()
    logger = DNSLogger("-recv,-send,-request,-reply,-truncated,-error,-data")
    servers = [DNSServer(FixedResolver(), port=port, address="127.0.0.1", tcp=tcp,
                         logger=logger, handler=SmallUdp) for tcp in (False, True)]
    for server in servers:
        server.start_thread()

    def dig(*args: str) -> None:
        subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=1", *args],
                       stdout=subprocess.DEVNULL, check=False)

    def traffic() -> None:
        dig("example.test", "A")
        dig("example.test", "AAAA")
        dig("example.test", "MX")
        dig("example.test", "TXT")
        dig("missing.example.test", "A")
        dig("+tcp", "mail.example.test", "A")
        dig("big.example.test", "TXT")
        dig("silent.example.test", "A")
    try:
        yield [Scenario(GOLDEN / "dns" / "basic.pcap", f"port {port}", traffic)]
    finally:
        for server in servers:
            server.stop()
            server.server.server_close()    # stop() ends the thread but keeps the socket


if __name__ == "__main__":
    record_all(scenarios)
