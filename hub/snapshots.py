"""Traffic snapshots (/api/v1/snapshots): the packets of a time window (all of them, or the
streams of a query's matches), merged across workers, saved by the hub with the matching
entries, so the evidence outlives the workers' rings and the hub's restarts.

A snapshot is a directory `<state-dir>/traffic-snapshots/NAME/` holding `packets.pcap`,
`entries.json`, `details.jsonl` (the full entries, bodies included, of the newest
MAX_DETAILS: the workers dissect them while they still hold the packets, so the UI can open
a snapshot's entries after the ring has moved on) and `meta.json`; it is written as
`.NAME.part/` and renamed when whole, so a hub killed midway leaves no half snapshot behind (the next start removes the leftovers).
All snapshots together stay under `--snapshot-limit` bytes: one that would pass it is
refused (413) and removed, never kept half. In a cluster the entries are saved named (the
hub's names of that moment: the pods may be gone when the snapshot is opened).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import msgspec
from litestar.exceptions import HTTPException, NotFoundException

from hub import params as entry_params
from hub.kube.names import Fill, fill_json
from hub.workers import WorkerError, WorkerPool, describe
from shark import kfl
from shark.units import UnitError, check_window, parse_time

DIRECTORY = "traffic-snapshots"
DEFAULT_LIMIT = 500 * 1000 * 1000
MAX_ENTRIES = 100_000
MAX_DETAILS = 1000        # entries saved in full (newest first); the rest keep their summary
DETAIL_FETCHES = 8        # details asked of the workers at once while a snapshot is saved
QUERY_PARAMS = ("q", "since", "until", "limit")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
FIELDS = ("name", "q", "since", "until")


class TooBig(Exception):
    pass


class _Id(msgspec.Struct):
    id: str = ""


class _Stamp(msgspec.Struct):
    ts: float | None = None


class _Saved(msgspec.Struct):
    """entries.json with each entry left as its JSON text: 100k entries cost their bytes, not
    100k dicts (the hub's pod has 512Mi), and pass on to the answer as they are."""
    entries: list[msgspec.Raw]


def _bad(detail: str) -> HTTPException:
    return HTTPException(status_code=400, detail=detail)


@dataclass
class SnapshotStore:
    root: Path | None                 # None: the hub keeps no files (no --state-dir)
    limit: int = DEFAULT_LIMIT
    max_rows: int = entry_params.MAX_LIMIT   # the hub's --max-query-rows: entries one snapshot saves or answers
    refused: int = 0                  # refused for the limit, for /metrics
    # the last snapshot's entries read (name, mtime, entries): the UI pages and filters one
    # snapshot many times, and 100k entries take a while to read
    _read: tuple[str, float, list[msgspec.Raw]] | None = None
    # one snapshot written at a time: each one's budget is what the ones before it left
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if self.root is not None and self.root.is_dir():
            for leftover in self.root.glob(".*.part"):
                shutil.rmtree(leftover, ignore_errors=True)

    # -- reading ------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        if self.root is None or not self.root.is_dir():
            return []
        rows = []
        for meta in sorted(self.root.glob("*/meta.json")):
            try:
                rows.append(json.loads(meta.read_text()))
            except (OSError, ValueError):
                continue        # unreadable: left out of the list, still counted in bytes
        rows.sort(key=lambda row: row.get("created") or 0)
        return rows

    def used(self) -> int:
        if self.root is None or not self.root.is_dir():
            return 0
        return sum(path.stat().st_size for path in self.root.rglob("*") if path.is_file())

    def path(self, name: str, part: str = "") -> Path:
        if self.root is None or not NAME.fullmatch(name) or not (self.root / name / "meta.json").is_file():
            raise NotFoundException(f"no snapshot named {name!r}")
        return self.root / name / part if part else self.root / name

    def meta(self, name: str) -> dict[str, Any]:
        return json.loads((self.path(name) / "meta.json").read_text())

    def entries(self, name: str) -> list[msgspec.Raw]:
        """The snapshot's entries as saved (JSON text each), newest first."""
        path = self.path(name, "entries.json")
        mtime = path.stat().st_mtime
        if self._read is None or self._read[:2] != (name, mtime):
            self._read = None          # the old one goes before the new one is read
            self._read = (name, mtime, msgspec.json.decode(path.read_bytes(), type=_Saved).entries)
        return self._read[2]

    def query(self, name: str, params: dict[str, str]) -> bytes:
        """The saved entries matching q within [since, until), newest first, at most limit
        (as GET /entries filters live ones), as the JSON answer {entries, workers}."""
        params = entry_params.query(params, QUERY_PARAMS)     # names and q checked, empty ones dropped
        query = kfl.compile(params.get("q") or "")
        since, until = _time(params, "since"), _time(params, "until")
        try:
            check_window(since, until)
        except UnitError as error:
            raise _bad(str(error)) from None
        limit = entry_params.limit(params, default=MAX_ENTRIES, maximum=self.max_rows)
        found: list[bytes] = []
        for raw in self.entries(name):
            if len(found) >= limit:
                break
            if since is not None or until is not None:
                ts = msgspec.json.decode(raw, type=_Stamp).ts
                if ts is None or (since is not None and ts < since) or (until is not None and ts >= until):
                    continue
            if query.matches_all or query(msgspec.json.decode(raw)):
                found.append(bytes(raw))
        return b'{"entries":[' + b",".join(found) + b'],"workers":[]}'

    def detail(self, name: str, entry_id: str) -> bytes:
        """One entry in full as the worker answered when the snapshot was saved; an entry
        saved without it is its summary with a note saying why."""
        folder = self.path(name)
        details = folder / "details.jsonl"
        if details.is_file():
            with open(details, "rb") as file:
                for line in file:
                    if msgspec.json.decode(line, type=_Id).id == entry_id:
                        return line.rstrip(b"\n")
        raw = next((r for r in self.entries(name) if msgspec.json.decode(r, type=_Id).id == entry_id), None)
        if raw is None:
            raise NotFoundException(f"snapshot {name!r} has no entry {entry_id!r}")
        summary = msgspec.json.decode(raw)
        note = (f"snapshot {name}: only this entry's summary was saved (details are saved for the newest "
                f"{MAX_DETAILS} entries whose packets the workers still held); its packets are in the "
                "snapshot's pcap")
        return json.dumps({**summary, "notes": [*(summary.get("notes") or []), note]}).encode()

    def delete(self, name: str) -> None:
        shutil.rmtree(self.path(name))
        if self._read is not None and self._read[0] == name:
            self._read = None

    # -- writing ------------------------------------------------------------------------
    async def create(self, pool: WorkerPool, body: Any, fill: Fill | None = None) -> dict[str, Any]:
        spec = parse_spec(body)
        if self.root is None:
            raise HTTPException(status_code=409, detail="snapshots: the hub keeps no files: start it with "
                                                        "--state-dir (tap does)")
        async with self._lock:
            return await self._create(pool, spec, self.root, fill)

    async def _create(self, pool: WorkerPool, spec: dict[str, Any], root: Path, fill: Fill | None) -> dict[str, Any]:
        name = spec["name"] or time.strftime("snapshot-%Y%m%d-%H%M%S")
        if (root / name).exists():
            raise HTTPException(status_code=409, detail=f"name: a snapshot named {name!r} exists")
        params = {"q": spec["q"]} if spec["q"] else {}
        # One window for the entries and the packets, fixed now: a duration ("5m") or an open end
        # resolved by the worker at each of the two requests would move in between, and the pcap
        # would hold flows that began after the entries were read.
        now = time.time()
        if spec["since"] is not None:
            params["since"] = f"{parse_time(spec['since'], 'since', now):.6f}"
        params["until"] = f"{now if spec['until'] is None else parse_time(spec['until'], 'until', now):.6f}"
        budget = self.limit - self.used()
        part = root / f".{name}.part"
        try:
            root.mkdir(parents=True, exist_ok=True)
            part.mkdir()
            try:
                meta = await self._write(pool, params, part, budget, fill)
            except BaseException:
                shutil.rmtree(part, ignore_errors=True)
                raise
            meta = {"name": name, "created": round(time.time(), 3), "q": spec["q"], "since": spec["since"],
                    "until": spec["until"], **meta}
            (part / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            part.rename(root / name)
        except TooBig as error:
            self.refused += 1
            raise HTTPException(status_code=413, detail=str(error)) from None
        except OSError as error:
            raise HTTPException(status_code=507, detail=f"snapshots: cannot write {root}: "
                                                        f"{error.strerror or error}") from None
        return meta

    async def _write(self, pool: WorkerPool, params: dict[str, str], part: Path, budget: int,
                     fill: Fill | None) -> dict[str, Any]:
        """Entries, details and packets written to `part` as they arrive: a snapshot holds one
        entry line per worker (and the ids of the newest MAX_DETAILS), never its 100k entries,
        so it takes nothing of --max-held-rows (hub/rowbudget.py)."""
        size = _Size(budget, lambda used: TooBig(
            f"snapshot: more than the {max(budget, 0)} bytes left of --snapshot-limit {self.limit} (snapshots "
            f"use {self.used()}); delete some, narrow it (q, since, until) or raise the limit"))
        try:
            stream = await pool.open_entries(params, min(MAX_ENTRIES, self.max_rows))
            newest: list[str] = []          # whose details are asked for once the entries are written
            count = 0
            with open(part / "entries.json", "wb") as file:
                file.write(size.add(b'{"entries":['))
                async with aclosing(stream.merged()) as lines:
                    async for raw in lines:
                        if fill is not None:
                            raw = bytes(fill_json(raw, fill))
                        if len(newest) < MAX_DETAILS:
                            newest.append(_entry_id(raw))
                        file.write(size.add(raw if count == 0 else b"," + raw))
                        count += 1
                file.write(size.add(b"]}"))
            entries_bytes = size.used
            with open(part / "details.jsonl", "wb") as file:
                details = await _details(pool, newest, file, size, fill)
            details_bytes = size.used - entries_bytes
            pcap = await pool.pcap(params)
        except (WorkerError, httpx.HTTPError) as error:
            raise HTTPException(status_code=502, detail=f"snapshot: {describe(error)}") from None
        failed = [part.failure for part in pcap.workers if not part.ok]
        if len(failed) == len(pcap.workers):
            raise HTTPException(status_code=502, detail="snapshot: no worker answered: " + "; ".join(failed))
        with open(part / "packets.pcap", "wb") as file:
            async with aclosing(pcap.chunks()) as chunks:
                async for chunk in chunks:
                    file.write(size.add(chunk))
        missing = {part.name for part in [*stream.workers, *pcap.workers] if not part.ok}
        return {"entries": count, "details": details, "bytes": size.used,
                "pcap_bytes": size.used - entries_bytes - details_bytes, "partial": sorted(missing)}


@dataclass
class _Size:
    """The bytes a snapshot has written, against what --snapshot-limit leaves it."""
    budget: int
    over: Callable[[int], Exception]
    used: int = 0

    def add(self, data: bytes) -> bytes:
        """`data`, counted; the `over` error when it would pass the budget."""
        if self.used + len(data) > self.budget:
            raise self.over(self.used + len(data))
        self.used += len(data)
        return data


async def _details(pool: WorkerPool, ids: list[str], out: BinaryIO, size: _Size, fill: Fill | None) -> int:
    """The full entries (GET /entries/{id} of the owning worker), those it can still dissect,
    written to `out` a line each as they come (at most DETAIL_FETCHES held at once): an
    evicted one (410) or one of a worker gone keeps its summary. Returns how many."""
    gate = asyncio.Semaphore(DETAIL_FETCHES)
    written = 0
    over: list[Exception] = []         # the first one past the budget: the others stop writing

    async def one(entry_id: str) -> None:
        nonlocal written
        node, sep, number = entry_id.rpartition(":")
        if not sep or not number.isdigit():
            return
        client = await pool.owner(node)
        if client is None:
            return
        async with gate:
            if over:
                return
            try:
                response = await client.get(f"/entries/{entry_id}")
            except (WorkerError, httpx.HTTPError):
                return
        line = response.content.strip()
        try:
            same = msgspec.json.decode(line, type=_Id).id == entry_id
        except msgspec.DecodeError:
            return
        # a JSON document holds no raw newline: one per line
        if not same or b"\n" in line or over:
            return
        if fill is not None:
            line = bytes(fill_json(line, fill))
        try:
            out.write(size.add(line + b"\n"))
        except TooBig as error:
            over.append(error)
            return
        written += 1
    await asyncio.gather(*(one(entry_id) for entry_id in ids))
    if over:
        raise over[0]
    return written


def _entry_id(raw: bytes) -> str:
    try:
        return msgspec.json.decode(raw, type=_Id).id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""


def _time(params: dict[str, str], key: str) -> float | None:
    text = params.get(key)
    if text is None or text == "":
        return None
    try:
        return parse_time(text, key, time.time())
    except UnitError as error:
        raise _bad(str(error)) from None


def parse_spec(body: Any) -> dict[str, Any]:
    """The POST body: {name?, q?, since?, until?}; a bad field is a 400 naming it."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise HTTPException(status_code=400, detail="body: expected a JSON object {name, q, since, until}")
    for key in body:
        if key not in FIELDS:
            raise HTTPException(status_code=400, detail=f"{key}: unknown field; expected one of {', '.join(FIELDS)}")
    spec: dict[str, Any] = {key: body.get(key) for key in FIELDS}
    name = spec["name"]
    if name is not None and (not isinstance(name, str) or not NAME.fullmatch(name)):
        raise HTTPException(status_code=400, detail=f"name: {name!r} is not a snapshot name (1-63 letters, digits, "
                                                    "'.', '_', '-', starting with a letter or digit)")
    q = spec["q"]
    if q is not None:
        if not isinstance(q, str):
            raise HTTPException(status_code=400, detail="q: expected a KFL query string")
        error = kfl.validate(q)
        if error is not None:
            raise HTTPException(status_code=400, detail=f"q: {error}")
    now, window = time.time(), dict[str, float]()
    for key in ("since", "until"):
        if spec[key] is None:
            continue
        try:
            window[key] = parse_time(spec[key], key, now)
        except UnitError as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
    try:
        check_window(window.get("since"), window.get("until"))
    except UnitError as error:
        raise HTTPException(status_code=400, detail=str(error)) from None
    return spec


def metrics(store: SnapshotStore) -> str:
    snapshots = store.list()
    return "\n".join([
        "# HELP shark_hub_snapshots Traffic snapshots the hub keeps.", "# TYPE shark_hub_snapshots gauge",
        f"shark_hub_snapshots {len(snapshots)}",
        "# HELP shark_hub_snapshot_bytes Bytes the snapshots use.", "# TYPE shark_hub_snapshot_bytes gauge",
        f"shark_hub_snapshot_bytes {store.used()}",
        "# HELP shark_hub_snapshot_limit_bytes The hub's --snapshot-limit.",
        "# TYPE shark_hub_snapshot_limit_bytes gauge", f"shark_hub_snapshot_limit_bytes {store.limit}",
        "# HELP shark_hub_snapshots_refused_total Snapshots refused for the limit.",
        "# TYPE shark_hub_snapshots_refused_total counter", f"shark_hub_snapshots_refused_total {store.refused}",
    ]) + "\n"
