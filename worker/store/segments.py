"""Capped PCAP segments: the capture process appends, the dissection follows (SegmentTail).

Layout: `<storage-dir>/pcap/%012d.pcap`, segment ids increasing from 1. Every segment is a
standard little-endian pcap file with nanosecond timestamps (shark/pcap.py, version 2.4),
valid at every moment up to its last whole packet, so tcpdump and tshark read it while it is
being written: a segment appears under its final name only once its header is on disk, and
each batch of records goes out in one write on an O_APPEND descriptor.

The disk is the bounded queue between capture and dissection: the writer never lets the total
size of all segments exceed the storage limit, not even for a moment (it evicts the oldest
segments before it writes), and a tail that falls behind the evictions jumps to the oldest
segment left and says so (shed counters and a discontinuity flag).

A PacketRef is (segment id, byte offset of the record header inside the segment).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

import msgspec

from shark.pcap import (
    HEADER_SIZE,
    MAX_SNAPLEN,
    NS,
    RECORD_HEADER_SIZE,
    FileHeader,
    PcapFormatError,
    PcapReader,
    Record,
    Stop,
    decode_header,
    decode_records,
    encode_header,
    record_struct,
    whole_records_end,
)
from shark.units import format_size
from worker.packet import PacketRef, RawPacket, StoredPacket
from worker.records import pack_packets
from worker.store.grant import IndexGrant
from worker.store.private import FILE_MODE, make_dir

MIN_SEGMENT_SIZE = 512 * 1024
MAX_SEGMENT_SIZE = 64 * 1024 * 1024
MIN_STORAGE_LIMIT = 4 * MIN_SEGMENT_SIZE

_record = record_struct()      # segments are written little endian, nanoseconds
_SEGMENT_NAME = re.compile(r"^(\d{12})\.pcap$")
_TMP_SUFFIX = ".tmp"
_READ_CHUNK = 1024 * 1024
# iter_segment reads a range of records (an entry's packets), not whole segments
_RANGE_CHUNK = 64 * 1024


class StoreError(Exception):
    """A store problem; the message is one line naming the path or value at fault."""


class SegmentEvicted(StoreError):
    """A segment that a read needs is gone: evicted to keep the storage limit."""


class StoreWriteError(StoreError):
    """The disk refused a write even after the store freed what it could; `unwritten` packets
    of the batch were not stored (the caller counts them and goes on with the next batch)."""

    def __init__(self, message: str, errno_: int | None = None, unwritten: int = 0) -> None:
        super().__init__(message)
        self.errno = errno_
        self.unwritten = unwritten


# Errors that freeing space can cure; any other write error starts a new segment instead.
_SPACE_ERRORS = (errno.ENOSPC, errno.EDQUOT)
# How often the writer measures the rest of the storage directory (the index grows beside it).
OTHER_BYTES_EVERY_S = 0.02
# How long an eviction for the index waits for the dissection to prune (unless it grows).
PRUNE_WAIT_S = 0.5
# Segments the limit holds with their index rows at least (the rotation size shrinks to that).
SEGMENTS_IN_LIMIT = 4
MIN_ROTATION_SIZE = 64 * 1024
# Segments evicted for one failed write at most: when the space is held by something else
# (a reader's open descriptor, another program), the store is not emptied in one go.
EVICT_PER_WRITE_ERROR = 2
# SegmentTail.lag_bytes() lists the storage directory for the segments after the one it reads
# at most this often (and when that one changes): the segment it reads is measured at every
# call, the newer ones as last listed (docs/OPERATIONS.md, dissection.lag_bytes).
LAG_LIST_EVERY_S = 0.1


class StoreStats(msgspec.Struct):
    bytes: int                  # total size of all segments on disk
    limit: int
    segments: int
    oldest_segment: int         # 0 when there is none
    newest_segment: int         # 0 when there is none
    oldest_ts: float | None     # epoch seconds of the oldest stored packet
    packets_written: int        # since this writer opened
    evicted_segments: int       # since this writer opened
    repaired: list[str]         # one-line notes of what recovery fixed at open
    segment_size: int = 0       # rotation threshold for this limit
    damaged_segments: int = 0   # removed at open because their pcap header was damaged
    write_errors: int = 0       # writes the disk refused (ENOSPC, EIO, ...) since open
    evicted_for_space: int = 0  # segments evicted because the disk was full (not the limit)
    other_bytes: int = 0        # the rest of the storage dir (index, WAL, temp files), as last measured
    evicted_for_other: int = 0  # segments evicted to make room for those (within evicted_segments)
    index_granted: int = 0      # room granted to the index (its files stay within it; grant.py)
    index_requests: int = 0     # the index side's requests answered
    last_write_error: str = ""  # one line: the path and the reason
    last_write_error_ts: float | None = None   # epoch seconds of that error


class SegmentInfo(NamedTuple):
    id: int
    path: Path


def segment_size_for(limit: int) -> int:
    """Rotation size: an eighth of the limit, kept between 512 KiB and 64 MiB."""
    return min(MAX_SEGMENT_SIZE, max(MIN_SEGMENT_SIZE, limit // 8))


def validate_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise StoreError(f"storage limit must be a number of bytes, got {limit!r}")
    if limit < MIN_STORAGE_LIMIT:
        raise StoreError(
            f"storage limit {format_size(limit)} is below the minimum of "
            f"{format_size(MIN_STORAGE_LIMIT)} (4 segments of {format_size(MIN_SEGMENT_SIZE)})")
    return limit


def segment_path(directory: Path, segment_id: int) -> Path:
    """The path of a segment under a storage directory."""
    return Path(directory) / "pcap" / f"{segment_id:012d}.pcap"


def list_segments(directory: Path) -> list[SegmentInfo]:
    """(id, path) of the segments under a storage directory, oldest first."""
    pcap_dir = Path(directory) / "pcap"
    found = []
    try:
        names = os.listdir(pcap_dir)
    except FileNotFoundError:
        return []
    for name in names:
        match = _SEGMENT_NAME.match(name)
        if match:
            found.append(SegmentInfo(int(match.group(1)), pcap_dir / name))
    found.sort()
    return found


def segment_ids(directory: Path) -> list[int]:
    """The ids of the segments under a storage directory, oldest first: list_segments without
    a Path per segment (the index writer asks before every write, ~4x cheaper so)."""
    try:
        names = os.listdir(os.path.join(directory, "pcap"))
    except FileNotFoundError:
        return []
    return sorted(int(found.group(1)) for found in map(_SEGMENT_NAME.match, names) if found)


def parse_header(raw: bytes, where: str) -> FileHeader:
    """The header of one of our segments (any pcap 2.x with a snaplen a record can have);
    StoreError saying what is wrong otherwise."""
    try:
        header = decode_header(raw)
    except PcapFormatError as exc:
        raise StoreError(f"{where}: {exc}") from None
    return _checked(header, where)


def _checked(header: FileHeader, where: str) -> FileHeader:
    if header.major != 2:
        raise StoreError(f"{where}: pcap version {header.major}.{header.minor}, expected 2.4")
    if not 0 < header.snaplen <= MAX_SNAPLEN:
        raise StoreError(f"{where}: snaplen {header.snaplen} in the pcap header is out of range "
                         f"1..{MAX_SNAPLEN}")
    return header


def iter_segment(path: Path, start_offset: int = HEADER_SIZE) -> Iterator[StoredPacket]:
    """(ref, linktype, ts_ns, data, wirelen) of each whole record of one segment from
    start_offset (which must be a record boundary); stops quietly at a torn or damaged tail.
    The ref's segment id comes from the file name (0 for a file not named like a segment)."""
    path = Path(path)
    match = _SEGMENT_NAME.match(path.name)
    segment_id = int(match.group(1)) if match else 0
    with open(path, "rb") as file:
        try:
            reader = PcapReader(file, start=start_offset, chunk=_RANGE_CHUNK)
        except PcapFormatError as exc:
            raise StoreError(f"{path}: {exc}") from None
        linktype = _checked(reader.header, str(path)).linktype
        reader.limit = reader.header.snaplen      # a longer record is damage in our segments
        for offset, ts_ns, data, wirelen in reader:
            yield (segment_id, offset), linktype, ts_ns, data, wirelen


class RecordFilter(Protocol):
    """What SegmentTail.read keeps of the records (worker.shard_filter.ShardFilter)."""

    def records(self, segment: int, buf: bytes, pos: int, header: FileHeader, max_records: int,
                out: list[StoredPacket], base: int) -> tuple[int, Stop, int]:
        """As decode_records over buf[pos:] (offsets from `base`), appending the records it
        keeps to `out` as StoredPackets of `segment`, the last one read always among them;
        returns (position after the last record read, why it stopped, records read)."""
        ...


class _Segment:
    __slots__ = ("id", "path", "size", "first_ts_ns")

    def __init__(self, segment_id: int, path: Path, size: int, first_ts_ns: int | None):
        self.id = segment_id
        self.path = path
        self.size = size
        self.first_ts_ns = first_ts_ns


class SegmentWriter:
    """Appends packets to rotating segments under `<directory>/pcap/`, within `limit` bytes.

    One writer per directory (an exclusive lock file says so). Opening recovers what a crash
    left: segments with a damaged header are removed, a torn last packet of the newest segment
    is cut, and writing resumes in a NEW segment (id = highest seen + 1), created at the first
    append because its header carries the linktype of its packets.
    """

    def __init__(self, directory: Path, limit: int, snaplen: int = MAX_SNAPLEN,
                 grant: IndexGrant | None = None, index_files: Iterable[str] = ()):
        self._limit = validate_limit(limit)
        if not isinstance(snaplen, int) or not 0 < snaplen <= MAX_SNAPLEN:
            raise StoreError(f"snaplen {snaplen!r} is out of range 1..{MAX_SNAPLEN}")
        self.directory = Path(directory)
        self._pcap_dir = self.directory / "pcap"
        self._snaplen = snaplen
        self._segment_size = segment_size_for(limit)
        self._segments: deque[_Segment] = deque()
        self._total = 0
        self._fd: int | None = None         # the segment being appended to, if any
        self._linktype = -1
        self._next_id = 1
        self._packets_written = 0
        self._evicted = 0
        self._damaged = 0
        self._repaired: list[str] = []
        self._write_errors = 0
        self._evicted_for_space = 0
        self._evicted_for_other = 0
        self._other = 0                     # bytes under the directory besides the segments
        # With a grant (grant.py), the index's files (index_files, at the top of the directory)
        # count as the room granted to them, not as measured: the index side stays within it.
        self._grant = grant
        self._index_files = frozenset(index_files)
        self._granted = 0
        self._grant_seq = 0
        self._index_requests = 0
        self._other_at = float("-inf")      # time.monotonic() of that measure
        self._index_measured = 0            # the index's files within _other, as measured
        self._other_when_evicted = -1       # _other when segments were last evicted for it
        self._subtrees: dict[str, int] = {}   # sizes of subdirectories measured once
        self._room_when_evicted = 0         # segment bytes left then: kept while held
        self._other_evicted_at = float("-inf")
        self._last_write_error = ""
        self._last_write_error_ts: float | None = None
        self._lock = threading.Lock()
        self._lock_fd = self._open_directory()
        try:
            self._recover()
            self._evict_until(0)
        except OSError as exc:
            os.close(self._lock_fd)
            raise StoreError(f"recovering the segments in {self._pcap_dir}: "
                             f"{exc.strerror or exc} ({exc.filename or 'directory'})") from None
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening -------------------------------------------------------------------------

    def _open_directory(self) -> int:
        try:
            make_dir(self._pcap_dir)
            lock_fd = os.open(self._pcap_dir / ".lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise StoreError(f"storage directory {self._pcap_dir}: "
                             f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise StoreError(f"storage directory {self._pcap_dir} is in use by another "
                             "writer (its .lock is held)") from None
        return lock_fd

    def _recover(self) -> None:
        self._adopt_unrenamed_segments()
        found = list_segments(self.directory)
        if found:
            self._next_id = found[-1][0] + 1
        for segment_id, path in found:
            try:
                with open(path, "rb") as file:
                    head = file.read(HEADER_SIZE + RECORD_HEADER_SIZE)
                    size = os.fstat(file.fileno()).st_size
                header = parse_header(head, path.name)
            except StoreError as exc:
                self._remove_damaged(path, str(exc).removeprefix(f"{path.name}: "))
                continue
            except OSError as exc:
                raise StoreError(f"cannot read segment {path}: {exc.strerror}") from None
            first_ts = None
            if len(head) == HEADER_SIZE + RECORD_HEADER_SIZE:
                sec, frac, _incl, _orig = header.record.unpack_from(head, HEADER_SIZE)
                first_ts = sec * NS + frac * header.ts_multiplier
            self._segments.append(_Segment(segment_id, path, size, first_ts))
            self._total += size
        if self._segments:
            self._repair_tail(self._segments[-1])

    def _adopt_unrenamed_segments(self) -> None:
        """A crash between writing a new segment's header and renaming it leaves a .tmp."""
        for name in os.listdir(self._pcap_dir):
            if not name.endswith(_TMP_SUFFIX):
                continue
            tmp = self._pcap_dir / name
            final = self._pcap_dir / name[: -len(_TMP_SUFFIX)]
            if _SEGMENT_NAME.match(final.name) and not final.exists():
                os.rename(tmp, final)
            else:
                tmp.unlink(missing_ok=True)

    def _remove_damaged(self, path: Path, reason: str) -> None:
        try:
            path.unlink()
        except OSError as exc:
            raise StoreError(f"cannot remove damaged segment {path}: {exc.strerror}") from None
        self._damaged += 1
        self._repaired.append(f"removed segment {path.name}: {reason}")

    def _repair_tail(self, segment: _Segment) -> None:
        """Cut a torn last packet (a crash mid-write) so the segment ends on a whole record."""
        with open(segment.path, "r+b") as file:
            data = file.read()
            header = parse_header(data, segment.path.name)
            end = whole_records_end(data, HEADER_SIZE, header, header.snaplen)
            if end < len(data):
                file.truncate(end)
                self._repaired.append(
                    f"segment {segment.path.name}: cut a torn last packet "
                    f"({len(data) - end} bytes at offset {end})")
                self._total -= len(data) - end
                segment.size = end
                if end == HEADER_SIZE:
                    segment.first_ts_ns = None

    # -- writing -------------------------------------------------------------------------

    def append(self, linktype: int, packets: list[RawPacket]) -> None:
        """Store packets (ts_ns, data, wirelen) of one linktype; data beyond snaplen is cut,
        wirelen kept. Rotates at the segment size or on a linktype change, and evicts the
        oldest segments first so that the total never exceeds the limit."""
        if not packets:
            return
        with self._lock:
            if self._lock_fd < 0:
                raise StoreError(f"the segment writer of {self._pcap_dir} is closed")
            count = len(packets)
            index = 0
            failures = 0
            while index < count:
                new = self._fd is None or linktype != self._linktype
                used = HEADER_SIZE if new else self._segments[-1].size
                room = self._rotation_size()
                if self._grant is not None:   # a segment alone fits beside the index's room
                    room = min(room, self._limit - self._other)
                if new:     # whatever the rotation size, one packet always fits a new segment
                    room = max(room, HEADER_SIZE + RECORD_HEADER_SIZE + self._snaplen)
                parts, stop, size = self._pack(packets, index, room - used)
                if stop == index:
                    if new:    # cannot happen: snaplen <= MAX_SNAPLEN < a segment's room
                        raise StoreError(f"packet {index} does not fit in an empty segment "
                                         f"of {format_size(self._segment_size)}")
                    self._finish_current()         # the current one is full: rotate
                    continue
                try:
                    blob = b"".join(parts)
                except TypeError:
                    bad = next(i for i, part in enumerate(parts) if not _is_bytes(part))
                    raise StoreError(
                        f"packet {index + bad // 2} of the batch cannot be stored: its data is "
                        f"{type(parts[bad]).__name__}, expected bytes; packets {index} to "
                        f"{count - 1} of the batch were not stored") from None
                try:
                    self._evict_until(size + (HEADER_SIZE if new else 0))
                    if not new and self._fd is None:
                        continue     # the current segment went too: pack again for a new one
                    if new:
                        self._start_segment(linktype, packets[index][0])
                    self._write(blob, size, stop - index)
                except StoreWriteError as exc:
                    failures += 1
                    if self._recover_from(exc, failures):
                        continue             # space was freed: the same packets again
                    exc.unwritten = count - index
                    raise
                index = stop

    def _pack(self, packets: list[RawPacket], start: int, room: int
              ) -> tuple[list[bytes], int, int]:
        """Record headers and data for packets[start:] that fit in `room` bytes."""
        parts: list[bytes] = []
        try:   # compiled (worker.records); it takes the packets as well formed
            stop, size = pack_packets(packets, start, room, self._snaplen, parts)
        except Exception:     # a malformed one: the plain loop says which and what is wrong
            return self._pack_checked(packets, start, room)
        return parts, stop, size

    def _pack_checked(self, packets: list[RawPacket], start: int, room: int
                      ) -> tuple[list[bytes], int, int]:
        """_pack one packet at a time, naming a malformed one in a StoreError."""
        parts: list[bytes] = []
        add = parts.append
        pack = _record.pack
        snaplen = self._snaplen
        size = 0
        index = start
        try:
            for index in range(start, len(packets)):
                ts, data, wirelen = packets[index]
                incl = len(data)
                if incl > snaplen:
                    data = data[:snaplen]
                    incl = snaplen
                if size + RECORD_HEADER_SIZE + incl > room:
                    return parts, index, size
                if wirelen < incl:
                    wirelen = incl
                sec, frac = divmod(ts, NS)
                add(pack(sec, frac, incl, wirelen))
                add(data)
                size += RECORD_HEADER_SIZE + incl
        except Exception as exc:  # a malformed packet: say which one and what was not stored
            raise StoreError(f"packet {index} of the batch cannot be stored: "
                             f"{_describe_packet(packets[index])}: {exc}; packets {start} to "
                             f"{len(packets) - 1} of the batch were not stored") from None
        return parts, len(packets), size

    def _evict_until(self, incoming: int) -> None:
        """Delete the oldest segments until `incoming` more bytes fit the limit beside
        everything else under the storage directory (the index and its WAL, temp files:
        measured at most every OTHER_BYTES_EVERY_S). For those the current segment goes too
        when it must (it is finished first; the next write starts a new one)."""
        while self._total + incoming > self._limit:
            if not self._segments or (self._fd is not None and len(self._segments) == 1):
                raise StoreError(
                    f"cannot keep {format_size(self._limit)}: {incoming} bytes do not fit "
                    f"beside the current segment of {self._total} bytes")
            self._evict_oldest()
        self._refresh_other()
        self._answer_grant()
        room = self._limit - self._other
        # After an eviction for them, the index shrinks only once the dissection pruned the
        # rows of what was evicted: until then (unless it grows further) its stale size must
        # not evict more; new bytes only replace the oldest (the segments keep their size).
        # Not with a grant: the index stays within it, and it is room the segments must leave.
        held = self._grant is None and self._other <= self._other_when_evicted and \
            time.monotonic() - self._other_evicted_at < PRUNE_WAIT_S
        if held:
            room = max(room, self._room_when_evicted)
        evicted = False
        while self._segments and self._total + incoming > room:
            if len(self._segments) == 1 and self._fd is not None:
                if self._segments[0].size <= HEADER_SIZE:
                    break          # nothing to give: the index shrinks once its rows are pruned
                self._finish_current()
            self._evict_oldest()
            self._evicted_for_other += 1
            evicted = True
        if evicted and not held:
            self._other_when_evicted = self._other
            self._other_evicted_at = time.monotonic()
            self._room_when_evicted = self._total + incoming

    def _answer_grant(self) -> None:
        """Answer the index side's latest request for room (grant.py), once: evict the oldest
        segments until it fits beside them (the current one too, finished first), then grant
        it, or as much as there is. Packets come first: room for a segment with one packet of
        the snaplen is never granted."""
        if self._grant is None:
            return
        seq, wanted = self._grant.asked()
        if seq == self._grant_seq:
            return
        rest = self._other - max(self._granted, self._index_measured)
        floor = max(MIN_ROTATION_SIZE, HEADER_SIZE + RECORD_HEADER_SIZE + self._snaplen)
        wanted = min(wanted, self._limit - rest - floor)
        while self._segments and self._total + rest + wanted > self._limit:
            if len(self._segments) == 1 and self._fd is not None:
                if self._segments[0].size <= HEADER_SIZE:
                    break
                self._finish_current()
            self._evict_oldest()
            self._evicted_for_other += 1
        self._granted = max(0, min(wanted, self._limit - rest - self._total))
        self._grant_seq = seq
        self._index_requests += 1
        self._other = rest + max(self._granted, self._index_measured)
        self._grant.give(seq, self._granted)

    def _evict_oldest(self) -> None:
        oldest = self._segments[0]
        try:
            oldest.path.unlink()
        except FileNotFoundError:
            pass  # removed behind our back: its bytes are gone all the same
        except OSError as exc:
            raise StoreError(f"cannot evict segment {oldest.path}: {exc.strerror}") from None
        self._segments.popleft()
        self._total -= oldest.size
        self._evicted += 1

    def _rotation_size(self) -> int:
        """The segment size, smaller when the index outweighs the packets (many small
        exchanges: DNS): eviction frees whole segments, so the limit must hold several of
        them with their index rows, at least SEGMENTS_IN_LIMIT."""
        if self._other <= 0 or self._total <= HEADER_SIZE * len(self._segments):
            return self._segment_size
        weight = 1 + min(64.0, self._other / self._total)   # bytes on disk per segment byte
        fitting = int(self._limit / (SEGMENTS_IN_LIMIT * weight))
        return max(MIN_ROTATION_SIZE, min(self._segment_size, fitting))

    def _refresh_other(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._other_at >= OTHER_BYTES_EVERY_S:
            rest, self._index_measured = _other_bytes(self.directory, self._pcap_dir,
                                                      self._subtrees, self._index_files)
            # The index's files count as their grant while they are within it (always, once
            # the index side asked: before, at start, as measured).
            self._other = rest + max(self._granted, self._index_measured)
            self._other_at = now

    def enforce(self) -> None:
        """Evict for what grew beside the segments since the last write (the index, as the
        dissection catches up): the capture loop calls this between batches."""
        with self._lock:
            if self._lock_fd >= 0 and (time.monotonic() - self._other_at >= OTHER_BYTES_EVERY_S
                                       or self._grant_asked()):
                self._evict_until(0)

    def _grant_asked(self) -> bool:
        """The index side asked for room and waits for the answer."""
        return self._grant is not None and self._grant.asked()[0] != self._grant_seq

    def _start_segment(self, linktype: int, first_ts_ns: int) -> None:
        self._finish_current()
        segment_id = self._next_id
        path = self._pcap_dir / f"{segment_id:012d}.pcap"
        tmp = path.with_name(path.name + _TMP_SUFFIX)
        header = encode_header(linktype, self._snaplen)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, FILE_MODE)
            try:
                _write_all(fd, header)
                os.rename(tmp, path)    # readers only ever see a segment with its header
            except BaseException:
                os.close(fd)
                tmp.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreWriteError(f"cannot create segment {path}: {exc.strerror or exc}",
                                  exc.errno) from None
        self._next_id += 1
        self._fd = fd
        self._linktype = linktype
        self._segments.append(_Segment(segment_id, path, HEADER_SIZE, first_ts_ns))
        self._total += HEADER_SIZE

    def _write(self, blob: bytes, size: int, packets: int) -> None:
        segment = self._segments[-1]
        assert self._fd is not None
        try:
            _write_all(self._fd, blob)
        except OSError as exc:
            # Cut what part of the batch reached the disk: the segment must end on a record.
            try:
                os.ftruncate(self._fd, segment.size)
            except OSError:
                self._finish_current()   # cannot repair now; the next open will
            raise StoreWriteError(f"writing segment {segment.path} failed: "
                                  f"{exc.strerror or exc}", exc.errno) from None
        segment.size += size
        self._total += size
        self._packets_written += packets

    def _recover_from(self, error: StoreWriteError, failures: int) -> bool:
        """Count a refused write and free what may cure it: True to try the write again.

        A full disk (the limit is larger than the room the disk has, or something else fills
        it) evicts the oldest segment, up to EVICT_PER_WRITE_ERROR per batch; the current one
        goes last (finished first, so the next write starts a new segment). Any other error
        finishes the current segment, so the next batch starts a new file."""
        self._write_errors += 1
        self._last_write_error = str(error)
        self._last_write_error_ts = time.time()
        if error.errno not in _SPACE_ERRORS:
            self._finish_current()
            return False
        if failures > EVICT_PER_WRITE_ERROR:
            return False
        if len(self._segments) == 1 and self._fd is not None:
            self._finish_current()
        if not self._segments:
            return False
        try:
            self._evict_oldest()
        except StoreError:
            return False
        self._evicted_for_space += 1
        return True

    def _finish_current(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._linktype = -1

    # -- control -------------------------------------------------------------------------

    def set_limit(self, limit: int) -> None:
        """Change the limit; a lower one evicts at once."""
        validate_limit(limit)
        with self._lock:
            self._limit = limit
            self._segment_size = segment_size_for(limit)
            if self._fd is not None and self._segments[-1].size > self._segment_size:
                self._finish_current()   # too big for the new limit: may be evicted itself
            self._evict_until(0)

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def segment_size(self) -> int:
        return self._segment_size

    def stats(self) -> StoreStats:
        with self._lock:
            segments = self._segments
            oldest_ts = next((s.first_ts_ns / NS for s in segments
                              if s.first_ts_ns is not None), None)
            return StoreStats(
                bytes=self._total, limit=self._limit, segments=len(segments),
                oldest_segment=segments[0].id if segments else 0,
                newest_segment=segments[-1].id if segments else 0,
                oldest_ts=oldest_ts, packets_written=self._packets_written,
                evicted_segments=self._evicted, repaired=list(self._repaired),
                segment_size=self._segment_size, damaged_segments=self._damaged,
                write_errors=self._write_errors, evicted_for_space=self._evicted_for_space,
                other_bytes=self._other, evicted_for_other=self._evicted_for_other,
                index_granted=self._granted, index_requests=self._index_requests,
                last_write_error=self._last_write_error,
                last_write_error_ts=self._last_write_error_ts)

    def close(self) -> None:
        with self._lock:
            self._finish_current()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _other_bytes(directory: Path, pcap_dir: Path, subtrees: dict[str, int],
                 apart: frozenset[str] = frozenset()) -> tuple[int, int]:
    """What `du -sb` counts under the storage directory besides the segments, as (the rest,
    the files at its top named in `apart`): the index, its WAL and shared memory, temp files,
    the directories themselves. The files at the top and in pcap/ are measured each time; other
    subdirectories (with --tls, the merged kernel headers: thousands of entries written once)
    are measured once, into `subtrees`."""
    pcap = str(pcap_dir)
    top = str(directory)

    def measured_once(path: str) -> int | None:
        if path == pcap:
            return None
        if path not in subtrees:
            subtrees[path] = _tree_bytes(path)
        return subtrees[path]

    def is_segment_or_apart(entry: os.DirEntry[str]) -> bool:
        parent = os.path.dirname(entry.path)
        return (parent == pcap and bool(_SEGMENT_NAME.match(entry.name))) or \
            (parent == top and entry.name in apart)

    apart_bytes = 0
    for name in apart:
        try:
            apart_bytes += os.stat(os.path.join(top, name)).st_size
        except FileNotFoundError:
            pass
    return _tree_bytes(top, skip=is_segment_or_apart, known=measured_once), apart_bytes


def _tree_bytes(path: str, skip: Callable[[os.DirEntry[str]], bool] | None = None,
                known: Callable[[str], int | None] | None = None) -> int:
    """du -sb of a directory: it, and everything under it, links not followed; files that
    `skip` accepts left out, subdirectories whose size `known` gives not walked."""
    total = 0
    pending = [path]
    while pending:
        current = pending.pop()
        try:
            total += os.lstat(current).st_size
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            size = known(entry.path) if known is not None else None
                            if size is None:
                                pending.append(entry.path)
                            else:
                                total += size
                        elif skip is None or not skip(entry):
                            total += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
    return total


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _is_bytes(value: object) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview))


def _describe_packet(packet: object) -> str:
    if isinstance(packet, tuple) and len(packet) == 3:
        ts, data, wirelen = packet
        if _is_bytes(data):
            return f"(ts_ns={ts!r}, data={len(data)} bytes, wirelen={wirelen!r})"
        return f"(ts_ns={ts!r}, data of type {type(data).__name__}, wirelen={wirelen!r})"
    return f"expected (ts_ns, data, wirelen), got {type(packet).__name__}"


class SegmentTail:
    """Follows the writer from another process: complete records, oldest first.

    start=None begins at the first record of the oldest segment. start=ref resumes just AFTER ref
    (ref is the last record the caller processed, e.g. the index cursor): the first record
    returned is the one that follows it; (segment, 0) begins at that segment's first record. A
    partial record at the end of the newest segment is left for a later read(); once a newer
    segment exists, the older one is finished, and a torn tail there is skipped (torn_tails,
    torn_bytes).

    When the writer evicted the segment to be read next (or the one being opened) before the
    tail got there, the tail jumps to the oldest segment left, adds what it lost to
    shed_segments/shed_bytes and raises the discontinuity flag that take_discontinuity()
    returns (and clears): flows that were open across the jump are incomplete. A segment
    evicted while the tail has it open is still read to its end through the open descriptor
    (its bytes are intact; the kernel frees them when the tail moves on), so the disk holds at
    most one segment beyond the limit. shed_bytes counts the sizes of the shed segments as the
    tail last measured them (read() at each segment change, lag_bytes()); a segment written
    and evicted entirely between two looks counts in shed_segments only.
    """

    def __init__(self, directory: Path, start: PacketRef | None = None):
        self.directory = Path(directory)
        self._pcap_dir = self.directory / "pcap"
        self._resume = start
        self._position: PacketRef | None = start
        self._seg = 0                 # id of the open segment, 0 when none
        self._fd: int | None = None
        self._header = FileHeader(0, MAX_SNAPLEN)   # of the open segment
        self._buf = b""
        self._buf_start = 0           # file offset of _buf[0]
        self._pos = 0                 # index in _buf of the next record
        self._sizes: dict[int, int] = {}   # last known sizes of segments newer than _seg
        self._final: set[int] = set()      # ids in _sizes that were finished when measured
        # lag_bytes()'s last listing: the newer segments' ids, for which segment, and when
        self._newer_ids: list[int] = []
        self._listed_for = -1
        self._listed_at = 0.0
        self._discontinuity = False
        self.shed_segments = 0
        self.shed_bytes = 0
        self.torn_tails = 0
        self.torn_bytes = 0
        self.packets_read = 0

    @property
    def position(self) -> PacketRef | None:
        """The ref of the last record returned (or the start ref), None before any."""
        return self._position

    def take_discontinuity(self) -> bool:
        """True once if packets were lost (shed) since the last call."""
        happened, self._discontinuity = self._discontinuity, False
        return happened

    def read(self, max_packets: int, keep: RecordFilter | None = None) -> list[StoredPacket]:
        """Up to max_packets complete records available now; [] when none. With `keep`, those
        it keeps of them (a shard's, worker.shard_filter): max_packets counts the records read,
        kept or not, and the last one read is always among those returned."""
        out: list[StoredPacket] = []
        taken = 0
        while taken < max_packets:
            if self._fd is None and not self._open_first():
                break
            taken += self._parse(out, max_packets - taken, keep)
            if taken >= max_packets:
                break
            # The current segment is finished once it was evicted (it was read to its end
            # through the open descriptor) or once a newer one exists.
            evicted = os.fstat(self._fd).st_nlink == 0
            newer = None if evicted else self._newer_segment()
            if newer is None and not evicted:
                break                                   # newest: wait for the writer
            taken += self._parse(out, max_packets - taken, keep)   # written before rotating
            if taken >= max_packets:
                break
            torn = os.fstat(self._fd).st_size - (self._buf_start + self._pos)
            if torn > 0:
                self.torn_tails += 1
                self.torn_bytes += torn
            if newer is None:
                finished = self._seg
                self._close_fd()
                self._jump_after(finished)
            elif not self._open(newer):
                self._shed_missing(newer)
        self.packets_read += taken
        return out

    def lag_bytes(self) -> int:
        """Bytes written but not read yet (whole segments after the current one included).
        Cheap enough to call after every read: the current segment is measured each time (one
        fstat), the segments after it as the last listing found them. The directory is listed
        again (and the newest segment measured) when the current segment changed or
        LAG_LIST_EVERY_S passed (a listing per read step: ~235 in a 2-shard replay of
        dns.pcap). So the lag can be that old for the segments after the current one, never
        for the current one."""
        behind = 0
        if self._fd is not None:
            behind = max(0, os.fstat(self._fd).st_size - (self._buf_start + self._pos))
        now = time.monotonic()
        if self._listed_for != self._seg or now - self._listed_at >= LAG_LIST_EVERY_S:
            self._newer_ids = self._remember_sizes()
            self._listed_for, self._listed_at = self._seg, now
        sizes = self._sizes
        for segment_id in self._newer_ids:
            behind += sizes.get(segment_id, 0)
        return behind

    def close(self) -> None:
        self._close_fd()

    # -- internals -----------------------------------------------------------------------

    def _parse(self, out: list[StoredPacket], max_packets: int, keep: RecordFilter | None) -> int:
        """Append the complete records available now (those `keep` keeps), refilling the
        buffer from the file; returns how many were read. A record longer than the snaplen
        is damage: only a newer segment ends it."""
        seg, header = self._seg, self._header
        linktype = header.linktype
        taken = 0
        while True:
            if keep is None:
                records: list[Record] = []
                pos, stop = decode_records(self._buf, self._pos, header, header.snaplen,
                                           max_packets - taken, records, self._buf_start)
                read = len(records)
                out.extend([((seg, offset), linktype, ts_ns, data, wirelen)
                            for offset, ts_ns, data, wirelen in records])
            else:
                pos, stop, read = keep.records(seg, self._buf, self._pos, header,
                                               max_packets - taken, out, self._buf_start)
            if read:
                taken += read
                self._pos = pos
                self._position = out[-1][0]
            if stop is not Stop.MORE or not self._refill():
                return taken

    def _refill(self) -> bool:
        """Read more of the file after the buffer; False when nothing new is there."""
        assert self._fd is not None
        kept = self._buf[self._pos:]
        start = self._buf_start + self._pos
        want = max(_READ_CHUNK, self._header.snaplen + RECORD_HEADER_SIZE)
        more = os.pread(self._fd, want, start + len(kept))
        self._buf = kept + more
        self._buf_start = start
        self._pos = 0
        return bool(more)

    def _open_first(self) -> bool:
        if self._resume is not None:
            ref, self._resume = self._resume, None
            if self._open(ref[0], after=ref[1]):
                return True
            self._shed_missing(ref[0])
            if self._fd is not None:
                return True
        # The oldest segment: at the start, or after a jump found nothing newer (the store
        # was emptied and its ids started again from 1).
        for segment_id, _path in list_segments(self.directory):
            if self._open(segment_id):
                return True
        return False

    def _open(self, segment_id: int, after: int | None = None) -> bool:
        """Open a segment at its first record (`after` None or 0), or at the record following
        offset `after`."""
        self._close_fd()
        path = self._pcap_dir / f"{segment_id:012d}.pcap"
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            header = parse_header(os.pread(fd, HEADER_SIZE, 0), path.name)
        except StoreError:
            os.close(fd)
            return False
        start = HEADER_SIZE
        if after:
            raw = os.pread(fd, RECORD_HEADER_SIZE, after)
            if after < HEADER_SIZE or len(raw) < RECORD_HEADER_SIZE \
                    or header.record.unpack(raw)[2] > header.snaplen:
                os.close(fd)
                return False
            start = after + RECORD_HEADER_SIZE + header.record.unpack(raw)[2]
        self._fd = fd
        self._seg = segment_id
        self._header = header
        self._buf, self._buf_start, self._pos = b"", start, 0
        self._sizes = {k: v for k, v in self._sizes.items() if k > segment_id}
        self._final = {k for k in self._final if k > segment_id}
        return True

    def _newer_segment(self) -> int | None:
        newer = None
        for segment_id, _path in list_segments(self.directory):
            if segment_id > self._seg:
                newer = segment_id
                break
        if newer is not None and newer not in self._sizes:
            self._remember_sizes()
        return newer

    def _remember_sizes(self) -> list[int]:
        """Measure the segments after the current one (for lag_bytes, and for shed_bytes if
        they are evicted before the tail gets there); returns the ids measured. Only segments
        that were still growing when last measured are measured again. Sizes of evicted
        segments stay until the tail moves past them: shed_bytes needs them."""
        newer = [info for info in list_segments(self.directory) if info.id > self._seg]
        present = []
        for position, (segment_id, path) in enumerate(newer):
            if segment_id not in self._final:
                try:
                    self._sizes[segment_id] = path.stat().st_size
                except FileNotFoundError:
                    continue
                if position < len(newer) - 1:
                    self._final.add(segment_id)
            present.append(segment_id)
        return present

    def _shed_missing(self, segment_id: int) -> None:
        """Segment `segment_id` (the next to read) is gone: jump to the oldest one left."""
        self._close_fd()
        self._discontinuity = True
        self.shed_segments += 1
        self.shed_bytes += self._sizes.get(segment_id, 0)
        self._jump_after(segment_id)

    def _jump_after(self, last_known: int) -> None:
        """Open the oldest segment after `last_known`; the ones in between were shed.
        With none there, the next read() starts at the oldest segment that exists."""
        for segment_id, _path in list_segments(self.directory):
            if segment_id <= last_known:
                continue
            lost = [self._sizes.get(i, 0) for i in range(last_known + 1, segment_id)]
            if self._open(segment_id):       # (forgets the sizes of older segments)
                if lost:
                    self._discontinuity = True
                    self.shed_segments += len(lost)
                    self.shed_bytes += sum(lost)
                return

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._buf = b""
            self._pos = 0


def read_range(directory: Path, first: PacketRef, last: PacketRef) -> Iterator[StoredPacket]:
    """The records from `first` to `last` inclusive, across segments, reading only them.

    Both refs must point at record headers (as read() and iter_segment() report them).
    Segments missing between the two (removed at recovery) are skipped; `first`'s or `last`'s
    segment missing raises SegmentEvicted naming it.
    """
    directory = Path(directory)
    if tuple(first) > tuple(last):
        return
    existing = {sid: path for sid, path in list_segments(directory)
                if first[0] <= sid <= last[0]}
    for needed in (first[0], last[0]):
        if needed not in existing:
            raise SegmentEvicted(f"segment {needed:012d}.pcap is gone (evicted to keep the "
                                 "storage limit); its packets are no longer stored")
    for segment_id in sorted(existing):
        start = first[1] if segment_id == first[0] else HEADER_SIZE
        if start < HEADER_SIZE:
            raise StoreError(f"packet ref ({segment_id}, {start}) is inside the pcap header")
        stop = last[1] if segment_id == last[0] else None
        try:
            for packet in iter_segment(existing[segment_id], start):
                offset = packet[0][1]
                if stop is not None and offset > stop:
                    return
                yield packet
                if offset == stop:
                    return
        except FileNotFoundError:
            raise SegmentEvicted(f"segment {segment_id:012d}.pcap was evicted while being "
                                 "read") from None
