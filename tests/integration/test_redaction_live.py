"""Credentials in live traffic on lo: redacted at the worker in entries, detail, the hub's HAR
and detail; the same credential gives the same keyed hash; --no-redact shows them; the pcap
keeps the raw bytes."""

from __future__ import annotations

import json
import stat
import sys

import httpx
import psycopg
import pymysql
import pytest
import redis

from shark.token import keyed_hash
from support.http_server import SESSION
from support.processes import TEST_TOKEN, Proc, free_port, wait_for

pytestmark = pytest.mark.root
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
ALPHA, BETA = "s3cret-alpha-7f2c", "s3cret-beta-91ad"


def mark(value: str) -> str:
    return f"[redacted:{keyed_hash(TEST_TOKEN, value)}]"


class Hub(Proc):
    def __init__(self, worker_url: str) -> None:
        super().__init__([sys.executable, "-m", "hub", "--worker", worker_url, "--listen", "127.0.0.1:0",
                          "--poll-interval", "0.3", "--timeout", "5"], env={"SHARK_TOKEN": TEST_TOKEN})
        self.url = self.wait_line(r"hub serving on (http://\S+)").group(1) + "/api/v1"

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, headers=AUTH, **kwargs)


def send_secrets(port: int) -> None:
    """One request per kind of secret; the path says which."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        client.get("/bearer1", headers={"Authorization": f"Bearer {ALPHA}"})
        client.get("/bearer2", headers={"Authorization": f"Bearer {ALPHA}"})
        client.get("/bearer3", headers={"Authorization": f"Bearer {BETA}"})
        client.get("/cookie", headers={"Cookie": f"sid={ALPHA}; theme=dark"})
        client.get("/setcookie")
        client.get("/apikey", headers={"X-Api-Key": ALPHA, "X-Custom-Secret": BETA})
        client.get("/query", params={"token": ALPHA, "page": "2", "pin": BETA})
        client.post("/json", json={"user": "bob", "password": ALPHA, "nested": {"Token": BETA}})
        client.post("/form", data={"user": "bob", "password": ALPHA})


def entries_by_path(worker, count: int) -> dict[str, dict]:
    entries = wait_for(lambda: (e := worker.entries(limit=100)) and len(e) >= count and e,
                       what=f"{count} entries")
    return {e["request"]["path"]: e for e in entries}


def test_secrets_are_redacted_everywhere_but_the_pcap(start_worker, http_server):
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", "--redact-header",
                          "X-Custom-Secret", "--redact-field", "pin", token=TEST_TOKEN)
    send_secrets(http_server)
    by_path = entries_by_path(worker, 9)
    listing = worker.get("/entries", params={"limit": 100}).text
    assert ALPHA not in listing and BETA not in listing and SESSION not in listing

    headers = {path: e["request"]["headers"] for path, e in by_path.items()}
    assert headers["/bearer1"]["authorization"] == f"Bearer {mark(ALPHA)}"
    assert headers["/bearer2"]["authorization"] == headers["/bearer1"]["authorization"]
    assert headers["/bearer3"]["authorization"] == f"Bearer {mark(BETA)}"
    assert mark(ALPHA) != mark(BETA)
    assert headers["/cookie"]["cookie"] == f"sid={mark(ALPHA)}; theme={mark('dark')}"
    set_cookie = by_path["/setcookie"]["response"]["headers"]["set-cookie"]
    assert set_cookie == f"sid={mark(SESSION)}; Path=/; HttpOnly"
    assert headers["/apikey"]["x-api-key"] == mark(ALPHA)
    assert headers["/apikey"]["x-custom-secret"] == mark(BETA)       # --redact-header
    query = by_path["/query"]
    assert query["request"]["query"] == {"token": [mark(ALPHA)], "page": ["2"], "pin": [mark(BETA)]}
    assert query["summary"] == f"GET /query?token={mark(ALPHA)}&page=2&pin={mark(BETA)}"

    status = worker.status()["redaction"]
    assert status["enabled"] is True
    assert {"authorization", "cookie", "set-cookie", "x-api-key", "x-custom-secret"} <= set(status["headers"])
    assert {"password", "token", "pin"} <= set(status["fields"])

    # The detail (what the UI shows and builds "Copy as cURL" from): bodies redacted too.
    def detail(path: str) -> dict:
        return worker.get(f"/entries/{by_path[path]['id']}").json()
    posted = detail("/json")
    sent = json.loads(posted["request"]["body"]["data"])
    assert sent == {"user": "bob", "password": mark(ALPHA), "nested": {"Token": mark(BETA)}}
    assert json.loads(posted["response"]["body"]["data"]) == sent     # the server echoes it
    assert posted["request"]["headers"]["content-type"] == "application/json"
    form = detail("/form")
    assert form["request"]["body"]["data"] == f"user=bob&password={mark(ALPHA)}"
    assert detail("/bearer1")["request"]["headers"]["authorization"] == f"Bearer {mark(ALPHA)}"

    # The pcap keeps the raw bytes: it is the evidence for Wireshark.
    raw = worker.get(f"/entries/{by_path['/json']['id']}/pcap").content
    assert ALPHA.encode() in raw

    hub = Hub(worker.url)
    try:
        har = wait_for(lambda: (h := hub.get("/har")).status_code == 200
                       and len(h.json()["log"]["entries"]) >= 9 and h, what="9 HAR entries")
        assert ALPHA not in har.text and BETA not in har.text and SESSION not in har.text
        har_headers = {e["request"]["url"].split("?")[0].rsplit("/", 1)[-1]: e for e in har.json()["log"]["entries"]}
        assert {"name": "authorization", "value": f"Bearer {mark(ALPHA)}"} in \
            har_headers["bearer1"]["request"]["headers"]
        assert {"name": "token", "value": mark(ALPHA)} in har_headers["query"]["request"]["queryString"]
        through_hub = hub.get(f"/entries/{by_path['/json']['id']}").json()
        assert json.loads(through_hub["request"]["body"]["data"])["password"] == mark(ALPHA)
    finally:
        hub.stop()


def test_no_redact_shows_the_credentials(start_worker, http_server, tmp_path):
    store = tmp_path / "store"
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", "--no-redact",
                          storage_dir=store)
    with httpx.Client(base_url=f"http://127.0.0.1:{http_server}", timeout=10) as client:
        client.get("/bearer1", headers={"Authorization": f"Bearer {ALPHA}"})
        client.post("/json", json={"password": ALPHA})
    by_path = entries_by_path(worker, 2)
    assert by_path["/bearer1"]["request"]["headers"]["authorization"] == f"Bearer {ALPHA}"
    body = worker.get(f"/entries/{by_path['/json']['id']}").json()["request"]["body"]["data"]
    assert json.loads(body) == {"password": ALPHA}
    assert worker.status()["redaction"] == {"enabled": False, "headers": [], "fields": []}

    # The raw credentials are in the store: its files are the worker's user's alone.
    files = [p for p in store.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm", ".lock"} <= names
    assert any(name.endswith(".pcap") for name in names)
    assert {str(p): stat.S_IMODE(p.stat().st_mode) for p in files} == {str(p): 0o600 for p in files}
    assert stat.S_IMODE(store.stat().st_mode) == stat.S_IMODE((store / "pcap").stat().st_mode) == 0o700


def test_redis_auth_is_redacted(start_worker, tmp_path):
    port = free_port()
    server = Proc(["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", ALPHA])
    try:
        server.wait_line("Ready to accept connections")
        worker = start_worker("--iface", "lo", "--bpf", f"tcp port {port}", token=TEST_TOKEN)
        client = redis.Redis(host="127.0.0.1", port=port, password=ALPHA, socket_timeout=10)
        client.set("k", "v")                          # connects with HELLO 3 AUTH default PASSWORD
        client.execute_command("AUTH", ALPHA)
        client.close()

        def commands() -> dict[str, dict] | None:
            found = {e["request"]["command"]: e for e in worker.entries(q="redis")}
            return found if {"HELLO", "AUTH", "SET"} <= set(found) else None
        by_command = wait_for(commands, what="HELLO, AUTH and SET entries")
    finally:
        server.stop()
    hello, auth = by_command["HELLO"], by_command["AUTH"]
    assert hello["request"]["arguments"] == ["3", "AUTH", mark("default"), mark(ALPHA)]
    assert auth["request"]["arguments"] == [mark(ALPHA)] and auth["summary"] == f"AUTH {mark(ALPHA)}"
    assert auth["response"]["value"] == "OK"
    assert ALPHA not in worker.get("/entries").text
    assert ALPHA.encode() in worker.get(f"/entries/{auth['id']}/pcap").content


def test_sql_that_sets_a_password_is_redacted(start_worker):
    worker = start_worker("--iface", "lo", "--bpf", "tcp port 5432 or tcp port 3306", token=TEST_TOKEN)
    # Roles that do not exist: the statements fail and change nothing on the shared servers.
    with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres sslmode=disable",
                         autocommit=True) as conn:
        with pytest.raises(psycopg.Error):
            conn.execute(f"ALTER ROLE shark_no_such_role WITH PASSWORD '{ALPHA}'")
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="test")
    try:
        with conn.cursor() as cur, pytest.raises(pymysql.MySQLError):
            cur.execute(f"ALTER USER 'shark_no_such'@'localhost' IDENTIFIED BY '{BETA}'")
    finally:
        conn.close()

    def statements() -> dict[str, dict] | None:
        found = {e["protocol"]: e for e in worker.entries(q='request.query.contains("shark_no_such")')}
        return found if {"postgres", "mysql"} <= set(found) else None
    by_protocol = wait_for(statements, what="the postgres and mysql statements")
    assert by_protocol["postgres"]["request"]["query"] == \
        f"ALTER ROLE shark_no_such_role WITH PASSWORD '{mark(ALPHA)}'"
    assert by_protocol["postgres"]["response"]["error"]["code"] == "42704"      # undefined_object
    assert by_protocol["mysql"]["summary"] == f"ALTER USER 'shark_no_such'@'localhost' IDENTIFIED BY '{mark(BETA)}'"
    listing = worker.get("/entries").text
    assert ALPHA not in listing and BETA not in listing
