"""Live capture sources (af_packet, pcap) on lo, on `any` and on a veth in a namespace,
checked against what tcpdump sees for the same traffic and filter."""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest_sources import Tcpdump, collect, send_udp, tcp_exchange, udp_receiver
from support.netns import VethPair
from worker.packet import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, TCP, UDP, decode
from worker.sources import list_interfaces, open_source
from worker.sources.af_packet import AfPacketSource
from worker.sources.base import BpfError, CaptureError

pytestmark = pytest.mark.root
KINDS = ["af_packet", "pcap"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[int]:
    sock = udp_receiver()
    yield sock.getsockname()[1]
    sock.close()


def open_kind(kind: str, ifaces: list[str], bpf: str):
    source, message = open_source(kind, ifaces, bpf)
    assert message.startswith(f"capture: {kind}")
    return source


def udp_payloads(linktype: int, packets) -> list[bytes]:
    decoded = [decode(linktype, frame) for _ts, frame, _wirelen in packets]
    assert all(d is not None and d.proto == UDP for d in decoded)
    return [d.payload for d in decoded]


@pytest.mark.parametrize("kind", KINDS)
def test_udp_on_lo_is_seen_once_per_datagram_like_tcpdump(kind, receiver, tmp_path):
    bpf = f"udp port {receiver}"
    tcpdump = Tcpdump(tmp_path / "peer.pcap", "lo", bpf)
    source = open_kind(kind, ["lo"], bpf)
    try:
        assert source.linktype == LINKTYPE_ETHERNET
        sent = send_udp(receiver, 40)
        packets = collect(source, expected=len(sent))
        peer = tcpdump.stop(len(packets))
        assert udp_payloads(source.linktype, packets) == sent
        assert len(peer) == len(packets)
        assert [frame for _ts, frame in peer] == [frame for _ts, frame, _len in packets]
        for ts, frame, wirelen in packets:
            assert wirelen == len(frame)
            assert ts > 1_500_000_000 * 10**9  # nanoseconds since the epoch
        stats = source.stats()
        assert (stats.received, stats.dropped) == (40, 0)
    finally:
        tcpdump.kill()
        source.close()


@pytest.mark.parametrize("kind", KINDS)
def test_tcp_on_lo_matches_tcpdump_packet_for_packet(kind, tmp_path):
    # The port is only known once the server listens: filter on the address pair and match
    # the connection's port afterwards.
    bpf = "tcp and host 127.0.0.1"
    tcpdump = Tcpdump(tmp_path / "peer.pcap", "lo", bpf)
    source = open_kind(kind, ["lo"], bpf)
    try:
        request, response = b"PING " * 3000, b"PONG " * 20000  # several segments each way
        port = tcp_exchange(request, response)
        packets = collect(source)
        peer = tcpdump.stop(len(packets))

        def ours(frames: list[bytes]) -> list[bytes]:
            mine = []
            for frame in frames:
                decoded = decode(LINKTYPE_ETHERNET, frame)
                if decoded and decoded.proto == TCP and port in (decoded.sport, decoded.dport):
                    mine.append(frame)
            return mine
        captured = ours([frame for _ts, frame, _len in packets])
        assert captured == ours([frame for _ts, frame in peer])
        to_server = b"".join(decode(LINKTYPE_ETHERNET, f).payload for f in captured
                             if decode(LINKTYPE_ETHERNET, f).dport == port)
        to_client = b"".join(decode(LINKTYPE_ETHERNET, f).payload for f in captured
                             if decode(LINKTYPE_ETHERNET, f).sport == port)
        assert (to_server, to_client) == (request, response)
    finally:
        tcpdump.kill()
        source.close()


@pytest.mark.parametrize("kind", KINDS)
def test_set_filter_replaces_the_filter(kind):
    first, second = udp_receiver(), udp_receiver()
    port_a, port_b = first.getsockname()[1], second.getsockname()[1]
    source = open_kind(kind, ["lo"], f"udp port {port_a}")
    try:
        sent_a = send_udp(port_a, 5, tag=b"a")
        assert udp_payloads(source.linktype, collect(source, expected=5)) == sent_a
        source.set_filter(f"udp port {port_b}")
        send_udp(port_a, 5, tag=b"a")
        sent_b = send_udp(port_b, 5, tag=b"b")
        assert udp_payloads(source.linktype, collect(source, expected=5)) == sent_b
        # (No filter at all is not tested live: other traffic on a busy lo could overflow
        # the ring and make the test flaky; the unit tests check the accept-all program.)
        source.set_filter(f"udp port {port_a} or udp port {port_b}")
        both = send_udp(port_a, 2, tag=b"c") + send_udp(port_b, 2, tag=b"d")
        assert udp_payloads(source.linktype, collect(source, expected=4)) == both
    finally:
        source.close()
        first.close()
        second.close()


@pytest.mark.parametrize("ifaces", [["lo"], ["any"], ["lo", "eth0"]], ids=["lo", "any", "lo+eth0"])
@pytest.mark.parametrize("kind", KINDS)
def test_select_wakes_for_one_packet_on_an_idle_interface(kind, ifaces, receiver):
    # The worker only reads a source that select() reports readable: a lone packet must make
    # it readable (a ring block is retired on its timer) and reading must make it quiet again.
    if not set(ifaces) - {"any"} <= set(list_interfaces()):
        pytest.skip(f"no {ifaces} here")
    source = open_kind(kind, ifaces, f"udp port {receiver}")
    try:
        for round_ in range(2):
            sent = send_udp(receiver, 1, tag=b"lone%d" % round_)
            readable, _, _ = select.select([source.fileno()], [], [], 5)
            assert readable == [source.fileno()]
            packets = source.read_batch(100)
            for _ in range(20):
                if not select.select([source.fileno()], [], [], 0.2)[0]:
                    break
                packets += source.read_batch(100)
            else:
                pytest.fail("the source stays readable with nothing left to read")
            assert udp_payloads(source.linktype, packets) == sent
    finally:
        source.close()


def test_kernel_drops_are_counted_and_accumulated(receiver):
    # A ring of two 4 KiB blocks that nobody reads overflows; the kernel resets its counters
    # on every read, so the source must add them up.
    source = AfPacketSource(["lo"], f"udp port {receiver}", buffer_size=8192, block_size=4096)
    try:
        send_udp(receiver, 300)
        first = source.stats().dropped
        assert first > 0
        assert source.stats().dropped == first
        received = len(collect(source, quiet=0.3))
        stats = source.stats()
        assert (stats.received, stats.dropped) == (received, first)
        assert received + first == 300
    finally:
        source.close()


def test_unknown_source_kind_is_refused():
    with pytest.raises(CaptureError, match="unknown source 'ebpff'"):
        open_source("ebpff", ["lo"], "")


@pytest.mark.parametrize("kind", KINDS)
def test_bad_bpf_is_refused_with_libpcaps_message(kind):
    with pytest.raises(BpfError, match=r"bad BPF filter 'tcp port': .*syntax error"):
        open_source(kind, ["lo"], "tcp port")
    source = open_kind(kind, ["lo"], "udp")
    try:
        with pytest.raises(BpfError, match=r"'port 99999': .*illegal port number 99999"):
            source.set_filter("port 99999")
    finally:
        source.close()


@pytest.mark.parametrize("kind", [*KINDS, "auto"])
def test_unknown_interface_names_the_available_ones(kind):
    with pytest.raises(CaptureError) as raised:
        open_source(kind, ["nosuch0"], "")
    message = str(raised.value)
    assert message.startswith("unknown interface 'nosuch0' (available: ")
    assert "lo" in message
    assert set(list_interfaces()) >= {"lo"}


def test_auto_prefers_af_packet_and_says_so():
    source, message = open_source("auto", ["lo"], "udp port 9")
    try:
        assert message == "capture: af_packet (TPACKET_V3 ring) on lo"
        assert source.stats().kind == "af_packet"
    finally:
        source.close()


@pytest.mark.parametrize("kind", KINDS)
def test_any_sees_each_loopback_datagram_once_with_a_cooked_header(kind, receiver, tmp_path):
    bpf = f"udp port {receiver}"
    tcpdump = Tcpdump(tmp_path / "peer.pcap", "any", bpf, options=["-y", "LINUX_SLL"])
    source = open_kind(kind, ["any"], bpf)
    try:
        assert source.linktype == LINKTYPE_LINUX_SLL
        sent = send_udp(receiver, 25)
        packets = collect(source, expected=len(sent))
        assert udp_payloads(source.linktype, packets) == sent
        peer = tcpdump.stop(len(packets))
        assert [frame[16:] for _ts, frame in peer] == [frame[16:] for _ts, frame, _l in packets]
        # The SLL header too, but for the 2 link-address bytes past its length of 6, which
        # libpcap copies from the kernel's sockaddr_ll unset.
        assert [frame[:12] + frame[14:16] for _ts, frame in peer] == \
            [frame[:12] + frame[14:16] for _ts, frame, _l in packets]
        for _ts, frame, wirelen in packets:
            assert frame[14:16] == b"\x08\x00"          # SLL protocol: IPv4
            assert frame[2:4] == b"\x03\x04"            # ARPHRD_LOOPBACK
            assert wirelen == len(frame)
    finally:
        tcpdump.kill()
        source.close()


def test_any_frames_are_identical_between_af_packet_and_libpcap(receiver):
    bpf = f"udp port {receiver}"
    ours, theirs = open_kind("af_packet", ["any"], bpf), open_kind("pcap", ["any"], bpf)
    try:
        sent = send_udp(receiver, 10)
        a, b = collect(ours, expected=len(sent)), collect(theirs, expected=len(sent))
        assert [f[:12] + f[14:] for _ts, f, _len in a] == [f[:12] + f[14:] for _ts, f, _len in b]
    finally:
        ours.close()
        theirs.close()


def test_cooked_filter_on_header_bytes_falls_back_to_user_space(receiver):
    # `inbound` reads the SLL packet type; the kernel program must use the ancillary load and
    # a filter on other header bytes must still be applied (in user space).
    source = open_kind("af_packet", ["any"], f"udp port {receiver} and inbound")
    try:
        sent = send_udp(receiver, 5)
        assert udp_payloads(source.linktype, collect(source, expected=5)) == sent
        source.set_filter(f"udp port {receiver} and link[4:2] = 6")  # address length 6 (lo)
        sent = send_udp(receiver, 5, tag=b"x")
        assert udp_payloads(source.linktype, collect(source, expected=5)) == sent
        source.set_filter(f"udp port {receiver} and link[4:2] = 7")
        send_udp(receiver, 5, tag=b"y")
        assert collect(source, quiet=0.5, limit=1.0) == []
    finally:
        source.close()


@pytest.fixture
def root_veth() -> Iterator[tuple[str, str]]:
    """A veth pair in this namespace, up, without addresses."""
    tag = os.getpid() % 100000
    ends = (f"skv{tag}a", f"skv{tag}b")
    subprocess.run(["ip", "link", "del", ends[0]], capture_output=True)
    try:
        subprocess.run(["ip", "link", "add", ends[0], "type", "veth", "peer", "name", ends[1]],
                       check=True, capture_output=True)
        for end in ends:
            subprocess.run(["ip", "link", "set", end, "up"], check=True, capture_output=True)
        yield ends
    finally:
        subprocess.run(["ip", "link", "del", ends[0]], capture_output=True)


def foreign_frame(dport: int, payload: bytes) -> bytes:
    """An Ethernet/IPv4/UDP frame for a MAC no interface has: the receiving stack drops it
    (PACKET_OTHERHOST) but packet sockets see it."""
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 1, 17, 0,
                     bytes([10, 213, 43, 1]), bytes([10, 213, 43, 2]))
    return bytes.fromhex("02000000ff99" "02000000ff98" "0800") + ip + udp


@pytest.mark.parametrize("kind", KINDS)
def test_several_interfaces_share_one_source(kind, receiver, root_veth):
    inner, outer = root_veth
    source = open_kind(kind, ["lo", inner], f"udp port {receiver}")
    try:
        assert source.linktype == LINKTYPE_ETHERNET
        assert isinstance(source.fileno(), int)
        sent = send_udp(receiver, 5)
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as injector:
            injector.bind((outer, 0))
            for i in range(5):
                injector.send(foreign_frame(receiver, b"veth-%d" % i))
        payloads = udp_payloads(source.linktype, collect(source, expected=10))
        assert sorted(payloads) == sorted(sent + [b"veth-%d" % i for i in range(5)])
        assert source.stats().received == 10
    finally:
        source.close()


_UNPRIVILEGED = """
import sys
from worker.sources import open_source
from worker.sources.base import CaptureError
try:
    open_source(sys.argv[1], ["lo"], "")
except CaptureError as error:
    print(error)
"""


@pytest.mark.parametrize("kind", [*KINDS, "auto"])
def test_without_cap_net_raw_the_error_says_what_is_needed(kind):
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         "--bounding-set=-all", sys.executable, "-c", _UNPRIVILEGED, kind],
        capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "capture on lo needs root or CAP_NET_RAW" in result.stdout


# -- a veth in a network namespace --------------------------------------------------------

_IN_NAMESPACE = """
import json, sys
sys.path.insert(0, sys.argv[5])
from conftest_sources import collect
from worker.packet import decode
from worker.sources import open_source
source, message = open_source(sys.argv[1], [sys.argv[2]], sys.argv[3])
print("ready", flush=True)
packets = collect(source, expected=int(sys.argv[4]), limit=20)
payloads = [decode(source.linktype, f).payload.decode() for _t, f, _l in packets]
frames = [f.hex() for _t, f, _l in packets]
stats = source.stats()
print(json.dumps({"message": message, "payloads": payloads, "frames": frames,
                  "stats": [stats.received, stats.dropped]}), flush=True)
"""


@pytest.fixture
def veth() -> Iterator[VethPair]:
    with VethPair(subnet=41) as pair:  # torn down even when the test fails
        # Static neighbours: no ARP exchange, nothing queued or lost while one resolves.
        for here, there in ((pair.a, pair.b), (pair.b, pair.a)):
            link = json.loads(there.run("ip", "-j", "link", "show", there.iface).stdout)
            here.run("ip", "neigh", "replace", there.address, "lladdr", link[0]["address"],
                     "dev", here.iface, "nud", "permanent")
        yield pair


@pytest.mark.parametrize("kind", KINDS)
def test_capture_on_a_veth_inside_a_namespace(kind, veth, tmp_path):
    client, server = veth.a, veth.b
    bpf = "udp port 5599"
    tcpdump = Tcpdump(tmp_path / "peer.pcap", server.iface, bpf, prefix=server.exec_prefix)
    child = subprocess.Popen(
        [*server.exec_prefix, sys.executable, "-c", _IN_NAMESPACE, kind, server.iface, bpf, "20",
         str(Path(__file__).parent)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        sender = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  f"for i in range(20): s.sendto(b'veth-%d' % i, ('{server.address}', 5599))")
        sent = client.run(sys.executable, "-c", sender)
        assert sent.returncode == 0, sent.stderr
        out, err = child.communicate(timeout=60)
        result = json.loads(out)
        assert result["message"] == f"capture: {kind}" + (
            " (TPACKET_V3 ring)" if kind == "af_packet" else "") + f" on {server.iface}"
        assert result["payloads"] == [f"veth-{i}" for i in range(20)]
        assert result["stats"] == [20, 0]
        peer = tcpdump.stop(len(result["frames"]))
        assert [frame.hex() for _ts, frame in peer] == result["frames"]
    finally:
        tcpdump.kill()
        if child.poll() is None:
            child.kill()
            child.wait()

