"""AF_PACKET capture through a TPACKET_V3 mmap ring, in pure Python (socket, mmap, struct).

One socket and ring per interface, bound to it; `any` is one unbound SOCK_DGRAM socket whose
packets get a LINUX_SLL header synthesized from the sockaddr_ll the kernel puts after each
tpacket3_hdr, as libpcap does. On loopback the kernel hands a socket every packet twice
(outgoing, then incoming): the outgoing copy is dropped in the kernel, so each packet is seen
once, as `tcpdump -i lo` shows it.
"""

from __future__ import annotations

import mmap
import select
import socket
import struct

from worker.packet import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, RawPacket
from worker.sources import check_interfaces
from worker.sources.base import CaptureError, SourceStats
from worker.sources.bpf import (UserFilter, attach_filter, compile_bpf, cooked_kernel_program,
                                skip_loopback_outgoing)

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETH_P_8021Q = 0x8100
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772

DEFAULT_BLOCK_SIZE = 1 << 20
DEFAULT_BLOCK_TIMEOUT_MS = 20   # a partly filled block reaches us after this, even when idle
_FRAME_SIZE = 2048              # only used to size the request; V3 packs packets tightly
_TPACKET3_HDRLEN = 48           # TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): sockaddr_ll follows

# tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1: block_status, num_pkts,
# offset_to_first_pkt (read from offset 8).
_BLOCK = struct.Struct("=III")
# tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status, tp_mac.
_PACKET = struct.Struct("=IIIIIIH")
_VLAN = struct.Struct("=IH")     # tp_vlan_tci, tp_vlan_tpid at offset 32
# sockaddr_ll: family, protocol (network order), ifindex, hatype, pkttype, halen, addr[8].
_SOCKADDR_LL = struct.Struct("=2x2s4xHBB8s")
_SLL_HEADER = struct.Struct(">HHH8s2s")
_STATS = struct.Struct("=III")
_RELEASE = b"\x00\x00\x00\x00"


class _Ring:
    """One socket with its mmap'd ring, and where reading stopped in it."""

    def __init__(self, sock: socket.socket, ring: mmap.mmap, block_size: int, block_nr: int,
                 iface: str, cooked: bool) -> None:
        self.sock = sock
        self.mm = ring
        self.block_size = block_size
        self.block_nr = block_nr
        self.iface = iface
        self.cooked = cooked
        self.block = 0              # the next block to read
        self.resume_at = 0          # offset of the next packet when a block was left half-read
        self.resume_left = 0        # packets left in that block
        self.user_filter: UserFilter | None = None   # a filter the kernel cannot run
        self.recheck_filter: UserFilter | None = None  # new filter, for packets queued before it
        self.recheck_blocks = 0
        self.drops = 0
        self.rx_dropped_at_open = _rx_dropped(iface)

    def close(self) -> None:
        try:
            self.mm.close()
        finally:
            self.sock.close()


class AfPacketSource:
    def __init__(self, ifaces: list[str], bpf: str = "", snaplen: int = 262144,
                 buffer_size: int = 32 << 20, *, block_size: int = DEFAULT_BLOCK_SIZE,
                 block_timeout_ms: int = DEFAULT_BLOCK_TIMEOUT_MS) -> None:
        check_interfaces(ifaces)
        self.snaplen = snaplen
        self.name = "af_packet:" + ",".join(ifaces)
        self._block_size = block_size
        self._block_nr = max(2, buffer_size // block_size)
        self._block_timeout_ms = block_timeout_ms
        self._rings: list[_Ring] = []
        self._received = 0
        self._closed = False
        self._lo_ifindex = _loopback_ifindex()
        try:
            if ifaces == ["any"]:
                self.linktype = LINKTYPE_LINUX_SLL
                self._rings.append(self._open_ring(None, bpf))
            else:
                linktypes = {}
                for iface in ifaces:
                    ring = self._open_ring(iface, bpf)
                    self._rings.append(ring)
                    linktypes[iface] = LINKTYPE_LINUX_SLL if ring.cooked else LINKTYPE_ETHERNET
                if len(set(linktypes.values())) > 1:
                    detail = ", ".join(f"{i}: {t}" for i, t in linktypes.items())
                    raise CaptureError(f"interfaces have different link types ({detail}); "
                                       f"capture on 'any' instead")
                self.linktype = next(iter(linktypes.values()))
        except BaseException:
            self.close()
            raise
        self._epoll: select.epoll | None = None
        if len(self._rings) > 1:
            self._epoll = select.epoll()
            for ring in self._rings:
                self._epoll.register(ring.sock.fileno(), select.EPOLLIN)

    # -- opening ----------------------------------------------------------------------------

    def _open_ring(self, iface: str | None, bpf: str) -> _Ring:
        label = iface or "any"
        cooked = iface is None or _arphrd(iface) not in (ARPHRD_ETHER, ARPHRD_LOOPBACK)
        kind = socket.SOCK_DGRAM if cooked else socket.SOCK_RAW
        try:
            # Protocol 0 receives nothing until bind, so the filter and ring are in place
            # before the first packet. `any` cannot be bound: it starts with ETH_P_ALL, and the
            # packets of the moment before the ring exists stay in the unused socket queue.
            protocol = socket.htons(ETH_P_ALL) if iface is None else 0
            sock = socket.socket(socket.AF_PACKET, kind, protocol)
        except PermissionError as error:
            raise CaptureError(f"capture on {label} needs root or CAP_NET_RAW "
                               f"({error.strerror})") from None
        except OSError as error:
            raise CaptureError(f"af_packet unavailable: {error.strerror or error}") from None
        try:
            ring = self._setup_ring(sock, iface, cooked)
        except OSError as error:
            sock.close()
            raise CaptureError(f"af_packet on {label}: {error.strerror or error}") from None
        except BaseException:
            sock.close()
            raise
        try:
            self._attach(ring, bpf, initial=True)
            if iface is not None:
                if _arphrd(iface) == ARPHRD_LOOPBACK:
                    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                sock.bind((iface, ETH_P_ALL))
        except OSError as error:
            ring.close()
            raise CaptureError(f"af_packet on {label}: {error.strerror or error}") from None
        except BaseException:
            ring.close()
            raise
        return ring

    def _setup_ring(self, sock: socket.socket, iface: str | None, cooked: bool) -> _Ring:
        if iface is None:
            # Until the real filter is attached (next step), accept nothing.
            attach_filter(sock, struct.pack("=HBBI", 0x06, 0, 0, 0))
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        block_size, block_nr = self._block_size, self._block_nr
        frames = block_size // _FRAME_SIZE * block_nr
        request = struct.pack("=7I", block_size, block_nr, _FRAME_SIZE, frames,
                              self._block_timeout_ms, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
        ring = mmap.mmap(sock.fileno(), block_size * block_nr, mmap.MAP_SHARED,
                         mmap.PROT_READ | mmap.PROT_WRITE)
        return _Ring(sock, ring, block_size, block_nr, iface or "any", cooked)

    def _attach(self, ring: _Ring, bpf: str, initial: bool) -> None:
        """Compile `bpf` for the frames this ring yields and give the kernel what it can run."""
        program = compile_bpf(bpf, self._linktype_of(ring), self.snaplen)
        kernel_program = program
        user_filter = None
        if ring.cooked:
            kernel_program = cooked_kernel_program(program)
            if kernel_program is None:  # reads SLL header bytes the kernel has not got
                kernel_program = cooked_kernel_program(
                    compile_bpf("", LINKTYPE_LINUX_SLL, self.snaplen))
                user_filter = UserFilter(program)
            assert kernel_program is not None
            if ring.iface == "any" and self._lo_ifindex:
                kernel_program = skip_loopback_outgoing(self._lo_ifindex, kernel_program)
        attach_filter(ring.sock, kernel_program)
        ring.user_filter = user_filter
        if not initial:
            # Packets already in the ring passed the old filter: run the new one on them.
            ring.recheck_filter = UserFilter(program) if bpf else None
            ring.recheck_blocks = ring.block_nr + 1 if bpf else 0

    @staticmethod
    def _linktype_of(ring: _Ring) -> int:
        return LINKTYPE_LINUX_SLL if ring.cooked else LINKTYPE_ETHERNET

    # -- Source protocol --------------------------------------------------------------------

    def fileno(self) -> int | None:
        if self._epoll is not None:
            return self._epoll.fileno()
        return self._rings[0].sock.fileno()

    @property
    def finished(self) -> bool:
        return self._closed

    def read_batch(self, max_packets: int) -> list[RawPacket]:
        packets: list[RawPacket] = []
        if self._epoll is not None:
            self._epoll.poll(0)  # consume readiness so select() reflects new data only
        for ring in self._rings:
            if len(packets) >= max_packets:
                break
            if ring.cooked:
                self._read_cooked(ring, max_packets, packets)
            else:
                self._read_raw(ring, max_packets, packets)
        self._received += len(packets)
        return packets

    def _read_raw(self, ring: _Ring, max_packets: int, out: list[RawPacket]) -> None:
        """The hot loop: frames are copied straight out of the ring."""
        mm = ring.mm
        block_size = ring.block_size
        unpack_packet = _PACKET.unpack_from
        append = out.append
        while len(out) < max_packets:
            base = ring.block * block_size
            status, count, first = _BLOCK.unpack_from(mm, base + 8)
            if not status & TP_STATUS_USER:
                return
            if ring.resume_left:
                offset, count = ring.resume_at, ring.resume_left
            else:
                offset = base + first
            take = min(count, max_packets - len(out))
            start_len = len(out)
            for _ in range(take):
                next_offset, sec, nsec, snaplen, wirelen, pstatus, mac = unpack_packet(mm, offset)
                start = offset + mac
                if pstatus & TP_STATUS_VLAN_VALID:
                    append(_with_vlan(mm, offset, start, snaplen, wirelen, sec, nsec, pstatus, 12))
                else:
                    append((sec * 1_000_000_000 + nsec, mm[start:start + snaplen], wirelen))
                offset += next_offset
            self._filter_block(ring, out, start_len)
            if take < count:
                ring.resume_at, ring.resume_left = offset, count - take
                return
            self._release(ring, base)

    def _read_cooked(self, ring: _Ring, max_packets: int, out: list[RawPacket]) -> None:
        """As _read_raw, with a LINUX_SLL header made from the sockaddr_ll of each packet."""
        mm = ring.mm
        block_size = ring.block_size
        unpack_packet = _PACKET.unpack_from
        unpack_sll = _SOCKADDR_LL.unpack_from
        pack_sll = _SLL_HEADER.pack
        append = out.append
        while len(out) < max_packets:
            base = ring.block * block_size
            status, count, first = _BLOCK.unpack_from(mm, base + 8)
            if not status & TP_STATUS_USER:
                return
            if ring.resume_left:
                offset, count = ring.resume_at, ring.resume_left
            else:
                offset = base + first
            take = min(count, max_packets - len(out))
            start_len = len(out)
            for _ in range(take):
                next_offset, sec, nsec, snaplen, wirelen, pstatus, mac = unpack_packet(mm, offset)
                protocol, hatype, pkttype, halen, address = unpack_sll(
                    mm, offset + _TPACKET3_HDRLEN)
                header = pack_sll(pkttype, hatype, halen, address, protocol)
                start = offset + mac
                frame = header + mm[start:start + snaplen]
                if pstatus & TP_STATUS_VLAN_VALID:
                    frame, wirelen = _insert_vlan(mm, offset, frame, wirelen, pstatus, 14)
                append((sec * 1_000_000_000 + nsec, frame, wirelen + 16))
                offset += next_offset
            self._filter_block(ring, out, start_len)
            if take < count:
                ring.resume_at, ring.resume_left = offset, count - take
                return
            self._release(ring, base)

    @staticmethod
    def _filter_block(ring: _Ring, out: list[RawPacket], start: int) -> None:
        for user_filter in (ring.user_filter, ring.recheck_filter):
            if user_filter is not None:
                accepts = user_filter.accepts
                out[start:] = [p for p in out[start:] if accepts(p[1], p[2])]

    @staticmethod
    def _release(ring: _Ring, base: int) -> None:
        ring.mm[base + 8:base + 12] = _RELEASE
        ring.block = (ring.block + 1) % ring.block_nr
        ring.resume_left = 0
        if ring.recheck_blocks:
            ring.recheck_blocks -= 1
            if not ring.recheck_blocks:
                ring.recheck_filter = None

    def set_filter(self, bpf: str) -> None:
        for ring in self._rings:  # compile once per ring first: a bad filter changes nothing
            compile_bpf(bpf, self._linktype_of(ring), self.snaplen)
        for ring in self._rings:
            self._attach(ring, bpf, initial=False)

    def stats(self) -> SourceStats:
        if_dropped = 0
        for ring in self._rings:
            if not self._closed:
                # The kernel resets these counters on every read: accumulate.
                _packets, drops, _freezes = _STATS.unpack(
                    ring.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size))
                ring.drops += drops
            if ring.iface != "any":
                if_dropped += max(0, _rx_dropped(ring.iface) - ring.rx_dropped_at_open)
        return SourceStats(name=self.name, kind="af_packet", received=self._received,
                           dropped=sum(r.drops for r in self._rings), if_dropped=if_dropped)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if getattr(self, "_epoll", None) is not None:
            self._epoll.close()
        for ring in self._rings:
            ring.close()


def _with_vlan(mm: mmap.mmap, offset: int, start: int, snaplen: int, wirelen: int, sec: int,
               nsec: int, status: int, at: int) -> RawPacket:
    frame, wirelen = _insert_vlan(mm, offset, mm[start:start + snaplen], wirelen, status, at)
    return (sec * 1_000_000_000 + nsec, frame, wirelen)


def _insert_vlan(mm: mmap.mmap, offset: int, frame: bytes, wirelen: int, status: int,
                 at: int) -> tuple[bytes, int]:
    """Put back the 802.1Q tag the kernel took out of the frame (VLAN offload), as libpcap."""
    tci, tpid = _VLAN.unpack_from(mm, offset + 32)
    if not status & TP_STATUS_VLAN_TPID_VALID:
        tpid = ETH_P_8021Q
    if len(frame) < at:
        return frame, wirelen
    return frame[:at] + struct.pack(">HH", tpid, tci & 0xFFFF) + frame[at:], wirelen + 4


def _arphrd(iface: str) -> int:
    try:
        with open(f"/sys/class/net/{iface}/type") as file:
            return int(file.read())
    except (OSError, ValueError):
        return -1


def _rx_dropped(iface: str) -> int:
    try:
        with open(f"/sys/class/net/{iface}/statistics/rx_dropped") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 0


def _loopback_ifindex() -> int:
    try:
        return socket.if_nametoindex("lo")
    except OSError:
        return 0

