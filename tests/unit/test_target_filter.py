"""The capture filter of a target list (worker.sources.targets) keeps exactly the packets that
libpcap's `host A or host B ...` keeps, and stays short whatever the list's length."""

from __future__ import annotations

import ipaddress
import struct
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.packet import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW
from worker.sources.bpf import UserFilter, compile_bpf
from worker.sources.targets import IDLE_BPF, MAX_NETS, TargetMatcher, covering_networks, target_filter

SNAPLEN = 262144
# A small pool, so that random packets often hit a target and often just miss one.
V4 = [f"10.244.{a}.{b}" for a in (0, 1, 7) for b in (1, 2, 3, 4, 9, 200)] + ["192.168.0.1"]
V6 = ["fd00::1", "fd00::2", "fd00::1:5", "2001:db8::7"]
POOL = V4 + V6
ETHERTYPES = {"ip": 0x0800, "ip6": 0x86DD, "arp": 0x0806, "rarp": 0x8035, "other": 0x88CC}


def _network_part(kind: str, src: str, dst: str) -> bytes:
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if kind == "ip":
        return struct.pack("!BBHHHBBH", 0x45, 0, 40, 0, 0, 64, 6, 0) + s + d + bytes(20)
    if kind == "ip6":
        return struct.pack("!IHBB", 6 << 28, 20, 6, 64) + s + d + bytes(20)
    if kind in ("arp", "rarp"):   # Ethernet/IPv4 ARP: sender at 14, target at 24
        return struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + bytes(6) + s + bytes(6) + d
    return bytes(46)


def _frame(linktype: int, kind: str, src: str, dst: str) -> bytes:
    body = _network_part(kind, src, dst)
    if linktype == LINKTYPE_ETHERNET:
        return bytes(12) + struct.pack("!H", ETHERTYPES[kind]) + body
    if linktype == LINKTYPE_LINUX_SLL:
        return struct.pack("!HHH8sH", 0, 1, 6, bytes(8), ETHERTYPES[kind]) + body
    return body   # raw IP: libpcap tells the version by the first nibble


def _packet(kind: str, family: list[str]) -> st.SearchStrategy[tuple[str, str, str]]:
    return st.tuples(st.just(kind), st.sampled_from(family), st.sampled_from(family))


# Every kind of packet as often as the others (each with addresses of its own family).
packets = st.lists(st.one_of([_packet("ip", V4), _packet("ip6", V6), _packet("arp", V4),
                              _packet("rarp", V4), _packet("other", V4)]), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(targets=st.lists(st.sampled_from(POOL), min_size=1, max_size=12, unique=True),
       linktype=st.sampled_from([LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW]),
       max_nets=st.sampled_from([1, 2, MAX_NETS]), base=st.sampled_from(["", "tcp"]),
       sample=packets)
def test_kernel_part_and_address_check_keep_what_the_host_chain_keeps(
        targets: list[str], linktype: int, max_nets: int, base: str,
        sample: list[tuple[str, str, str]]) -> None:
    if linktype == LINKTYPE_RAW:
        sample = [p for p in sample if p[0] in ("ip", "ip6")]
    chain = " or ".join(f"host {ip}" for ip in targets)
    reference = UserFilter(compile_bpf(f"({base}) and ({chain})" if base else chain, linktype, SNAPLEN))
    planned = target_filter(base, targets, max_nets=max_nets)
    kernel = UserFilter(compile_bpf(planned.bpf, linktype, SNAPLEN))
    matcher = TargetMatcher(planned.addresses) if planned.addresses is not None else None
    frames = [(0, _frame(linktype, *p), len(_frame(linktype, *p))) for p in sample]
    kept = [f for f in frames if kernel.accepts(f[1], f[2])]
    if matcher is not None:
        kept = matcher.keep(linktype, kept)
    assert kept == [f for f in frames if reference.accepts(f[1], f[2])]


def test_a_vlan_tag_left_in_the_frame_is_looked_through() -> None:
    """af_packet puts back the tag the kernel's filter never saw: the check skips it too."""
    frame = _frame(LINKTYPE_ETHERNET, "ip", "10.244.0.1", "10.9.9.9")
    tagged = frame[:12] + b"\x81\x00\x00\x05" + frame[12:]
    matcher = TargetMatcher(frozenset({ipaddress.ip_address("10.244.0.1").packed}))
    assert matcher.keep(LINKTYPE_ETHERNET, [(0, tagged, len(tagged))]) == [(0, tagged, len(tagged))]
    other = TargetMatcher(frozenset({ipaddress.ip_address("10.244.0.2").packed}))
    assert other.keep(LINKTYPE_ETHERNET, [(0, tagged, len(tagged))]) == [] and other.left_out == 1


def test_contiguous_addresses_merge_into_an_exact_kernel_filter() -> None:
    ips = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(60_000)]
    planned = target_filter("tcp port 80", ips)
    assert planned.addresses is None     # exact: nothing left for user space
    assert planned.bpf.startswith("(tcp port 80) and (net 10.0.0.0/17 or net 10.0.128.0/18")
    nets = [ipaddress.ip_network(t.split()[1]) for t in planned.bpf[len("(tcp port 80) and ("):-1].split(" or ")]
    assert sum(n.num_addresses for n in nets) == 60_000


def test_covering_networks_hold_every_address_within_the_bound() -> None:
    addresses = sorted(ipaddress.ip_address(f"10.{i % 200}.{i * 7 % 256}.{i % 251}") for i in range(5000))
    nets, exact = covering_networks(addresses, 16)
    assert not exact and 0 < len(nets) <= 16
    assert all(any(a in n for n in nets) for a in addresses)


def test_five_thousand_targets_plan_and_compile_in_milliseconds() -> None:
    """Before: libpcap spent 2.3 s of CPU on 2000 `host` terms, more on 5000, and made a program
    past the kernel's 4096 instructions. Now: a bounded filter, whatever the list."""
    ips = [f"10.{i // 2000 + 1}.{i * 37 % 256}.{i * 11 % 253 + 1}" for i in range(5000)]
    started = time.process_time()
    planned = target_filter("tcp port 80", ips)
    program = compile_bpf(planned.bpf, LINKTYPE_LINUX_SLL, SNAPLEN)
    spent = time.process_time() - started
    assert len(program) // 8 < 200, len(program) // 8
    assert spent < 0.5, spent
    assert planned.addresses is not None and len(planned.addresses) == len(set(ips))


def test_idle_and_no_targets() -> None:
    assert target_filter("tcp", [], idle=True).bpf == IDLE_BPF
    assert target_filter("tcp", []).bpf == "tcp" and target_filter("tcp", []).addresses is None
    assert target_filter("", ["10.0.0.1", "fd00::1", "10.0.0.2"]).bpf == \
        "host 10.0.0.1 or host 10.0.0.2 or host fd00::1"
