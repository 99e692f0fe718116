"""Finding what the TLS probes hook in an executable: Go's crypto/tls (version, function table,
RET instructions, the stack check, *net.TCPConn's type hash) in the ways Go binaries come
(symbols or stripped, internal or external linking, PIE, no section headers), OpenSSL linked
statically, and the diagnosis for what cannot be hooked. Real binaries built from
tests/support/tlsprograms/ (support/programs.py); no eBPF needed."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from support.programs import (ProgramUnavailable, go_program, static_openssl_client,
                              with_go_version, without_section_headers)
from worker.sources.ebpf.elfimage import ElfImage, ElfImageError
from worker.sources.ebpf.executables import ExecutableError, inspect_executable
from worker.sources.ebpf.gobinary import (TLS_READ, TLS_WRITE, after_stack_check, go_version,
                                          inspect_go, ret_addresses)
from worker.sources.ebpf.gopclntab import FunctionTable, PclntabError
from worker.sources.ebpf.program import GO_OFFSETS, render

VARIANTS = ("plain", "stripped", "external-pie")


@pytest.fixture(scope="module")
def binaries() -> dict[str, Path]:
    try:
        return {variant: go_program("gohttps", variant) for variant in VARIANTS}
    except ProgramUnavailable as error:
        pytest.skip(str(error))


def objdump_rets(binary: Path, function: str) -> tuple[int, list[int]]:
    """(entry, RET addresses) of a function as Go's own disassembler lists them."""
    pattern = "^" + re.escape(function) + "$"
    out = subprocess.run(["go", "tool", "objdump", "-s", pattern, str(binary)], check=True,
                         capture_output=True, text=True).stdout
    addresses = [(int(m.group(1), 16), m.group(2)) for m in
                 re.finditer(r"^\s+\S*:\d+\s+0x([0-9a-f]+)\s+[0-9a-f]+\s+(\w+)", out, re.M)]
    return addresses[0][0], [at for at, op in addresses if op == "RET"]


def test_probe_points_agree_with_the_go_toolchain(binaries):
    with ElfImage(str(binaries["plain"])) as image:
        tls = inspect_go(image)
    assert tls is not None
    for points, name in ((tls.write, TLS_WRITE), (tls.read, TLS_READ)):
        entry, rets = objdump_rets(binaries["plain"], name)
        assert (points.entry, list(points.returns)) == (entry, rets)
        assert points.entry < points.call < points.entry + 16   # past the stack check
    version = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.split()[2]
    assert tls.version == version
    assert not tls.stripped and tls.notes == []


def test_every_build_variant_gives_the_same_functions_and_type_hash(binaries, tmp_path):
    sectionless = without_section_headers(binaries["stripped"], tmp_path / "sectionless")
    found = {}
    for variant, path in [*binaries.items(), ("sectionless", sectionless)]:
        with ElfImage(str(path)) as image:
            found[variant] = inspect_go(image)
    plain, stripped = found["plain"], found["stripped"]
    assert (stripped.write, stripped.read) == (plain.write, plain.read)   # same code, no symbols
    assert stripped.notes == [
        "no symbol table (stripped): crypto/tls functions found through .gopclntab"]
    # the symbol's itab and the one found walking .itablink carry the same hash
    assert stripped.tcpconn_hash == plain.tcpconn_hash is not None
    external = found["external-pie"]
    entry, rets = objdump_rets(binaries["external-pie"], TLS_WRITE)
    assert (external.write.entry, list(external.write.returns)) == (entry, rets)
    assert external.notes == ["crypto/tls functions found through runtime.pclntab"]
    assert external.tcpconn_hash == plain.tcpconn_hash
    bare = found["sectionless"]
    assert (bare.write, bare.read, bare.version) == (plain.write, plain.read, plain.version)
    assert bare.tcpconn_hash is None
    assert bare.notes[1].startswith("no *net.TCPConn itab (no .itablink section, no symbols)")


def test_the_struct_offsets_agree_with_the_binarys_dwarf(binaries):
    """GO_OFFSETS (where the socket of a *tls.Conn is) against the layout the compiler wrote
    into the debug information of the Go installed here."""
    wanted = {("crypto/tls.Conn", "conn"): GO_OFFSETS["GO_TLS_CONN_CONN"],
              ("runtime.itab", "hash"): GO_OFFSETS["GO_ITAB_HASH"],
              ("net.TCPConn", "conn"): GO_OFFSETS["GO_TCPCONN_NETFD"],
              ("net.conn", "fd"): 0,
              ("net.netFD", "pfd"): 0,
              ("internal/poll.FD", "Sysfd"): GO_OFFSETS["GO_NETFD_SYSFD"]}
    types = {struct_name for struct_name, _ in wanted}
    found: dict[tuple[str, str], int] = {}
    with open(binaries["plain"], "rb") as file:
        for unit in ELFFile(file).get_dwarf_info().iter_CUs():
            for die in unit.iter_DIEs():
                name = die.attributes.get("DW_AT_name")
                if die.tag != "DW_TAG_structure_type" or name is None \
                        or name.value.decode() not in types:
                    continue
                for member in die.iter_children():
                    key = (name.value.decode(), member.attributes["DW_AT_name"].value.decode())
                    if key in wanted:
                        found[key] = member.attributes["DW_AT_data_member_location"].value
            if len(found) == len(wanted):
                break
    assert found == wanted


def test_a_go_binary_without_tls_is_not_hooked(binaries):
    gofmt = Path(shutil.which("go") or "go").resolve().parent / "gofmt"   # makes no connection
    with ElfImage(str(gofmt)) as image:
        assert go_version(image).startswith("go1.")
        assert inspect_go(image) is None
    assert inspect_executable(str(gofmt)) is None


def test_go_before_1_17_is_named_unsupported(binaries, tmp_path):
    old = with_go_version(binaries["plain"], tmp_path / "old", "go1.16.9")
    with pytest.raises(ExecutableError) as caught:
        inspect_executable(str(old))
    assert str(caught.value) == ("go1.16.9: Go before 1.17 passes arguments on the stack (ABI0); "
                                 "only the register ABI of Go 1.17+ is supported")
    assert caught.value.version == "go1.16.9"


def test_another_architecture_is_named_unsupported(binaries, tmp_path):
    foreign = tmp_path / "arm64"
    shutil.copy(binaries["stripped"], foreign)
    with open(foreign, "r+b") as file:
        file.seek(0x12)                                  # e_machine
        file.write(struct.pack("<H", 183))               # EM_AARCH64
    with pytest.raises(ExecutableError, match=r"go1\.\d+\.\d+ for EM_AARCH64: only x86-64 Go "
                                              r"binaries are probed"):
        inspect_executable(str(foreign))


def test_a_function_table_that_cannot_be_found_is_named(binaries, tmp_path):
    """A packed binary keeps the names but not a table: said so, not guessed at."""
    bare = without_section_headers(binaries["stripped"], tmp_path / "packed")
    data = bytearray(bare.read_bytes())
    for magic in (b"\xf0\xff\xff\xff\x00\x00\x01\x08", b"\xf1\xff\xff\xff\x00\x00\x01\x08"):
        data = data.replace(magic, b"\x00" * 8)
    bare.write_bytes(bytes(data))
    with pytest.raises(ExecutableError, match=r"no function table found \(no \.gopclntab "
                                              r"section, no runtime\.pclntab symbol, no table "
                                              r"header in the file: a packed binary\?\): "
                                              r"crypto/tls\.\(\*Conn\)\.Read/Write cannot be "
                                              r"located"):
        inspect_executable(str(bare))


def test_a_damaged_function_table_is_named(binaries, tmp_path):
    broken = tmp_path / "broken"
    shutil.copy(binaries["plain"], broken)
    with ElfImage(str(broken)) as image:
        table = image.section(".gopclntab")
        assert table is not None
    with open(broken, "r+b") as file:
        file.seek(table.offset + 8)
        file.write(struct.pack("<Q", 1 << 40))          # nfunc
    with pytest.raises(ExecutableError, match=r"function table: \.gopclntab: function table of "
                                              r"1099511627776 functions does not fit"):
        inspect_executable(str(broken))


def test_static_openssl_is_found_in_the_executables_own_symbols():
    try:
        client = static_openssl_client()
    except ProgramUnavailable as error:
        pytest.skip(str(error))
    code = inspect_executable(str(client))
    assert code is not None and code.openssl and code.go is None
    assert code.kind == "openssl-static"
    with ElfImage(str(client)) as image:
        assert image.defined_functions({"SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex",
                                         "SSL_nothing"}) == {"SSL_write", "SSL_read",
                                                             "SSL_write_ex", "SSL_read_ex"}


def test_executables_without_tls_code_or_unreadable_are_left_alone(tmp_path, binaries):
    # a dynamically linked program that imports SSL_write from libssl does not define it
    assert inspect_executable(shutil.which("curl") or "/usr/bin/curl") is None
    assert inspect_executable(sys.executable) is None
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "empty").write_bytes(b"")
    for name in ("script", "empty", "missing"):
        assert inspect_executable(str(tmp_path / name)) is None
    # half a Go binary: its headers point past the end of the file
    half = tmp_path / "half"
    half.write_bytes(binaries["plain"].read_bytes()[:len(binaries["plain"].read_bytes()) // 2])
    try:
        code = inspect_executable(str(half))
    except ExecutableError as error:
        assert str(error)
    else:
        assert code is None


def test_elf_image_reads_addresses_and_says_what_is_not_in_the_file(binaries):
    with ElfImage(str(binaries["plain"])) as image:
        text = image.section(".text")
        assert text is not None and image.read(text.address, 4) == image.file_bytes(text.offset, 4)
        assert image.address_of(text.offset) == text.address
        with pytest.raises(ElfImageError, match=r"address 0x10 \(\+8\) is not in the file"):
            image.read(0x10, 8)
    with pytest.raises(ElfImageError, match="not an ELF file"):
        ElfImage(__file__)


def test_go_version_of_a_binary_without_build_info_is_empty(tmp_path):
    with ElfImage(sys.executable) as image:
        assert go_version(image) == ""


@pytest.mark.parametrize(("data", "message"), [
    (b"", "has no header"),
    (b"\x00" * 64, "magic 0x0 is not a Go one"),
    (struct.pack("<IBBBB", 0xFFFFFFFB, 0, 0, 1, 8) + b"\x00" * 64, "Go 1.2-1.15"),
    (struct.pack("<IBBBB", 0xFFFFFFF0, 0, 0, 1, 4) + b"\x00" * 64, "pointer size 4"),
    (struct.pack("<IBBBB", 0xFFFFFFF0, 0, 0, 1, 8) + b"\x00" * 8, "header is cut short"),
    (struct.pack("<IBBBB8Q", 0xFFFFFFF0, 0, 0, 1, 8, 5, 0, 0, 72, 0, 0, 0, 72) + b"\x00" * 8,
     "function table of 5 functions does not fit in 80 bytes"),
])
def test_function_tables_that_do_not_parse(data, message):
    with pytest.raises(PclntabError, match=re.escape(message)):
        FunctionTable(data)


def test_a_function_table_built_by_hand():
    """Go 1.18 layout: header, names, then the table {entryoff, funcoff} and the records."""
    names = b"main.a\x00crypto/tls.(*Conn).Write\x00"
    names_at = 72
    table_at = names_at + len(names)
    records_at = 3 * 8            # after 2 entries and the end
    table = struct.pack("<IIIII", 0x0, records_at, 0x40, records_at + 8, 0x90)
    records = struct.pack("<Ii", 0x0, 0) + struct.pack("<Ii", 0x40, 7)
    header = struct.pack("<IBBBB8Q", 0xFFFFFFF0, 0, 0, 1, 8, 2, 0, 0x401000, names_at, 0, 0, 0,
                         table_at)
    parsed = FunctionTable(header + names + table + b"\x00" * 4 + records)
    [write] = parsed.find({TLS_WRITE}).values()
    assert (write.entry, write.end) == (0x401040, 0x401090)
    assert parsed.function_at(0x401001).name == "main.a"
    assert parsed.function_at(0x40108F).name == TLS_WRITE
    assert parsed.function_at(0x401090) is None and parsed.function_at(0x400FFF) is None
    assert parsed.find({"nothing"}) == {}
    # a record outside the data: said so, not an IndexError
    cut = FunctionTable(header + names + table + b"\x00" * 4 + records[:6])
    with pytest.raises(PclntabError, match="function record at 128 is outside the table"):
        cut.find({TLS_WRITE})


def test_rets_are_instructions_not_bytes():
    code = bytes.fromhex("b8c3c3c3c3"      # mov eax, 0xc3c3c3c3
                         "c3"              # ret
                         "cc"              # int3 (padding)
                         "c20800")         # ret 8
    assert ret_addresses(code, 0x1000) == (0x1005, 0x1007)


def test_the_call_probe_goes_past_the_stack_check():
    checked = bytes.fromhex("4c8d642498"     # lea r12, [rsp - 0x68]
                            "4d3b6610"       # cmp r12, qword ptr [r14 + 0x10]
                            "0f8664070000"   # jbe morestack
                            "4881ece8000000")  # sub rsp, 0xe8
    assert after_stack_check(checked, 0x5000) == 0x5000 + 5 + 4 + 6
    small = bytes.fromhex("493b6610" "0f86c2030000" "4883ec68")   # cmp rsp, [r14+0x10]; jbe
    assert after_stack_check(small, 0x6000) == 0x6000 + 10
    leaf = bytes.fromhex("4889c8" "c3")     # mov rax, rcx; ret: no check, the entry
    assert after_stack_check(leaf, 0x7000) == 0x7000


def test_the_program_carries_the_go_probes_only_where_they_compile():
    with_go = render(go=True)
    without = render(go=False)
    assert "int go_return(struct pt_regs *ctx)" in with_go and "go_tcpconn_hashes" in with_go
    assert "go_" not in without.replace("GO_", "")
    for name, value in GO_OFFSETS.items():
        assert f"#define {name} {value}\n" in with_go
    with pytest.raises(ValueError, match="chunks_per_call 0"):
        render(chunks_per_call=0)


def test_searching_the_file_finds_a_needle_across_read_boundaries(binaries, tmp_path,
                                                                   monkeypatch):
    import worker.sources.ebpf.elfimage as elfimage
    monkeypatch.setattr(elfimage, "FIND_CHUNK", 64)
    data = bytearray(binaries["stripped"].read_bytes())
    at = 64 * 100 - 4                            # across a 64-byte read (in code: not run)
    data[at:at + 10] = b"NEEDLE-123"
    path = tmp_path / "needle"
    path.write_bytes(bytes(data))
    with ElfImage(str(path)) as image:
        assert image.find(b"NEEDLE-123", 0, len(data)) == at
        assert image.find(b"NEEDLE-123", at + 1, len(data)) == -1
        assert image.find(b"NEEDLE-123", 0, at + 9) == -1    # the range ends inside it
        assert image.file_bytes(len(data) - 2, 10) == bytes(data[-2:])
        assert image.file_bytes(len(data) + 5, 10) == b""
