"""Go's function table (.gopclntab): every function's name and entry address, in every Go
binary, stripped or not (the runtime needs it for stack traces and the garbage collector).

Layouts, from the Go sources (src/runtime/symtab.go `pcHeader`, src/debug/gosym/pclntab.go):
- Go 1.16 and 1.17, magic 0xfffffffa: header {magic u32, pad u8 u8, minLC u8, ptrSize u8,
  nfunc, nfiles, funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset: uintptr};
  the function table at pclnOffset holds nfunc {entry, funcoff: uintptr} and the end PC; a
  function record starts {entry: uintptr, nameoff: int32}.
- Go 1.18 and 1.19 (0xfffffff0), 1.20 and later (0xfffffff1): the header adds textStart after
  nfiles; table entries are {entryoff, funcoff: uint32} relative to textStart; a function
  record starts {entryOff: uint32, nameOff: int32}.
Offsets in the header are from the header's start; nameoff is into the name table
(funcnameOffset), funcoff into the function table (pclnOffset).

Pure: bytes in, addresses and names out.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

MAGIC_GO1_16 = 0xFFFFFFFA
MAGIC_GO1_18 = 0xFFFFFFF0
MAGIC_GO1_20 = 0xFFFFFFF1
MAGIC_GO1_2 = 0xFFFFFFFB      # Go 1.2 to 1.15: not read (no register ABI to probe with)
MAGICS = {MAGIC_GO1_16: "Go 1.16/1.17", MAGIC_GO1_18: "Go 1.18/1.19", MAGIC_GO1_20: "Go 1.20+",
          MAGIC_GO1_2: "Go 1.2-1.15"}


class PclntabError(ValueError):
    """A function table that does not parse; the message says where."""


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    entry: int        # virtual address of the first instruction
    end: int          # address after the last byte (the next function's entry)


class FunctionTable:
    """The functions of one .gopclntab. text_start: the address the 1.18+ entry offsets
    count from when the header's own field is 0 (left to a relocation in the file)."""

    def __init__(self, data: bytes, text_start: int = 0) -> None:
        self._data = data
        if len(data) < 8:
            raise PclntabError(f"function table of {len(data)} bytes has no header")
        magic, pad1, pad2, _min_lc, ptr_size = struct.unpack_from("<IBBBB", data, 0)
        if magic not in MAGICS or pad1 or pad2:
            raise PclntabError(f"function table magic {magic:#x} is not a Go one")
        self.magic = magic
        if magic == MAGIC_GO1_2:
            raise PclntabError("Go 1.2-1.15 function table: not read (those versions have no "
                               "register ABI)")
        if ptr_size != 8:
            raise PclntabError(f"pointer size {ptr_size}: only 64-bit binaries are read")
        words = 8 if magic != MAGIC_GO1_16 else 7
        try:
            header = struct.unpack_from(f"<{words}Q", data, 8)
        except struct.error:
            raise PclntabError("function table header is cut short") from None
        if magic == MAGIC_GO1_16:
            nfunc, _nfiles, names_at, _cu, _files, _pctab, table_at = header
            self.text_start = 0
        else:
            nfunc, _nfiles, own_text, names_at, _cu, _files, _pctab, table_at = header
            self.text_start = own_text or text_start
        self._names_at = names_at
        self._table_at = table_at
        entry_size = 16 if magic == MAGIC_GO1_16 else 8
        if nfunc <= 0 or table_at + (nfunc + 1) * entry_size > len(data) or names_at >= len(data):
            raise PclntabError(f"function table of {nfunc} functions does not fit in "
                               f"{len(data)} bytes")
        self._nfunc = nfunc
        raw = data[table_at:table_at + nfunc * entry_size]
        if magic == MAGIC_GO1_16:
            pairs = list(struct.iter_unpack("<QQ", raw))
            self._end = struct.unpack_from("<Q", data, table_at + nfunc * entry_size)[0]
            self._entries = [entry for entry, _ in pairs]
        else:
            pairs = [(self.text_start + e, f) for e, f in struct.iter_unpack("<II", raw)]
            self._end = self.text_start + struct.unpack_from("<I", data, table_at + nfunc * entry_size)[0]
            self._entries = [entry for entry, _ in pairs]
        self._funcoffs = [funcoff for _, funcoff in pairs]
        self._name_offsets: list[int] | None = None

    def __len__(self) -> int:
        return self._nfunc

    def _name_offset(self, index: int) -> int:
        record = self._table_at + self._funcoffs[index]
        skip = 8 if self.magic == MAGIC_GO1_16 else 4
        if record + skip + 4 > len(self._data):
            raise PclntabError(f"function record at {record} is outside the table")
        return struct.unpack_from("<i", self._data, record + skip)[0]

    def _name(self, name_offset: int) -> str:
        start = self._names_at + name_offset
        end = self._data[start:start + 4096].find(b"\x00")
        if name_offset < 0 or end < 0:
            raise PclntabError(f"function name at {name_offset} is not terminated")
        return self._data[start:start + end].decode("utf-8", "replace")

    def _bounds(self, index: int) -> tuple[int, int]:
        end = self._entries[index + 1] if index + 1 < self._nfunc else self._end
        return self._entries[index], end

    def find(self, names: set[str]) -> dict[str, Function]:
        """The functions named in `names` that the table holds. Names are found as bytes in
        the name table first, so only a few records are compared."""
        names_region = self._data[self._names_at:self._table_at] \
            if self._names_at < self._table_at else self._data[self._names_at:]
        wanted: dict[int, str] = {}
        for name in names:
            needle = name.encode() + b"\x00"
            at = names_region.find(needle)
            while at >= 0:
                if at == 0 or names_region[at - 1] == 0:
                    wanted[at] = name
                at = names_region.find(needle, at + 1)
        found: dict[str, Function] = {}
        if not wanted:
            return found
        for index in range(self._nfunc):
            name = wanted.get(self._name_offset(index))
            if name is not None and name not in found:
                found[name] = Function(name, *self._bounds(index))
        return found

    def function_at(self, address: int) -> Function | None:
        """The function whose code holds `address`, or None."""
        if not self._entries or address < self._entries[0] or address >= self._end:
            return None
        index = bisect.bisect_right(self._entries, address) - 1
        return Function(self._name(self._name_offset(index)), *self._bounds(index))
