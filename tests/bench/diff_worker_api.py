"""The worker API of two checkouts, byte for byte: the same requests, raw HTTP/1.1 on a socket,
to a worker of each serving the same capture; prints every response that differs.

    .venv/bin/python tests/bench/diff_worker_api.py --repo /work/main [--repo .] [--pcap FILE]
        [--token T] [--show]

Each checkout runs its own `.venv/bin/python -m worker --pcap FILE --node diff-node` (a store
of its own, the same token or none); once both have indexed the capture, every request of
REQUESTS goes to each and the answers are compared: status line, headers (`date` left out) and
body, the wire framing of chunked bodies included. What differs between two runs by nature
(pids, timings and counters of /status, the store id in /stream's hello) is compared by shape
only (JSON keys, or with the store id replaced). Exit status 1 when anything differs. Run on
demand (it checks a change of the API's framework), never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NODE = "diff-node"
API = "/api/v1"

# (name, method, path, extra headers, body); {E} is an entry id of the capture, {H} a Host
# header (added unless the request names its own). Requests that change state come in the
# same order to both workers.
BIG = b'{"ips": [' + b'"127.0.0.1", ' * 1_000_000 + b'"127.0.0.1"]}'
REQUESTS: list[tuple[str, str, str, dict[str, str], bytes | None]] = [
    ("healthz", "GET", "/healthz", {}, None),
    ("healthz HEAD", "HEAD", "/healthz", {}, None),
    ("healthz POST", "POST", "/healthz", {"Content-Type": "application/json"}, b"{}"),
    ("healthz slash", "GET", "/healthz/", {}, None),
    ("root", "GET", "/", {}, None),
    ("api root", "GET", API, {}, None),
    ("api root slash", "GET", API + "/", {}, None),
    ("unknown", "GET", API + "/nope", {}, None),
    ("unknown deep", "GET", API + "/nope/deeper/still", {}, None),
    ("status", "GET", API + "/status", {}, None),
    ("status slash", "GET", API + "/status/", {}, None),
    ("status double slash", "GET", API + "//status", {}, None),
    ("status HEAD", "HEAD", API + "/status", {}, None),
    ("status POST", "POST", API + "/status", {"Content-Type": "application/json"}, b"{}"),
    ("status DELETE", "DELETE", API + "/status", {}, None),
    ("status OPTIONS", "OPTIONS", API + "/status", {}, None),
    ("status PATCH", "PATCH", API + "/status", {}, None),
    ("status query", "GET", API + "/status?x=1", {}, None),
    ("status bad host", "GET", API + "/status", {"Host": "evil.example"}, None),
    ("status origin put", "PUT", API + "/config", {"Origin": "http://evil.example",
                                                   "Content-Type": "application/json"}, b"{}"),
    ("entries", "GET", API + "/entries", {}, None),
    ("entries slash", "GET", API + "/entries/", {}, None),
    ("entries limit", "GET", API + "/entries?limit=3", {}, None),
    ("entries limit 1", "GET", API + "/entries?limit=1", {}, None),
    ("entries big limit", "GET", API + "/entries?limit=100000", {}, None),
    ("entries limit abc", "GET", API + "/entries?limit=abc", {}, None),
    ("entries limit 0", "GET", API + "/entries?limit=0", {}, None),
    ("entries limit empty", "GET", API + "/entries?limit=", {}, None),
    ("entries limit twice", "GET", API + "/entries?limit=2&limit=5", {}, None),
    ("entries limit twice 2", "GET", API + "/entries?limit=5&limit=2", {}, None),
    ("entries unknown param", "GET", API + "/entries?foo=1", {}, None),
    ("entries unknown params", "GET", API + "/entries?foo=1&bar=2&limit=1", {}, None),
    ("entries q", "GET", API + "/entries?q=tcp%20or%20http&limit=5", {}, None),
    ("entries q plus", "GET", API + "/entries?q=http+and+status+%3E%3D+200&limit=5", {}, None),
    ("entries q bad", "GET", API + "/entries?q=http%20and%20(status%20%3D%3D%20500", {}, None),
    ("entries q empty", "GET", API + "/entries?q=&limit=2", {}, None),
    ("entries q unicode", "GET", API + "/entries?q=%22%C3%A9%22%20in%20tags", {}, None),
    ("entries q bad utf8", "GET", API + "/entries?q=%FF%FE", {}, None),
    ("entries q bad percent", "GET", API + "/entries?q=%zz", {}, None),
    ("entries since", "GET", API + "/entries?since=100000d&limit=2", {}, None),
    ("entries since nan", "GET", API + "/entries?since=nan", {}, None),
    ("entries window", "GET", API + "/entries?since=10&until=5", {}, None),
    ("entries until", "GET", API + "/entries?until=1", {}, None),
    ("entries semicolon", "GET", API + "/entries?limit=2;foo=3", {}, None),
    ("entries no value", "GET", API + "/entries?limit", {}, None),
    ("entries POST", "POST", API + "/entries", {"Content-Type": "application/json"}, b"{}"),
    ("entry", "GET", API + "/entries/{E}", {}, None),
    ("entry encoded", "GET", API + "/entries/{E_ENC}", {}, None),
    ("entry bare seq", "GET", API + "/entries/1", {}, None),
    ("entry missing", "GET", API + "/entries/diff-node:999999999", {}, None),
    ("entry other node", "GET", API + "/entries/other:1", {}, None),
    ("entry bad", "GET", API + "/entries/diff-node:abc", {}, None),
    ("entry huge", "GET", API + "/entries/diff-node:99999999999999999999", {}, None),
    ("entry slash", "GET", API + "/entries/{E}/", {}, None),
    ("entry deeper", "GET", API + "/entries/{E}/nope", {}, None),
    ("entry query", "GET", API + "/entries/{E}?x=1", {}, None),
    ("entry PUT", "PUT", API + "/entries/{E}", {"Content-Type": "application/json"}, b"{}"),
    ("entry pcap", "GET", API + "/entries/{E}/pcap", {}, None),
    ("entry pcap missing", "GET", API + "/entries/diff-node:999999999/pcap", {}, None),
    ("entry pcap bad", "GET", API + "/entries/x:y/pcap", {}, None),
    ("pcap", "GET", API + "/pcap", {}, None),
    ("pcap q", "GET", API + "/pcap?q=tcp&limit=3", {}, None),
    ("pcap q nomatch", "GET", API + "/pcap?q=status%20%3D%3D%20999", {}, None),
    ("pcap limit bad", "GET", API + "/pcap?q=tcp&limit=x", {}, None),
    ("pcap bad param", "GET", API + "/pcap?z=1", {}, None),
    ("pcap until", "GET", API + "/pcap?until=1", {}, None),
    ("validate", "GET", API + "/query/validate?q=http%20and%20status%20%3E%3D%20500", {}, None),
    ("validate bad", "GET", API + "/query/validate?q=http%20and%20(", {}, None),
    ("validate none", "GET", API + "/query/validate", {}, None),
    ("validate param", "GET", API + "/query/validate?limit=1", {}, None),
    ("targets", "GET", API + "/targets", {}, None),
    ("targets slash", "GET", API + "/targets/", {}, None),
    ("targets POST", "POST", API + "/targets", {"Content-Type": "application/json"}, b"{}"),
    ("targets put bad json", "PUT", API + "/targets", {"Content-Type": "application/json"}, b"{"),
    ("targets put empty", "PUT", API + "/targets", {"Content-Type": "application/json"}, b""),
    ("targets put no type", "PUT", API + "/targets", {}, b""),
    ("targets put text", "PUT", API + "/targets", {"Content-Type": "text/plain"}, b"{}"),
    ("targets put charset", "PUT", API + "/targets", {"Content-Type": "application/json; charset=utf-8"},
     b'{"ips": []}'),
    ("targets put wrong", "PUT", API + "/targets", {"Content-Type": "application/json"}, b'{"ips": "x"}'),
    ("targets put unknown", "PUT", API + "/targets", {"Content-Type": "application/json"}, b'{"colour": 1}'),
    ("targets put bad ip", "PUT", API + "/targets", {"Content-Type": "application/json"}, b'{"ips": ["x"]}'),
    ("targets put idle ips", "PUT", API + "/targets", {"Content-Type": "application/json"},
     b'{"ips": ["127.0.0.1"], "idle": true}'),
    ("targets put nets only", "PUT", API + "/targets", {"Content-Type": "application/json"},
     b'{"ips": [], "cluster_nets": ["10.0.0.0/8"]}'),
    ("targets put names", "PUT", API + "/targets", {"Content-Type": "application/json"},
     b'{"ips": [], "names": {"127.0.0.1": {"name": "a", "namespace": "b", "kind": "pod"}}, '
     b'"cluster_nets": ["10.244.0.0/16"]}'),
    ("targets put bad names", "PUT", API + "/targets", {"Content-Type": "application/json"},
     b'{"ips": [], "names": {"x": {"name": "a", "namespace": "b", "kind": "pod"}}}'),
    ("targets put ips", "PUT", API + "/targets", {"Content-Type": "application/json"},
     b'{"ips": ["127.0.0.1", "::1"]}'),
    ("targets after", "GET", API + "/targets", {}, None),
    ("targets put none", "PUT", API + "/targets", {"Content-Type": "application/json"}, b'{"ips": []}'),
    ("targets put deep", "PUT", API + "/targets", {"Content-Type": "application/json"},
     b'{"ips": [], "names": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
    ("targets put big", "PUT", API + "/targets", {"Content-Type": "application/json"}, BIG),
    ("targets put chunked", "PUT", API + "/targets", {"Content-Type": "application/json",
                                                       "Transfer-Encoding": "chunked"}, b'{"ips": []}'),
    ("config", "GET", API + "/config", {}, None),
    ("config put", "PUT", API + "/config", {"Content-Type": "application/json"}, b'{"storage_limit": "300MB"}'),
    ("config put bad", "PUT", API + "/config", {"Content-Type": "application/json"}, b'{"storage_limit": "lots"}'),
    ("config put small", "PUT", API + "/config", {"Content-Type": "application/json"}, b'{"storage_limit": "1MB"}'),
    ("config put huge", "PUT", API + "/config", {"Content-Type": "application/json"},
     b'{"storage_limit": "100000TB"}'),
    ("config put number", "PUT", API + "/config", {"Content-Type": "application/json"}, b'{"storage_limit": 250000000}'),
    ("config put list", "PUT", API + "/config", {"Content-Type": "application/json"}, b"[]"),
    ("config after", "GET", API + "/config", {}, None),
    ("config POST", "POST", API + "/config", {"Content-Type": "application/json"}, b"{}"),
    ("tags", "POST", API + "/tags", {"Content-Type": "application/json"},
     b'{"changes": [{"id": "{E}", "add": ["reviewed", "x"]}, {"id": "diff-node:999999999", "add": ["y"]}]}'),
    ("tags remove", "POST", API + "/tags", {"Content-Type": "application/json"},
     b'{"changes": [{"id": "{E}", "remove": ["x"]}]}'),
    ("tags empty", "POST", API + "/tags", {"Content-Type": "application/json"}, b'{"changes": []}'),
    ("tags bad tag", "POST", API + "/tags", {"Content-Type": "application/json"},
     b'{"changes": [{"id": "{E}", "add": ["-x"]}]}'),
    ("tags other node", "POST", API + "/tags", {"Content-Type": "application/json"},
     b'{"changes": [{"id": "n:1", "add": ["a"]}]}'),
    ("tags bad id", "POST", API + "/tags", {"Content-Type": "application/json"},
     b'{"changes": [{"id": "diff-node:x", "add": ["a"]}]}'),
    ("tags GET", "GET", API + "/tags", {}, None),
    ("tags PUT", "PUT", API + "/tags", {"Content-Type": "application/json"}, b"{}"),
    ("entries tagged", "GET", API + "/entries?q=%22reviewed%22%20in%20tags", {}, None),
    ("entry tagged", "GET", API + "/entries/{E}", {}, None),
    ("stream", "GET", API + "/stream", {}, None),
    ("stream q", "GET", API + "/stream?q=http", {}, None),
    ("stream q bad", "GET", API + "/stream?q=(", {}, None),
    ("stream param", "GET", API + "/stream?limit=1", {}, None),
    ("stream resume", "GET", API + "/stream", {"Last-Event-ID": "3"}, None),
    ("stream resume q", "GET", API + "/stream?q=tcp", {"Last-Event-ID": "1"}, None),
    ("stream resume other", "GET", API + "/stream", {"Last-Event-ID": "otherstore:2"}, None),
    ("stream resume bad", "GET", API + "/stream", {"Last-Event-ID": "x"}, None),
    ("stream slash", "GET", API + "/stream/", {}, None),
    ("stream POST", "POST", API + "/stream", {"Content-Type": "application/json"}, b"{}"),
    ("stream HEAD", "HEAD", API + "/stream", {}, None),
    ("stream OPTIONS", "OPTIONS", API + "/stream", {}, None),
    ("host chars", "GET", API + "/config", {"Host": "a b"}, None),
    ("host empty", "GET", API + "/config", {"Host": ""}, None),
    *[(f"OPTIONS {path}", "OPTIONS", path, {}, None)
      for path in ("/healthz", API + "/entries", API + "/entries/{E}", API + "/entries/{E}/pcap", API + "/pcap",
                   API + "/query/validate", API + "/targets", API + "/config", API + "/tags", API + "/nope")],
    *[(f"HEAD {path}", "HEAD", path, {}, None)
      for path in (API + "/entries", API + "/entries/{E}", API + "/pcap", API + "/targets", API + "/nope")],
]
STREAM_READ_S = 1.5     # /stream answers forever: what came within this long is compared


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes | None, port: int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1"]
    given = {k.lower() for k in headers}
    if "host" not in given:
        lines.append(f"Host: 127.0.0.1:{port}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None and "transfer-encoding" not in given:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if body is not None and "transfer-encoding" in given:
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    return head + (body or b"")


def fetch(port: int, raw: bytes, streaming: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        chunks = []
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):   # answered (and closed) before the body
            chunks.append(b"<reset while sending>")
        deadline = time.monotonic() + STREAM_READ_S if streaming else None
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            except ConnectionResetError:
                chunks.append(b"<reset>")
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def normal(name: str, response: bytes, token: str | None) -> Any:
    """What is compared: the raw response without `date`; /status's body by its keys; the store
    id of /stream's hello replaced."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    if name.startswith("status") and lines[0].startswith(b"HTTP/1.1 200"):
        decoded = json.loads(dechunk(body) if b"transfer-encoding: chunked" in head.lower() else body)
        return [line for line in lines if not line.lower().startswith(b"content-length:")], shape(decoded)
    if name.startswith("stream"):
        body = re.sub(rb'"store":"[^"]*"', b'"store":"S"', body)
    return lines, body


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out += rest[:n]
        body = rest[n + 2:]
    return out


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def start(repo: Path, pcap: Path, storage: Path, token: str | None) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "SHARK_TOKEN": token or "", "PYTHONPATH": str(repo)}
    process = subprocess.Popen([str(repo / ".venv/bin/python"), "-m", "worker", "--pcap", str(pcap),
                                "--storage-dir", str(storage), "--listen", "127.0.0.1:0", "--node", NODE,
                                "--dissect-shards", "1"],
                               cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if match := re.search(r"serving on http://[^:]+:(\d+)/api/v1", line):
            return process, int(match.group(1))
    raise SystemExit(f"{repo}: the worker did not start")


def caught_up(port: int, token: str | None) -> None:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    last, stable = -1, 0
    while stable < 6:
        time.sleep(0.1)
        raw = fetch(port, request_bytes("GET", API + "/status", auth, None, port), False)
        body = raw.partition(b"\r\n\r\n")[2]
        count = json.loads(body)["index"]["entries"]
        stable = stable + 1 if count == last else 0
        last = count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, action="append", required=True)
    parser.add_argument("--pcap", type=Path, default=ROOT / "tests/golden/http1/basic.pcap")
    parser.add_argument("--token", default=None)
    parser.add_argument("--show", action="store_true", help="print every response of the first checkout")
    args = parser.parse_args()
    repos = [repo.resolve() for repo in args.repo] + ([ROOT] if len(args.repo) == 1 else [])
    workers = []
    with tempfile.TemporaryDirectory() as scratch:
        try:
            for number, repo in enumerate(repos):
                workers.append(start(repo, args.pcap.resolve(), Path(scratch) / str(number), args.token))
            for _, port in workers:
                caught_up(port, args.token)
            auth = {"Authorization": f"Bearer {args.token}"} if args.token else {}
            first = fetch(workers[0][1], request_bytes("GET", API + "/entries?limit=1", auth, None, workers[0][1]), False)
            entry = json.loads(dechunk(first.partition(b"\r\n\r\n")[2]).splitlines()[0])["id"]
            differ = 0
            for name, method, path, headers, body in REQUESTS:
                path = path.replace("{E}", entry).replace("{E_ENC}", entry.replace(":", "%3A"))
                body = body.replace(b"{E}", entry.encode()) if body else body
                answers = []
                for number, (_, port) in enumerate(workers):
                    raw = request_bytes(method, path, {**auth, **headers}, body, port)
                    answer = fetch(port, raw, name.startswith("stream"))
                    # the store dirs differ in their last character only: the same lengths
                    answers.append(answer.replace(str(Path(scratch) / str(number)).encode(), b"<storage>"))
                if args.show:
                    print(f"== {name}: {method} {path}\n{answers[0][:600]!r}\n")
                if normal(name, answers[0], args.token) != normal(name, answers[1], args.token):
                    differ += 1
                    print(f"DIFFERS {name}: {method} {path}")
                    for repo, answer in zip(repos, answers):
                        print(f"  {repo}: {answer[:1500]!r}")
            print(f"{len(REQUESTS)} requests, {differ} differ")
        finally:
            for process, _ in workers:
                process.terminate()
                process.wait(10)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
