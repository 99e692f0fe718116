"""Scripts against real traffic through `kubectl shark tap --local`: tag 5xx responses (seen in
KFL, list and detail), post a webhook to a local receiver, take a pcap snapshot, a scheduled job,
onItemQueried, a syntax error, an infinite loop, a memory bomb and a helper called wrongly -
while the good script and the hub keep going - and everything still there after a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.processes import Proc, free_port, wait_for
from unit.test_scripts_api import Receiver

pytestmark = pytest.mark.root


def shark(*args: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shark.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SHARK_TOKEN": token})


class Tap:
    def __init__(self, state: Path, env: dict[str, str], app_port: int) -> None:
        port = free_port()
        self.proc = Proc([sys.executable, "-m", "shark.cli", "tap", "--local", "--no-open", "-i", "lo",
                          "--bpf", f"tcp port {app_port}", "--proxy-port", str(port), "--state-dir", str(state)],
                         env=env)
        self.proc.wait_line(rf"UI and API at http://127\.0\.0\.1:{port}")
        self.url = f"http://127.0.0.1:{port}"
        self.api = self.url + "/api/v1"
        self.token = (state / "token").read_text().strip()       # --state-dir: the CLI is handed it
        self.auth = {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.api + path, params=params, timeout=30, headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()

    def texts(self, script: str) -> list[str]:
        return [line["text"] for line in self.get("/scripts/logs", script=script, limit=2000)["lines"]]

    def wait_log(self, script: str, needle: str, timeout: float = 30.0) -> str:
        return wait_for(lambda: next((t for t in self.texts(script) if needle in t), None), timeout,
                        f"{needle!r} in the log of {script}")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return shark(*args, "--hub", self.url, token=self.token)

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def scripts_for(port: int) -> dict[str, str]:
    mine = f"entry.protocol === 'http' && entry.dst.port === {port}"
    return {
        "tag-5xx.js": f"""
            var snapshot = null;
            function onItemCaptured(entry) {{
                if (!({mine})) return;
                if (entry.request.path === "/warmup") {{ console.log("warm"); return; }}
                if (kfl.match("status >= 500", entry)) {{
                    test.fail(entry);
                    vendor.webhook("POST", env.HOOK, {{id: entry.id, status: entry.status, path: entry.request.path}});
                    if (snapshot === null) snapshot = pcap.snapshot("http and status >= 500");
                }} else {{
                    test.pass(entry);
                }}
            }}""",
        "wrong-args.js": f"function onItemCaptured(entry) {{ if ({mine} && entry.status >= 500) test.fail(); }}",
        "runaway.js": f"function onItemCaptured(entry) {{ if ({mine} && entry.status >= 500) {{ while (true) {{}} }} }}",
        "bomb.js": f"""
            var hoard = [];
            function onItemCaptured(entry) {{
                if ({mine} && entry.status >= 500) {{
                    while (true) hoard.push(new Array(10000).join("x") + hoard.length);
                }}
            }}""",
        "beat.js": 'jobs.schedule("beat", "* * * * * *", function () { console.log("beat"); });',
        "mark-5xx.js": "function onItemQueried(entry) { if (entry.status >= 500) entry.summary = '[5xx] ' + entry.summary; }",
    }


class StreamReader:
    """(event, data) of the hub's /stream, read in a thread."""

    def __init__(self, url: str, q: str, headers: dict[str, str]) -> None:
        self.events: list[tuple[str, Any]] = []
        self.client = httpx.Client(timeout=httpx.Timeout(None, connect=10), headers=headers)
        self.response = self.client.send(self.client.build_request("GET", url, params={"q": q}), stream=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event = ""
        try:
            for line in self.response.iter_lines():
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    self.events.append((event, json.loads(line.partition(":")[2])))
        except httpx.HTTPError:
            pass

    def close(self) -> None:
        self.response.close()
        self.client.close()


def test_scripts_on_live_traffic_and_after_a_restart(http_server: int, receiver: Receiver, tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {"SHARK_SCRIPT_ALLOW_HOSTS": "127.0.0.1", "SHARK_SCRIPT_ENV": f"HOOK={receiver.url}/hook",
           "SHARK_SCRIPT_TIME_LIMIT": "0.3", "SHARK_SCRIPT_MEMORY_LIMIT": "16MiB", "SHARK_SCRIPT_MAX_FAILURES": "3"}
    tap = Tap(state, env, http_server)
    try:
        for name, code in scripts_for(http_server).items():
            (tmp_path / name).write_text(code)
            added = tap.cli("scripts", "add", str(tmp_path / name))
            assert added.returncode == 0, added.stderr
        broken = tmp_path / "broken.js"
        broken.write_text("function onItemCaptured(entry) {\n  if (entry.status >= 500 {\n  }\n}\n")
        refused = tap.cli("scripts", "add", str(broken))
        assert refused.returncode == 1 and f"{broken}:2:27: SyntaxError" in refused.stderr, refused.stderr

        base = f"http://127.0.0.1:{http_server}"

        def warm() -> bool:
            httpx.get(f"{base}/warmup", timeout=10)
            try:
                tap.wait_log("tag-5xx", "warm", timeout=1)
            except AssertionError:
                return False
            return True
        wait_for(warm, timeout=30, what="the scripts to see new traffic")

        live = StreamReader(f"{tap.api}/stream", f"dst.port == {http_server}", tap.auth)
        wait_for(lambda: any(kind == "status" for kind, _ in live.events), what="the live stream open")
        for path in ("/json", "/status/500", "/json", "/status/503", "/status/500", "/status/502"):
            httpx.get(base + path, timeout=10)

        # the webhook: one POST per 5xx, from the good script
        wait_for(lambda: len([r for r in receiver.requests if r["path"] == "/hook"]) == 4, what="4 webhooks")
        hooks = [json.loads(r["body"]) for r in receiver.requests]
        assert sorted(h["status"] for h in hooks) == [500, 500, 502, 503]

        # the tags, at the worker, through the hub: list, KFL, detail
        mine = f"dst.port == {http_server} and request.path != \"/warmup\""
        failed = wait_for(lambda: (e := tap.get("/entries", q=f'{mine} and "test.fail" in tags')["entries"])
                          and len(e) == 4 and e, what="4 entries tagged test.fail")
        assert sorted(e["id"] for e in failed) == sorted(h["id"] for h in hooks)
        # live clients saw each entry first untagged, then were told of its tags
        streamed = {data["id"]: data["tags"] for kind, data in live.events if kind == "entry"}
        assert all(streamed.get(e["id"]) == [] for e in failed), streamed
        retagged = wait_for(lambda: {d["id"]: d["tags"] for k, d in live.events if k == "tags"
                                     and d["id"] in streamed} or None, what="tags events")
        wait_for(lambda: all(e["id"] in retagged for e in failed), what="a tags event for each 5xx")
        retagged = {d["id"]: d["tags"] for k, d in live.events if k == "tags"}
        assert all(retagged[e["id"]] == ["test.fail"] for e in failed)
        live.close()
        passed = wait_for(lambda: len(e := tap.get("/entries", q=f'{mine} and tags.contains("test.pass")')["entries"]) == 2
                          and e, what="2 entries tagged test.pass")
        assert {e["status"] for e in passed} == {200}
        detail = tap.get(f"/entries/{failed[0]['id']}")
        assert detail["tags"] == ["test.fail"] and "body" in detail["response"]
        # onItemQueried changed what /entries answers (not what is stored)
        assert all(e["summary"].startswith("[5xx] ") for e in failed)
        stored = httpx.get(f"{tap.api}/entries/{failed[0]['id']}", timeout=30, headers=tap.auth).json()
        assert not stored["summary"].startswith("[5xx]")

        # the pcap snapshot: listed, downloadable, readable by tshark
        snapshot = wait_for(lambda: tap.get("/scripts/snapshots")["snapshots"], what="a snapshot")[0]
        pcap = httpx.get(f"{tap.api}/scripts/snapshots/{snapshot['name']}", timeout=30, headers=tap.auth)
        assert pcap.status_code == 200 and len(pcap.content) == snapshot["bytes"] > 24
        (tmp_path / "snap.pcap").write_bytes(pcap.content)
        codes = subprocess.run(["tshark", "-r", str(tmp_path / "snap.pcap"), "-Y", "http.response",
                                "-T", "fields", "-e", "http.response.code"], capture_output=True, text=True,
                               check=True).stdout.split()
        assert codes and all(int(code) >= 500 for code in codes)

        # the broken ones: stopped, reported, disabled with the reason; the others unaffected
        tap.wait_log("wrong-args", "test.fail: expected one argument (the entry), got 0")
        tap.wait_log("runaway", "stopped: ran longer than its time limit (0.3s of CPU)")
        tap.wait_log("bomb", "stopped: needed more than its memory limit (16 MiB); its context was created anew")
        for name in ("wrong-args", "runaway", "bomb"):
            view = wait_for(lambda n=name: (v := tap.get(f"/scripts/{n}"))["state"] == "disabled" and v,
                            what=f"{name} disabled")
            assert view["disabled_reason"].startswith("failed 3 times within 60s"), view
        assert tap.get("/scripts/bomb")["restarts"] >= 1
        good = tap.get("/scripts/tag-5xx")
        assert good["state"] == "running" and good["failures"] == 0 and good["calls"] >= 7
        listing = tap.cli("scripts", "list").stdout
        assert "failed 3 times within 60s" in listing

        # the job ran on its schedule, and the console shows it
        tap.wait_log("beat", "beat")
        logs = tap.cli("scripts", "logs", "--script", "beat").stdout
        assert "[beat] beat" in logs

        # after all that the hub still answers, and the good script still tags
        httpx.get(f"{base}/status/504", timeout=10)
        wait_for(lambda: len(tap.get("/entries", q=f'{mine} and "test.fail" in tags')["entries"]) == 5,
                 what="the fifth 5xx tagged")
        assert tap.get("/status")["hub"]["workers_ok"] == 1
    finally:
        tap.stop()

    # a restart keeps the scripts (disabled ones with their reason) and the snapshots
    tap = Tap(state, env, http_server)
    try:
        scripts = {s["name"]: s for s in tap.get("/scripts")["scripts"]}
        assert set(scripts) == {"tag-5xx", "wrong-args", "runaway", "bomb", "beat", "mark-5xx"}
        assert scripts["tag-5xx"]["state"] == "running" and scripts["beat"]["state"] == "running"
        assert scripts["runaway"]["state"] == "disabled"
        assert scripts["runaway"]["disabled_reason"].startswith("failed 3 times within 60s")
        assert tap.get("/scripts/snapshots")["snapshots"][0]["name"] == snapshot["name"]
        assert (state / "hub" / "scripts" / "tag-5xx.json").is_file()
    finally:
        tap.stop()
    assert not os.path.exists(state / "hub" / "scripts" / ".tag-5xx.json.tmp")
