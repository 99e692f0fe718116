"""Who may read and change the captured traffic, on real processes and real sockets: a worker
(replaying a capture, so no root is needed) and a hub over it, both with the installation's
token, and both without one (loopback only).

docs/API.md, "Access", is the contract: 401 without the token, /healthz without it, Host and
Origin checks, JSON-only changes, the browser's one-time /?token= login.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from support.processes import Proc, free_port, wait_for

PCAP = Path(__file__).resolve().parents[1] / "golden" / "http1" / "basic.pcap"
TOKEN = "test-token-6f1c2b0a9d8e7f6a5b4c3d2e1f0a9b8c"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def worker(tmp_path: Path, listen: str, token: str | None = TOKEN) -> Proc:
    return Proc([sys.executable, "-m", "worker", "--pcap", str(PCAP), "--storage-dir", str(tmp_path / "store"),
                 "--listen", listen, "--node", "node-a"], env={"SHARK_TOKEN": token or ""})


def hub(worker_url: str, listen: str, token: str | None = TOKEN, *extra: str) -> Proc:
    return Proc([sys.executable, "-m", "hub", "--worker", worker_url, "--listen", listen, "--poll-interval", "0.5",
                 *extra], env={"SHARK_TOKEN": token or ""})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A worker on every address (with the token: the one case it may) and a hub over it."""
    tmp = tmp_path_factory.mktemp("access")
    w = worker(tmp, "0.0.0.0:0")
    port = w.wait_line(r"serving on http://0\.0\.0\.0:(\d+)").group(1)
    worker_url = f"http://127.0.0.1:{port}"
    h = hub(worker_url, f"127.0.0.1:{free_port()}", TOKEN, "--allowed-host", "shark.example.com")
    hub_url = h.wait_line(r"hub serving on (http://\S+)").group(1)
    wait_for(lambda: httpx.get(f"{hub_url}/api/v1/entries", headers=BEARER).json()["entries"], 30,
             "the replayed entries at the hub")
    yield worker_url, hub_url
    h.stop()
    w.stop()


# ---- start-up ------------------------------------------------------------------------------------

@pytest.mark.parametrize("program", ["worker", "hub"])
def test_without_a_token_only_loopback_is_served(program, tmp_path):
    proc = (worker(tmp_path, "0.0.0.0:0", None) if program == "worker"
            else hub("http://127.0.0.1:1", "0.0.0.0:0", None))
    assert proc.process.wait(30) == 1
    proc._reader.join(5)
    assert proc.lines == [f"{program}: --listen: 0.0.0.0:0 is not a loopback address and no token is set; set "
                          "SHARK_TOKEN (`kubectl shark token` prints the installation's) or listen on 127.0.0.1"]
    assert not (tmp_path / "store").exists()          # refused before anything was written


# ---- the worker ----------------------------------------------------------------------------------

def test_worker_asks_for_the_token_on_every_route_but_healthz(stack):
    worker_url, _ = stack
    api = f"{worker_url}/api/v1"
    for path in ("/status", "/entries", "/pcap", "/targets", "/config", "/query/validate?q=http", "/entries/node-a:1",
                 "/stream"):
        refused = httpx.get(api + path)
        assert refused.status_code == 401, path
        assert refused.json() == {"error": "unauthorized", "detail": "no token: send Authorization: Bearer TOKEN "
                                                                     "(`kubectl shark token` prints it)"}
        assert refused.headers["www-authenticate"] == 'Bearer realm="kubectl-shark"'
    wrong = httpx.get(f"{api}/status", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"].startswith("the token is not this worker's")
    assert httpx.get(f"{api}/status", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert httpx.get(f"{api}/status", headers=BEARER).json()["node"] == "node-a"
    assert httpx.get(f"{api}/entries", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    health = httpx.get(f"{worker_url}/healthz")
    assert (health.status_code, health.text) == (200, "ok\n")
    # nothing changes without the token: not the storage limit, not capture, not tags
    for method, path, body in (("PUT", "/config", {"storage_limit": "100000TB"}), ("PUT", "/targets", {"ips": [],
                               "idle": True}), ("POST", "/tags", {"changes": [{"id": "node-a:1", "add": ["x"]}]})):
        assert httpx.request(method, api + path, json=body).status_code == 401, path
    assert httpx.get(f"{api}/targets", headers=BEARER).json()["idle"] is False


def test_worker_changes_take_json_from_no_other_site(stack):
    worker_url, _ = stack
    config = f"{worker_url}/api/v1/config"
    plain = httpx.put(config, content=b'{"storage_limit": "300MB"}', headers={**BEARER, "Content-Type": "text/plain"})
    assert plain.status_code == 415
    assert plain.json()["detail"] == "Content-Type: 'text/plain'; changes take application/json"
    missing = httpx.put(config, content=b'{"storage_limit": "300MB"}', headers=BEARER)
    assert missing.status_code == 415 and missing.json()["detail"].startswith("Content-Type: missing")
    foreign = httpx.put(config, json={"storage_limit": "300MB"}, headers={**BEARER, "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert httpx.get(config, headers=BEARER).json()["storage_limit"] == 200_000_000     # unchanged
    assert httpx.put(config, json={"storage_limit": "300MB"}, headers=BEARER).status_code == 200
    assert httpx.put(config, json={"storage_limit": "200MB"}, headers=BEARER).status_code == 200


def test_a_worker_without_a_token_answers_loopback_names_only(tmp_path):
    w = worker(tmp_path, "127.0.0.1:0", None)
    try:
        url = w.wait_line(r"serving on (http://\S+/api/v1) .*no token: loopback only").group(1)
        assert httpx.get(f"{url}/status").json()["node"] == "node-a"        # as before: open on loopback
        rebound = httpx.get(f"{url}/status", headers={"Host": "attacker.example:8897"})
        assert rebound.status_code == 403
        assert rebound.json()["detail"] == ("Host: 'attacker.example:8897' is not a name this worker answers to "
                                            "(127.0.0.1, ::1, localhost); a worker without a token answers on "
                                            "loopback only")
        assert httpx.get(f"{url}/status", headers={"Host": "localhost"}).status_code == 200
        form = httpx.post(f"{url}/tags", content=b"changes=x",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415
    finally:
        w.stop()


# ---- the hub -------------------------------------------------------------------------------------

def test_hub_asks_for_the_token_and_sends_it_to_the_worker(stack):
    _, hub_url = stack
    api = f"{hub_url}/api/v1"
    for path in ("/entries", "/status", "/workers", "/pcap", "/har", "/servicemap", "/targets", "/scripts",
                 "/scripts/logs", "/stream", "/query/validate?q=http"):
        assert httpx.get(api + path).status_code == 401, path
    for path in ("/metrics", "/schema/openapi.json"):
        assert httpx.get(hub_url + path).status_code == 401, path
    refused = httpx.get(f"{api}/entries").json()
    assert refused == {"error": "unauthorized", "detail": "no token: send Authorization: Bearer TOKEN (`kubectl "
                       "shark token` prints it); a browser opens /?token=TOKEN once"}
    workers = httpx.get(f"{api}/workers", headers=BEARER).json()
    assert [(w["node"], w["ok"]) for w in workers] == [("node-a", True)]        # the hub's token got it in
    assert httpx.get(f"{hub_url}/healthz").text == "ok\n"
    # the UI's files hold no data: served without the token, so the page can ask for it
    page = httpx.get(f"{hub_url}/")
    assert page.status_code == 200 and "kubectl-shark" in page.text
    assert httpx.get(f"{hub_url}/js/api.js").status_code == 200
    assert httpx.get(f"{hub_url}/nonexistent.js").status_code == 401


def test_hub_serves_its_own_host_names_only(stack):
    _, hub_url = stack
    port = hub_url.rsplit(":", 1)[1]
    status = f"{hub_url}/api/v1/status"
    for host in (f"attacker.example:{port}", "127.0.0.1.nip.io", f"localhost.attacker.example:{port}"):
        refused = httpx.get(status, headers={**BEARER, "Host": host})
        assert refused.status_code == 403, host
        assert refused.json()["detail"] == (f"Host: {host!r} is not a name this hub answers to (127.0.0.1, ::1, "
                                            "localhost, shark.example.com); start the hub with --allowed-host "
                                            "NAME to serve another")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"shark.example.com:{port}", "SHARK.example.com."):
        assert httpx.get(status, headers={**BEARER, "Host": host}).status_code == 200, host
    assert httpx.get(f"{hub_url}/healthz", headers={"Host": "10.0.0.7:8899"}).status_code == 200   # probes


def test_hub_changes_take_json_only_and_from_its_own_origin(stack):
    _, hub_url = stack
    api = f"{hub_url}/api/v1"
    script = json.dumps({"name": "sneaky", "code": "function onItemCaptured(e) {}"}).encode()
    # what a cross-site form can send: text/plain or a form encoding, with the session cookie
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        sent = httpx.post(f"{api}/scripts", content=script, headers={**BEARER, "Content-Type": content_type})
        assert sent.status_code == 415, content_type
        assert sent.json()["error"] == "unsupported media type"
    foreign = httpx.post(f"{api}/scripts", content=script, headers={**BEARER, "Content-Type": "application/json",
                                                                    "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert foreign.json()["detail"] == ("Origin: 'http://evil.example' is not this hub's own; WebSockets and "
                                        "changes from other sites are refused")
    assert httpx.request("DELETE", f"{api}/scripts/x", headers={**BEARER, "Origin": "null"}).status_code == 403
    assert httpx.get(f"{api}/scripts", headers=BEARER).json()["scripts"] == []         # nothing was installed
    own = httpx.post(f"{api}/scripts", content=script, headers={**BEARER, "Content-Type": "application/json",
                                                                "Origin": hub_url})
    assert own.status_code == 201
    assert httpx.post(f"{api}/scripts/sneaky/jobs/none/run", headers=BEARER).status_code == 404   # no body: no type
    assert httpx.delete(f"{api}/scripts/sneaky", headers=BEARER).status_code == 204
    # a GET from another origin is left to CORS (no Access-Control-Allow-Origin is ever sent)
    read = httpx.get(f"{api}/status", headers={**BEARER, "Origin": "http://evil.example"})
    assert read.status_code == 200 and "access-control-allow-origin" not in read.headers


def test_browser_login_trades_the_token_for_a_cookie_and_drops_it_from_the_address(stack):
    _, hub_url = stack
    port = hub_url.rsplit(":", 1)[1]
    login = httpx.get(f"{hub_url}/?q=http&token={TOKEN}&view=map")
    assert login.status_code == 303
    assert login.headers["location"] == "./?q=http&view=map"
    assert TOKEN not in login.headers["location"]
    cookie = login.headers["set-cookie"]
    name, _, value = cookie.partition(";")[0].partition("=")
    assert name == f"shark_session_{port}" and value and TOKEN not in cookie
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
    assert login.headers["referrer-policy"] == "no-referrer" and login.headers["cache-control"] == "no-store"
    with httpx.Client(follow_redirects=True) as browser:
        page = browser.get(f"{hub_url}/?token={TOKEN}")
        assert str(page.url) == f"{hub_url}/" and page.status_code == 200
        assert browser.get(f"{hub_url}/api/v1/status").status_code == 200        # the cookie alone
        with browser.stream("GET", f"{hub_url}/api/v1/stream") as events:       # SSE with the cookie
            assert events.status_code == 200
            lines = events.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: status"
    wrong = httpx.get(f"{hub_url}/?token=not-it")
    assert wrong.status_code == 401 and "the token in the address is not this hub's" in wrong.text
    forged = httpx.get(f"{hub_url}/api/v1/status", cookies={f"shark_session_{port}": TOKEN})
    assert forged.status_code == 401            # the cookie holds a value derived from the token, not the token


def _ws(url: str, **headers: str) -> tuple[int | None, str]:
    """Open a WebSocket and send an empty query; (HTTP status of a refusal or None, first message)."""
    async def go() -> tuple[int | None, str]:
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:
                await ws.send("")
                return None, await asyncio.wait_for(ws.recv(), 10)
        except websockets.InvalidStatus as refused:
            return refused.response.status_code, refused.response.body.decode(errors="replace")
    return asyncio.run(go())


def test_websockets_need_the_token_and_the_hubs_own_origin(stack):
    _, hub_url = stack
    ws_url = hub_url.replace("http://", "ws://") + "/api/v1/ws"
    status, body = _ws(ws_url, Origin="http://evil.example", **BEARER)
    assert status == 403 and "is not this hub's own" in body
    status, body = _ws(ws_url)
    assert status == 401
    status, first = _ws(ws_url, Origin=hub_url, **BEARER)
    assert status is None and json.loads(first)["type"] == "status"
    cookie = httpx.get(f"{hub_url}/?token={TOKEN}").headers["set-cookie"].partition(";")[0]
    status, first = _ws(ws_url, Origin=hub_url, Cookie=cookie)
    assert status is None and json.loads(first)["type"] == "status"
    # a page whose name was rebound to 127.0.0.1: its Host is its own name (the handshake by hand,
    # as a browser would send it)
    port = int(hub_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"GET /api/v1/ws HTTP/1.1\r\nHost: rebound.example:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    f"Sec-WebSocket-Version: 13\r\nOrigin: http://rebound.example:{port}\r\n"
                    f"Cookie: {cookie}\r\n\r\n".encode())
        assert raw.recv(4096).split(b"\r\n", 1)[0] == b"HTTP/1.1 403 Forbidden"


def test_a_hub_without_a_token_keeps_the_host_and_origin_checks(stack, tmp_path):
    worker_url, _ = stack
    h = hub(worker_url, f"127.0.0.1:{free_port()}", None)     # the hub cannot reach the worker: no matter
    try:
        url = h.wait_line(r"hub serving on (http://\S+) .*no token: loopback only").group(1)
        assert httpx.get(f"{url}/api/v1/status").status_code == 200
        assert httpx.get(f"{url}/api/v1/status", headers={"Host": "rebound.example"}).status_code == 403
        status, _ = _ws(url.replace("http://", "ws://") + "/api/v1/ws", Origin="http://evil.example")
        assert status == 403
        login = httpx.get(f"{url}/?token=anything")
        assert login.status_code == 303 and "set-cookie" not in login.headers
    finally:
        h.stop()
