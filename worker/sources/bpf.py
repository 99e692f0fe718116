"""BPF programs compiled by libpcap (through ctypes) for kernel sockets and for user space.

A program is kept as the bytes of a `struct sock_filter[]` (8 bytes per instruction: code u16,
jt u8, jf u8, k u32, native order), which is both what SO_ATTACH_FILTER takes and what
libpcap's `bpf_filter()` runs, so one compiled expression serves a socket and a file alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
import threading

from shark.clip import shown
from worker.sources.base import BpfError

SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
_INSN = struct.Struct("=HBBI")

# Kernel "ancillary data" loads (linux/filter.h): negative offsets the kernel's BPF answers
# from skb metadata instead of packet bytes.
SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_AD_PKTTYPE = 4
SKF_AD_IFINDEX = 8
PACKET_OUTGOING = 4
SLL_HDR_LEN = 16

# Instruction classes and modes (pcap/bpf.h).
BPF_LD, BPF_LDX, BPF_RET, BPF_JMP = 0x00, 0x01, 0x06, 0x05
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_K, BPF_ABS, BPF_IND, BPF_MSH = 0x00, 0x20, 0x40, 0xA0
BPF_JEQ = 0x10


# pcap files name link types by LINKTYPE_*, libpcap's compiler by DLT_*; they differ for raw
# IP (LINKTYPE_RAW 101 is DLT_RAW 12 on Linux, 14 on some BSDs).
_LINKTYPE_TO_DLT = {101: 12, 14: 12}


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class _Libpcap:
    def __init__(self) -> None:
        path = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
        try:
            lib = ctypes.CDLL(path)
        except OSError as error:
            raise BpfError(f"cannot load libpcap ({path}): {error}") from None
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram),
                                     ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
        lib.pcap_freecode.restype = None
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        lib.pcap_close.restype = None
        lib.bpf_filter.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint]
        lib.bpf_filter.restype = ctypes.c_uint
        self.lib = lib
        self.lock = threading.Lock()  # libpcap's compiler keeps state per handle; be safe


_libpcap: _Libpcap | None = None


def _lib() -> _Libpcap:
    global _libpcap
    if _libpcap is None:
        _libpcap = _Libpcap()
    return _libpcap


def compile_bpf(expression: str, linktype: int, snaplen: int) -> bytes:
    """The `struct sock_filter[]` bytes for `expression` on frames of `linktype`.

    An empty expression compiles to libpcap's accept-all program (`ret #snaplen`), which still
    caps the captured length at snaplen. Raises BpfError with libpcap's reason.
    """
    libpcap = _lib()
    lib = libpcap.lib
    with libpcap.lock:
        handle = lib.pcap_open_dead(_LINKTYPE_TO_DLT.get(linktype, linktype), snaplen)
        if not handle:
            raise BpfError(f"libpcap cannot compile for linktype {linktype}")
        try:
            program = _BpfProgram()
            encoded = expression.encode("utf-8", "replace")
            if lib.pcap_compile(handle, ctypes.byref(program), encoded, 1,
                                PCAP_NETMASK_UNKNOWN) != 0:
                reason = (lib.pcap_geterr(handle) or b"unknown error").decode("utf-8", "replace")
                raise BpfError(f"bad BPF filter {shown(expression)}: {reason}")
            try:
                return ctypes.string_at(program.bf_insns, program.bf_len * _INSN.size)
            finally:
                lib.pcap_freecode(ctypes.byref(program))
        finally:
            lib.pcap_close(handle)


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    return [_INSN.unpack_from(program, i) for i in range(0, len(program), _INSN.size)]


def assemble(insns: list[tuple[int, int, int, int]]) -> bytes:
    return b"".join(_INSN.pack(code, jt, jf, k & 0xFFFFFFFF) for code, jt, jf, k in insns)


def cooked_kernel_program(program: bytes) -> bytes | None:
    """Rewrite a program compiled for LINUX_SLL so it runs on a SOCK_DGRAM packet socket, where
    the kernel's filter sees the packet from the network header and there is no SLL header.

    As libpcap's `fix_offset`: loads past the 16-byte header move back by 16, the packet type
    and protocol fields become kernel ancillary loads. Returns None when the program reads
    other header bytes: the caller must then filter in user space.
    """
    fixed = []
    for code, jt, jf, k in instructions(program):
        cls, mode = code & 0x07, code & 0xE0
        if cls in (BPF_LD, BPF_LDX) and mode in (BPF_ABS, BPF_IND, BPF_MSH):
            if k >= SLL_HDR_LEN:
                k -= SLL_HDR_LEN
            elif k == 0:
                k = SKF_AD_OFF + SKF_AD_PKTTYPE
            elif k == 14:
                k = SKF_AD_OFF + SKF_AD_PROTOCOL
            else:
                return None
        fixed.append((code, jt, jf, k))
    return assemble(fixed)


def skip_loopback_outgoing(lo_ifindex: int, program: bytes) -> bytes:
    """Prefix a kernel program so it drops the outgoing copy of loopback packets (an unbound
    socket sees each one twice; tcpdump shows it once). Jumps are relative, so the original
    program runs unchanged after the prefix."""
    prefix = [
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, SKF_AD_OFF + SKF_AD_IFINDEX),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, 3, lo_ifindex),
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, 1, PACKET_OUTGOING),
        (BPF_RET | BPF_K, 0, 0, 0),
    ]
    return assemble(prefix) + program


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """Attach (or atomically replace) a socket's filter; b"" detaches it (accept all).
    SO_LOCK_FILTER is never set, so the filter can be replaced later."""
    if not program:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
        except OSError:
            pass  # ENOENT: there was no filter
        return
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("@HP", len(program) // _INSN.size, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class UserFilter:
    """Runs a compiled program on packets in user space (libpcap's bpf_filter)."""

    def __init__(self, program: bytes) -> None:
        self.program = program
        self._buffer = ctypes.create_string_buffer(program, len(program))  # kept alive
        self._address = ctypes.addressof(self._buffer)
        self._run = _lib().lib.bpf_filter

    def accepts(self, frame: bytes, wirelen: int) -> bool:
        return self._run(self._address, frame, wirelen, len(frame)) != 0
