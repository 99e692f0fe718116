"""An executable's ELF file: its sections, the bytes at a virtual address, pointers stored in
it (with the relocations of a position-independent executable) and the functions its symbol
tables define.

pyelftools parses the headers; the bytes are read with pread where they are needed, so a
100 MB binary costs what the few tables we look at cost, not a copy of the file. (Not mmap:
a file cut short while mapped raises SIGBUS, which would end the capture process.)
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile

ELF_MAGIC = b"\x7fELF"
PT_LOAD = "PT_LOAD"
PF_W = 2
R_X86_64_RELATIVE = 8
STT_FUNC = 2
SHN_UNDEF = 0

FIND_CHUNK = 8 << 20
_rela = struct.Struct("<QQq")
_sym64 = struct.Struct("<IBBHQQ")


def _string_table(elf: "ELFFile", index: int) -> tuple[int, int]:
    section = elf.get_section(index)
    return section["sh_offset"], section["sh_size"]


class ElfImageError(ValueError):
    """Not an ELF file this can read; the message says why."""


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    address: int        # virtual address (0 for a section not loaded)
    offset: int         # in the file
    size: int


@dataclass(frozen=True, slots=True)
class Segment:
    address: int
    offset: int
    file_size: int
    writable: bool


class ElfImage:
    """One ELF file. Use as a context manager, or close()."""

    def __init__(self, path: str) -> None:
        # here, not at the top: the dissection imports this package and reads no ELF file
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        self.path = path
        self._file: BinaryIO = open(path, "rb")
        try:
            self._size = os.fstat(self._file.fileno()).st_size
            if self._size == 0:
                raise ElfImageError(f"{path}: empty file")
            if self.file_bytes(0, 4) != ELF_MAGIC:
                raise ElfImageError(f"{path}: not an ELF file")
            try:
                elf = ELFFile(self._file)
                self.machine = elf["e_machine"]
                self.position_independent = elf["e_type"] == "ET_DYN"
                self.sections = {s.name: Section(s.name, s["sh_addr"], s["sh_offset"],
                                                 0 if s["sh_type"] == "SHT_NOBITS" else s["sh_size"])
                                 for s in elf.iter_sections() if s.name}
                self.segments = [Segment(p["p_vaddr"], p["p_offset"], p["p_filesz"],
                                         bool(p["p_flags"] & PF_W))
                                 for p in elf.iter_segments() if p["p_type"] == PT_LOAD]
                self._rela = [self.sections[s.name] for s in elf.iter_sections()
                              if s["sh_type"] == "SHT_RELA" and s.name in self.sections]
                self._symtabs = [(self.sections[s.name], _string_table(elf, s["sh_link"]))
                                 for s in elf.iter_sections()
                                 if s["sh_type"] in ("SHT_SYMTAB", "SHT_DYNSYM")
                                 and s.name in self.sections]
                self.elfclass = elf.elfclass
            except (ELFError, KeyError, ValueError, struct.error) as error:
                raise ElfImageError(f"{path}: damaged ELF headers ({error})") from None
            self._relocations: dict[int, int] | None = None
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ElfImage:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    # -- sections and bytes ---------------------------------------------------------------
    @property
    def has_symbol_table(self) -> bool:
        return ".symtab" in self.sections

    def section(self, *names: str) -> Section | None:
        """The first section found under one of `names` (a name may also end another
        section's name: ".gopclntab" finds a PIE's ".data.rel.ro.gopclntab")."""
        for name in names:
            if name in self.sections:
                return self.sections[name]
        for name in names:
            for section in self.sections.values():
                if section.name.endswith(name):
                    return section
        return None

    def section_bytes(self, section: Section) -> bytes:
        return self.file_bytes(section.offset, section.size)

    def find(self, needle: bytes, offset: int, size: int) -> int:
        """Where `needle` first occurs in the file's bytes [offset, offset + size), or -1."""
        end = min(offset + size, self._size)
        at = offset
        while at < end:
            chunk = self.file_bytes(at, min(FIND_CHUNK, end - at))
            found = chunk.find(needle)
            if found >= 0 and at + found + len(needle) <= end:
                return at + found
            if at + len(chunk) >= end or not chunk:
                return -1
            at += max(len(chunk) - len(needle) + 1, 1)   # a needle across the boundary
        return -1

    def file_bytes(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes at a file offset (fewer at the end of the file)."""
        if offset < 0 or size <= 0 or offset >= self._size:
            return b""
        return os.pread(self._file.fileno(), min(size, self._size - offset), offset)

    def read(self, address: int, size: int) -> bytes:
        """`size` bytes at a virtual address; ElfImageError when the file does not hold them."""
        for segment in self.segments:
            start = address - segment.address
            if 0 <= start and start + size <= segment.file_size:
                data = self.file_bytes(segment.offset + start, size)
                if len(data) == size:
                    return data
        raise ElfImageError(f"{self.path}: address {address:#x} (+{size}) is not in the file")

    def pointer(self, address: int) -> int:
        """The 8-byte pointer stored at a virtual address. A position-independent executable
        may leave it 0 in the file, its value in an R_X86_64_RELATIVE relocation."""
        value = int.from_bytes(self.read(address, 8), "little")
        if value == 0 and self._rela:
            value = self._relative_relocations().get(address, 0)
        return value

    def _relative_relocations(self) -> dict[int, int]:
        if self._relocations is None:
            self._relocations = {}
            for section in self._rela:
                data = self.section_bytes(section)
                usable = len(data) - len(data) % _rela.size
                for offset, info, addend in _rela.iter_unpack(data[:usable]):
                    if info & 0xFFFFFFFF == R_X86_64_RELATIVE:
                        self._relocations[offset] = addend
        return self._relocations

    # -- symbols --------------------------------------------------------------------------
    def address_of(self, offset: int) -> int | None:
        """The virtual address a file offset is loaded at, or None."""
        for segment in self.segments:
            if segment.offset <= offset < segment.offset + segment.file_size:
                return segment.address + offset - segment.offset
        return None

    def defined_functions(self, names: set[str]) -> set[str]:
        """Which of `names` the file's own symbol tables (.symtab, .dynsym) define as
        functions."""
        return {name for name, (_value, function) in self.symbols(names).items() if function}

    def symbols(self, names: set[str]) -> dict[str, tuple[int, bool]]:
        """The symbols among `names` that the file's own symbol tables (.symtab, .dynsym)
        define: name -> (value, is a function). The string tables are searched first, so a
        file without them costs a few byte searches, not a walk over its symbols."""
        found: dict[str, tuple[int, bool]] = {}
        if self.elfclass != 64:
            return found
        for symtab, (strings_offset, strings_size) in self._symtabs:
            wanted: dict[int, str] = {}
            for name in names - set(found):
                needle = name.encode() + b"\x00"
                at = self.find(needle, strings_offset, strings_size)
                while at >= 0:
                    wanted[at - strings_offset] = name
                    at = self.find(needle, at + 1, strings_offset + strings_size - at - 1)
            if not wanted:
                continue
            data = self.section_bytes(symtab)
            usable = len(data) - len(data) % _sym64.size
            for st_name, st_info, _other, st_shndx, st_value, _size in _sym64.iter_unpack(data[:usable]):
                name = wanted.get(st_name)
                if name is not None and st_shndx != SHN_UNDEF and st_value and name not in found:
                    found[name] = (st_value, st_info & 0xF == STT_FUNC)
        return found
