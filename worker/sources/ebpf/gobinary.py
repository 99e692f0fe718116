"""What a Go executable needs for its crypto/tls cleartext to be probed: its Go version, the
entry and every RET of crypto/tls.(*Conn).Write and .Read, and the type hash of
*net.TCPConn (how the probe knows the connection's socket can be read by offsets).

- The version comes from .go.buildinfo (src/debug/buildinfo/buildinfo.go): a 32-byte header
  "\\xff Go buildinf:", pointer size, flags; with flag 2 (Go 1.18+) the version follows as a
  varint-prefixed string, before that two pointers lead to the version's string header.
- Functions come from the function table (gopclntab.py), present stripped or not: the
  .gopclntab section; where external linking (cgo, -buildmode=pie) merged it into
  .data.rel.ro, the runtime.pclntab symbol; where neither is left (stripped and externally
  linked, or section headers removed), its header found in the file by its magic.
- RETs: Go moves goroutine stacks, so a uretprobe (which replaces the return address on the
  stack) crashes the program or misreports; the probes go on each RET instruction instead,
  found by disassembling the function with capstone.
- The call probe goes just past the prologue's stack check (`CMP [R14+0x10]; JBE
  morestack`): when the stack must grow, runtime.morestack copies it and runs the function
  again from its first instruction, which a probe there would count as a second call. The
  arguments are still in their registers at that point.
- *net.TCPConn's type hash: tls.Conn.conn is a net.Conn interface whose itab tells the
  dynamic type; every itab of one type carries the type's hash at offset 16
  (src/runtime/runtime2.go `itab`, internal/abi `ITab` since 1.22). It is read from the
  symbol go.itab.*net.TCPConn,net.Conn (go:itab. since 1.20), or, stripped, from any itab
  in .itablink whose methods resolve (through the function table) to net.(*TCPConn)
  methods; the hash function itself changed between Go versions (md5, then sha256-based),
  so it is read, never computed.

Go before 1.17 passes arguments on the stack (ABI0): unsupported, and said so.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

from worker.sources.ebpf.elfimage import ElfImage, ElfImageError, Section
from worker.sources.ebpf.gopclntab import (MAGIC_GO1_16, MAGIC_GO1_18, MAGIC_GO1_20, Function,
                                           FunctionTable, PclntabError)

BUILDINFO_MAGIC = b"\xff Go buildinf:"
TLS_WRITE = "crypto/tls.(*Conn).Write"
TLS_READ = "crypto/tls.(*Conn).Read"
TLS_FUNCTIONS = (TLS_WRITE, TLS_READ)
TCPCONN_METHOD_PREFIX = "net.(*TCPConn)."
TCPCONN_ITAB_SYMBOLS = ("go:itab.*net.TCPConn,net.Conn", "go.itab.*net.TCPConn,net.Conn")
PCLNTAB_SYMBOL = "runtime.pclntab"
# A function table's header: magic, two zero pad bytes, the x86 instruction quantum 1, the
# pointer size 8 (Go 1.16+ layouts, the ones a register ABI binary has).
PCLNTAB_HEADERS = tuple(struct.pack("<IBBBB", magic, 0, 0, 1, 8)
                        for magic in (MAGIC_GO1_20, MAGIC_GO1_18, MAGIC_GO1_16))
TEXT_START_OFFSET = 24        # of the 1.18+ header's textStart field
ITAB_FUN_OFFSET = 24          # inter, _type, hash + pad, then fun[]
ITAB_HASH_OFFSET = 16
# Register ABI (ABIInternal) on amd64 since Go 1.17 (src/cmd/compile/abi-internal.md).
FIRST_REGISTER_ABI = (1, 17)
# The most .itablink entries read looking for a *net.TCPConn itab (big binaries have ~10k).
MAX_ITABS = 200_000
# A function larger than this is not crypto/tls's Read/Write (they are ~1-2 KiB).
MAX_FUNCTION_BYTES = 1 << 20

_VERSION = re.compile(r"^go(\d+)\.(\d+)")


class GoBinaryError(ValueError):
    """The binary cannot be probed; the message names what is missing."""


@dataclass(frozen=True, slots=True)
class ProbePoints:
    name: str
    entry: int                    # the function's first instruction
    call: int                     # where the call probe goes: past the stack check
    returns: tuple[int, ...]      # addresses of its RET instructions


@dataclass(slots=True)
class GoTls:
    """A Go binary's crypto/tls, ready to probe."""
    version: str                              # "go1.19.8", or "" when unreadable
    write: ProbePoints
    read: ProbePoints
    tcpconn_hash: int | None                  # None: sockets come from each call's syscalls
    stripped: bool                            # no .symtab: functions found in .gopclntab
    notes: list[str] = field(default_factory=list)


def is_go(image: ElfImage) -> bool:
    return (image.section(".go.buildinfo") is not None or image.section(".gopclntab") is not None
            or ".note.go.buildid" in image.sections or _buildinfo_by_search(image) is not None)


def go_version(image: ElfImage) -> str:
    """The Go version the binary was built with ("go1.19.8"), "" when it cannot be read."""
    section = image.section(".go.buildinfo")
    if section is not None:
        header = image.file_bytes(section.offset, 64)
    else:
        header = _buildinfo_by_search(image) or b""
    if not header.startswith(BUILDINFO_MAGIC) or len(header) < 32:
        return ""
    pointer_size, flags = header[14], header[15]
    try:
        if flags & 2:        # Go 1.18+: the strings follow the header, varint-prefixed
            data = header if section is None else image.file_bytes(section.offset, 32 + 10 + 64)
            return _varint_string(data, 32)
        if pointer_size != 8 or flags & 1:   # big endian or 32-bit: not a binary we probe
            return ""
        address = section.address if section is not None else 0
        if not address:
            return ""
        string_header = image.pointer(address + 16)
        text_address = image.pointer(string_header)
        length = int.from_bytes(image.read(string_header + 8, 8), "little")
        if not 0 < length < 128:
            return ""
        return image.read(text_address, length).decode("ascii", "replace")
    except (ElfImageError, IndexError, ValueError):
        return ""


def _varint_string(data: bytes, at: int) -> str:
    length, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
        if shift > 28:
            raise ValueError("varint too long")
    if not 0 < length < 128:
        raise ValueError(f"version string of {length} bytes")
    return bytes(data[at:at + length]).decode("ascii", "replace")


def _buildinfo_by_search(image: ElfImage) -> bytes | None:
    """A build info header found in the first writable segment (a binary whose section
    headers were removed keeps it there, 16-byte aligned, as debug/buildinfo searches)."""
    for segment in image.segments:
        if not segment.writable:
            continue
        data = image.file_bytes(segment.offset, min(segment.file_size, 1 << 20))
        at = data.find(BUILDINFO_MAGIC)
        while at >= 0:
            if (segment.offset + at) % 16 == 0:
                return data[at:at + 32 + 10 + 64]
            at = data.find(BUILDINFO_MAGIC, at + 1)
        return None
    return None


def version_tuple(version: str) -> tuple[int, int] | None:
    match = _VERSION.match(version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _disassembler() -> Any:
    import capstone     # here: the dissection imports this package, and needs no disassembler
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    disassembler.skipdata = True      # never stop at bytes that do not decode
    return disassembler


def ret_addresses(code: bytes, address: int) -> tuple[int, ...]:
    """The addresses of the RET instructions in one function's machine code (x86-64)."""
    return tuple(at for at, _size, mnemonic, _ops in _disassembler().disasm_lite(code, address)
                 if mnemonic in ("ret", "retq"))


def after_stack_check(code: bytes, address: int) -> int:
    """The address just past a Go function's stack check (a compare with the goroutine's
    stack guard, g.stackguard0 at [r14 + 0x10], then a conditional jump to morestack); the
    function's entry when it has none (a leaf function marked nosplit)."""
    compared = False
    for index, (at, size, mnemonic, operands) in enumerate(
            _disassembler().disasm_lite(code[:96], address)):
        if index >= 10 or mnemonic in ("ret", "call", "jmp"):
            break
        if mnemonic == "cmp" and "[r14 + 0x10]" in operands:
            compared = True
        elif compared and mnemonic.startswith("j"):
            return at + size
    return address


def _probe_points(image: ElfImage, function: Function | None) -> ProbePoints | None:
    if function is None:
        return None
    name = function.name
    size = function.end - function.entry
    if not 0 < size <= MAX_FUNCTION_BYTES:
        raise GoBinaryError(f"{name} spans {size} bytes")
    code = image.read(function.entry, size)
    returns = ret_addresses(code, function.entry)
    if not returns:
        raise GoBinaryError(f"no RET instruction found in {name}")
    return ProbePoints(name, function.entry, after_stack_check(code, function.entry), returns)


def tcpconn_type_hash(image: ElfImage, table: FunctionTable) -> int | None:
    """The type hash of *net.TCPConn, read from one of its itabs: the symbol, else a walk
    of .itablink; None when neither is there (or the binary has no such itab)."""
    symbols = image.symbols(set(TCPCONN_ITAB_SYMBOLS))
    for name in TCPCONN_ITAB_SYMBOLS:
        if name in symbols:
            try:
                return struct.unpack("<I", image.read(symbols[name][0] + ITAB_HASH_OFFSET, 4))[0]
            except ElfImageError:
                break
    section = image.section(".itablink")
    if section is None or not section.address:
        return None
    count = min(section.size // 8, MAX_ITABS)
    for index in range(count):
        try:
            itab = image.pointer(section.address + 8 * index)
            method = image.pointer(itab + ITAB_FUN_OFFSET)
        except ElfImageError:
            continue
        try:
            function = table.function_at(method)
        except PclntabError:
            continue
        if function is None or function.entry != method \
                or not function.name.startswith(TCPCONN_METHOD_PREFIX):
            continue
        try:
            return struct.unpack("<I", image.read(itab + ITAB_HASH_OFFSET, 4))[0]
        except ElfImageError:
            return None
    return None


def function_table(image: ElfImage) -> tuple[FunctionTable, str] | None:
    """The binary's function table and where it was found: the .gopclntab section, the
    runtime.pclntab symbol, or its header searched for in the file. None when there is
    none; PclntabError when there is one but it does not parse."""
    candidates: list[tuple[int, int, str]] = []     # (file offset, size, how)
    section = image.section(".gopclntab")
    if section is not None:
        candidates.append((section.offset, section.size, ".gopclntab"))
    symbol = image.symbols({PCLNTAB_SYMBOL}).get(PCLNTAB_SYMBOL)
    if symbol is not None:
        for segment in image.segments:
            start = symbol[0] - segment.address
            if 0 <= start < segment.file_size:
                candidates.append((segment.offset + start, segment.file_size - start,
                                   PCLNTAB_SYMBOL))
    if not candidates:
        for segment in image.segments:
            for header in PCLNTAB_HEADERS:
                at = image.find(header, segment.offset, segment.file_size)
                while at >= 0 and len(candidates) < 16:
                    end = segment.offset + segment.file_size
                    candidates.append((at, end - at, "its header, searched for in the file"))
                    at = image.find(header, at + 1, end - at - 1)
    error: PclntabError | None = None
    for offset, size, how in candidates:
        data = image.file_bytes(offset, size)
        address = image.address_of(offset)
        try:
            text_start = image.pointer(address + TEXT_START_OFFSET) if address else 0
        except ElfImageError:
            text_start = 0
        try:
            table = FunctionTable(data, text_start)
            if how == ".gopclntab" or table.find({TLS_WRITE}):
                return table, how
        except PclntabError as failed:
            error = error or PclntabError(f"{how}: {failed}")
    if error is not None:
        raise error
    return None


def _mentions_tls(image: ElfImage, section: Section | None) -> bool:
    """Whether the function table (or, without its section, any loaded part of the file)
    names crypto/tls's Conn.Write: a cheap test before anything is parsed."""
    needle = TLS_WRITE.encode() + b"\x00"
    if section is not None:
        return image.find(needle, section.offset, section.size) >= 0
    return any(image.find(needle, segment.offset, segment.file_size) >= 0
               for segment in image.segments)


def inspect_go(image: ElfImage) -> GoTls | None:
    """The probe points of a Go binary's crypto/tls. None when the binary does not contain
    crypto/tls's Conn.Write (a Go program that makes no TLS connection). GoBinaryError,
    naming what is missing, when it does but cannot be probed."""
    section = image.section(".gopclntab")
    if not _mentions_tls(image, section):
        return None
    version = go_version(image)
    label = version or "Go binary (version unreadable)"
    if image.machine != "EM_X86_64":
        raise GoBinaryError(f"{label} for {image.machine}: only x86-64 Go binaries are probed")
    parsed = version_tuple(version)
    if parsed is not None and parsed < FIRST_REGISTER_ABI:
        raise GoBinaryError(f"{version}: Go before 1.17 passes arguments on the stack "
                            "(ABI0); only the register ABI of Go 1.17+ is supported")
    try:
        found = function_table(image)
    except PclntabError as error:
        raise GoBinaryError(f"{label}: function table: {error}") from None
    if found is None:
        raise GoBinaryError(f"{label}: no function table found (no .gopclntab section, no "
                            f"{PCLNTAB_SYMBOL} symbol, no table header in the file: a packed "
                            "binary?): crypto/tls.(*Conn).Read/Write cannot be located")
    table, how = found
    if parsed is None and table.magic == MAGIC_GO1_16:
        raise GoBinaryError("Go 1.16 or 1.17 (no readable version in .go.buildinfo): cannot "
                            "tell whether it uses the register ABI")
    try:
        functions = table.find(set(TLS_FUNCTIONS))
    except PclntabError as error:
        raise GoBinaryError(f"{label}: function table ({how}): {error}") from None
    write = _probe_points(image, functions.get(TLS_WRITE))
    read = _probe_points(image, functions.get(TLS_READ))
    if write is None or read is None:
        missing_name = TLS_WRITE if write is None else TLS_READ
        raise GoBinaryError(f"{label}: {missing_name} is not in its function table ({how})")
    notes = []
    stripped = not image.has_symbol_table
    if stripped:
        notes.append(f"no symbol table (stripped): crypto/tls functions found through {how}")
    elif how != ".gopclntab":
        notes.append(f"crypto/tls functions found through {how}")
    tcpconn = tcpconn_type_hash(image, table)
    if tcpconn is None:
        where = "no .itablink section" if image.section(".itablink") is None \
            else "none in .itablink"
        notes.append(f"no *net.TCPConn itab ({where}{', no symbols' if stripped else ''}): "
                     "each call's socket comes from the syscalls it makes")
    return GoTls(version, write, read, tcpconn, stripped, notes)
