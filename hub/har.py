"""HAR 1.2 (GET /api/v1/har): the hub's HTTP entries as an HTTP Archive, with both ends'
names in `_src` and `_dst`; no I/O."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

import msgspec

from hub import VERSION
from shark.model import WorkerPart


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pairs(headers: Any) -> list[dict[str, str]]:
    if isinstance(headers, dict):
        items = headers.items()
    elif isinstance(headers, list):
        items = ((h[0], h[1]) if isinstance(h, (list, tuple)) else (h.get("name"), h.get("value"))
                 for h in headers)
    else:
        return []
    out = []
    for name, value in items:
        for one in value if isinstance(value, list) else [value]:
            out.append({"name": str(name), "value": str(one)})
    return out


def _url(entry: dict[str, Any]) -> str:
    request = entry.get("request") or {}
    dst = entry.get("dst") or {}
    host = request.get("host") or f"{dst.get('ip', '')}:{dst.get('port', '')}"
    scheme = "https" if entry.get("tls") else "http"
    url = f"{scheme}://{host}{request.get('path') or '/'}"
    query = request.get("query")
    if isinstance(query, dict) and query:
        url += "?" + urlencode([(k, v) for k, vs in query.items() for v in (vs if isinstance(vs, list) else [vs])])
    return url


def har_entry(entry: dict[str, Any]) -> dict[str, Any]:
    request = entry.get("request") or {}
    response = entry.get("response") or {}
    query = request.get("query") if isinstance(request.get("query"), dict) else {}
    elapsed = entry.get("elapsed_ms")
    elapsed = float(elapsed) if isinstance(elapsed, (int, float)) else -1
    res_headers = _pairs(response.get("headers"))
    mime = response.get("content_type") or next(
        (h["value"] for h in res_headers if h["name"].lower() == "content-type"), "")
    return {
        "startedDateTime": _iso(float(entry["ts"])),
        "time": max(elapsed, 0),
        "request": {
            "method": request.get("method") or "GET",
            "url": _url(entry),
            "httpVersion": request.get("version") or "HTTP/1.1",
            "cookies": [],
            "headers": _pairs(request.get("headers")),
            "queryString": [{"name": k, "value": str(v)} for k, vs in query.items()
                            for v in (vs if isinstance(vs, list) else [vs])],
            "headersSize": -1,
            "bodySize": int(request.get("content_length") or 0),
        },
        "response": {
            "status": int(response.get("status") or entry.get("status") or 0),
            "statusText": response.get("reason") or "",
            "httpVersion": response.get("version") or request.get("version") or "HTTP/1.1",
            "cookies": [],
            "headers": res_headers,
            "content": {"size": int(response.get("content_length") or 0), "mimeType": mime},
            "redirectURL": next((h["value"] for h in res_headers if h["name"].lower() == "location"), ""),
            "headersSize": -1,
            "bodySize": int(response.get("content_length") or 0) if response else -1,
        },
        "cache": {},
        "timings": {"send": 0, "wait": max(elapsed, 0), "receive": 0},
        "serverIPAddress": (entry.get("dst") or {}).get("ip", ""),
        "comment": entry.get("id", ""),
        # custom fields (HAR 1.2 allows them with a leading "_"): both ends, with their names
        "_src": entry.get("src") or {},
        "_dst": entry.get("dst") or {},
    }


def har_log(entries: list[dict[str, Any]], workers: list[WorkerPart]) -> dict[str, Any]:
    failed = [part.failure for part in workers if not part.ok]
    log_: dict[str, Any] = {
        "version": "1.2",
        "creator": {"name": "kubectl-shark", "version": VERSION},
        "pages": [],
        "entries": [har_entry(e) for e in sorted(entries, key=lambda e: e["ts"])],
    }
    if failed:
        log_["comment"] = "partial: " + "; ".join(failed)
    return {"log": log_}


class _Stamp(msgspec.Struct):
    ts: float = 0.0


_STAMP = msgspec.json.Decoder(_Stamp)
HAR_BATCH = 1000          # entries made between two yields to the event loop


async def har_chunks(raws: list[bytes], workers: list[WorkerPart],
                     fill: Callable[[dict[str, Any]], Any] | None = None,
                     flush_at: int = 64 * 1024) -> AsyncIterator[bytes]:
    """har_log's JSON text, made an entry at a time from the entries as the workers wrote them:
    only those lines are held (each dropped once written), not every entry and HAR entry as
    dicts, which took the hub from 60 MB to ~330 MB for one limit=100000 request."""
    order = sorted(range(len(raws)), key=lambda i: _STAMP.decode(raws[i]).ts)   # oldest first, stable
    head = msgspec.json.encode({"version": "1.2", "creator": {"name": "kubectl-shark", "version": VERSION},
                                "pages": []})
    out, size = [b'{"log":' + head[:-1] + b',"entries":['], 0
    for n, i in enumerate(order):
        entry = json.loads(raws[i])
        raws[i] = b""
        if fill is not None:
            fill(entry)
        data = msgspec.json.encode(har_entry(entry))
        out.append(data if n == 0 else b"," + data)
        size += len(data)
        if size >= flush_at:
            yield b"".join(out)
            out, size = [], 0
        if n % HAR_BATCH == HAR_BATCH - 1:
            await asyncio.sleep(0)
    failed = [part.failure for part in workers if not part.ok]
    out.append(b"]" + (b',"comment":' + msgspec.json.encode("partial: " + "; ".join(failed)) if failed else b"") + b"}}")
    yield b"".join(out)
